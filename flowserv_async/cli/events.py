"""``events``: print the run event stream (one line, or one JSON document, per event)."""

from __future__ import annotations

import json

import click
from rich.text import Text

from flowserv_async.cli._context import CLIContext, find_group, find_workflow, json_option
from flowserv_async.cli._progress import catching_signals
from flowserv_async.cli.render import Output, state_text
from flowserv_async.events import Event, EventType
from flowserv_async.local import LocalAPIFactory


def _describe(event: Event) -> Text:
    text = Text.assemble((f"{event.id:>6} ", "dim"), (f"{event.type:<17} ", "bold"))
    text.append(event.run_id or event.workflow_id)
    data = event.data
    if event.type in (EventType.RUN_STATE, EventType.POSTPROC_FINISHED):
        text.append(" ")
        text.append_text(state_text(data["state"]))
        for message in data["messages"]:
            text.append(f"  {message}", style="red")
    elif event.type == EventType.RUN_LOG:
        text.append(f"  {len(data['lines'])} log lines")
    elif event.type == EventType.RANKING_CHANGED:
        text.append(f"  {data['reason']} run {data['runId']}")
    return text


async def _print_events(
    factory: LocalAPIFactory,
    out: Output,
    workflow: str | None,
    group: str | None,
    run_id: str | None,
    after: int | None,
) -> int:
    async with catching_signals() as interrupt, factory:
        with interrupt.guard():
            async with factory() as api:
                workflow_id = (await find_workflow(api, workflow))["id"] if workflow else None
                group_id = (await find_group(api, group, workflow_id))["id"] if group else None
            stream = factory.events(
                workflow_id=workflow_id, group_id=group_id, run_id=run_id, after=after
            )
            async with stream:
                async for event in stream:
                    if out.json_output:
                        click.echo(json.dumps(event.to_dict()))
                    else:
                        out.line(_describe(event))
    return interrupt.exit_code if interrupt.event.is_set() else 0


@click.command("events")
@click.option("--workflow", help="Only this workflow's events (identifier or name).")
@click.option("--group", help="Only this group's events (identifier or name).")
@click.option("--run", "run_id", help="Only this run's events.")
@click.option(
    "--after",
    type=click.IntRange(min=0),
    help="Start after this event id (0: every stored event) instead of now.",
)
@json_option
@click.pass_obj
def events(
    obj: CLIContext, workflow: str | None, group: str | None, run_id: str | None, after: int | None
) -> int:
    """Print run events as they happen, until interrupted (Ctrl-C).

    With --json each event is one JSON document per line (see the events module for
    the shape).
    """
    code: int = obj.run(
        _print_events, obj.factory(), Output(obj.json_output), workflow, group, run_id, after
    )
    return code
