"""``runs``: list, show, cancel, delete runs, read their logs, download their results."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click
from rich.text import Text

from flowserv_async.cli._context import CLIContext, CLIError, find_group, json_option
from flowserv_async.cli._progress import (
    LogPrinter,
    catching_signals,
    download_archive,
    download_files,
    drain_log,
    follow,
    print_files,
    print_messages,
)
from flowserv_async.cli.render import Output, state_text, timestamp
from flowserv_async.cli.run import RESULTS_FOLDER
from flowserv_async.local import LocalAPIFactory
from flowserv_async.states import FINAL_STATES, RunState

STATES = [str(s) for s in RunState]


def show_run(out: Output, run: dict[str, Any]) -> None:
    """Print a run handle: fields, arguments, messages and result files."""
    out.fields(
        [
            ("id", run["id"]),
            ("state", state_text(run["state"])),
            ("workflow", run["workflowId"]),
            ("group", run.get("groupId")),
            ("created", run["createdAt"]),
            ("started", run.get("startedAt")),
            ("finished", run.get("finishedAt")),
        ]
    )
    out.table(
        ["name", "value"], [(a["name"], a["value"]) for a in run["arguments"]], title="arguments"
    )
    if run.get("messages"):
        out.line(("messages", "bold"))
        print_messages(out, run)
    if run.get("files"):
        out.table(
            ["file id", "name", "title"],
            [(f["id"], f["name"], f.get("title")) for f in run["files"]],
            title="result files",
        )


@click.group()
def runs() -> None:
    """Inspect, cancel and download runs."""


@runs.command("list")
@click.option("--group", help="Only the runs of this group (identifier or name).")
@click.option(
    "--state",
    "states",
    multiple=True,
    type=click.Choice(STATES, case_sensitive=False),
    help="Only runs in this state. Repeatable.",
)
@json_option
@click.pass_obj
def list_runs(obj: CLIContext, group: str | None, states: tuple[str, ...]) -> None:
    """List the runs of your groups."""
    wanted = [s.upper() for s in states] or None

    async def listing() -> dict[str, Any]:
        async with obj.factory()() as api:
            if group is not None:
                groups = [await find_group(api, group)]
            else:
                groups = (await api.groups().list_groups())["groups"]
            found: list[dict[str, Any]] = []
            for item in groups:
                listed = await api.runs().list_runs(item["id"], state=wanted)
                found.extend(
                    {**r, "groupId": item["id"], "groupName": item["name"]} for r in listed["runs"]
                )
            return {"runs": found}

    doc = obj.run(listing)
    out = Output(obj.json_output)
    if out.json_output:
        out.json(doc)
    else:
        out.table(
            ["id", "state", "group", "created"],
            [
                (r["id"], state_text(r["state"]), r["groupName"], timestamp(r["createdAt"]))
                for r in doc["runs"]
            ],
        )


@runs.command("show")
@click.argument("run_id")
@json_option
@click.pass_obj
def show(obj: CLIContext, run_id: str) -> None:
    """Show a run with its arguments, messages and result files."""

    async def get() -> dict[str, Any]:
        async with obj.factory()() as api:
            return await api.runs().get_run(run_id)

    doc = obj.run(get)
    out = Output(obj.json_output)
    if out.json_output:
        out.json(doc)
    else:
        show_run(out, doc)


@runs.command("cancel")
@click.argument("run_id")
@click.option("--reason", help="Message recorded with the run.")
@json_option
@click.pass_obj
def cancel(obj: CLIContext, run_id: str, reason: str | None) -> None:
    """Cancel an active run.

    A run that another 'flowserv-async run' process executes is recorded CANCELED
    here; that process then stops its steps.
    """

    async def stop() -> dict[str, Any]:
        async with obj.factory()() as api:
            return await api.runs().cancel_run(run_id, reason=reason)

    doc = obj.run(stop)
    out = Output(obj.json_output)
    if out.json_output:
        out.json(doc)
    else:
        out.line(f"run {run_id}: ", state_text(doc["state"]))


@runs.command("delete")
@click.argument("run_id")
@click.pass_obj
def delete(obj: CLIContext, run_id: str) -> None:
    """Delete a run that is not active, with its files."""

    async def remove() -> None:
        async with obj.factory()() as api:
            await api.runs().delete_run(run_id)

    obj.run(remove)
    Output().line(f"deleted run {run_id}")


async def _logs(factory: LocalAPIFactory, run_id: str, follow_run: bool, out: Output) -> int:
    lines: list[dict[str, Any]] = []
    collect = _Collector(out, lines) if out.json_output else LogPrinter(out)
    async with catching_signals() as interrupt, factory:
        async with factory() as api:
            state = (await api.runs().get_run(run_id))["state"]
        offset = await drain_log(factory, run_id, collect, 0)
        if follow_run and state not in FINAL_STATES:
            quiet = Output(json_output=True) if out.json_output else out
            followed = await follow(
                factory, run_id, quiet, collect, offset=offset, interrupt=interrupt, cancel=False
            )
            state = followed.state
            offset = await drain_log(factory, run_id, collect, followed.offset)
        if out.json_output:
            out.json({"runId": run_id, "state": state, "lines": lines, "next": offset})
        return interrupt.exit_code if interrupt.event.is_set() else 0


class _Collector(LogPrinter):
    """Collects followed log lines for the JSON document."""

    def __init__(self, out: Output, lines: list[dict[str, Any]]) -> None:
        super().__init__(out)
        self.lines = lines

    def print(self, lines: list[dict[str, Any]]) -> None:
        self.lines.extend(lines)


@runs.command("logs")
@click.argument("run_id")
@click.option("--follow", "follow_run", is_flag=True, help="Keep printing until the run ends.")
@json_option
@click.pass_obj
def logs(obj: CLIContext, run_id: str, follow_run: bool) -> int:
    """Print the log lines (stdout, stderr) of a run's steps."""
    code: int = obj.run(_logs, obj.factory(), run_id, follow_run, Output(obj.json_output))
    return code


async def _wait(
    factory: LocalAPIFactory, run_id: str, limit: float | None
) -> tuple[dict[str, Any] | None, int]:
    """The final run handle, or None and the exit status when a signal came first."""
    doc = None
    async with catching_signals() as interrupt, factory:
        with interrupt.guard():
            async with factory() as api:
                await api.runs().get_run(run_id)  # the caller may see it
            try:
                doc = await factory.wait_run(run_id, timeout=limit)
            except TimeoutError:
                raise CLIError(f"run {run_id} did not end within {limit:g} s") from None
    return doc, 0 if doc is not None else interrupt.exit_code


@runs.command("wait")
@click.argument("run_id")
@click.option(
    "--timeout",
    type=click.FloatRange(min=0, min_open=True),
    help="Give up after this many seconds (exit status 1; the run goes on).",
)
@json_option
@click.pass_obj
def wait(obj: CLIContext, run_id: str, timeout: float | None) -> int:
    """Wait until a run ends (told by its events, not by polling) and show it.

    The exit status is 0 for SUCCESS and 1 for ERROR or CANCELED.
    """
    doc, code = obj.run(_wait, obj.factory(), run_id, timeout)
    if doc is None:
        return code
    out = Output(obj.json_output)
    if out.json_output:
        out.json(doc)
    else:
        show_run(out, doc)
    return 0 if doc["state"] == RunState.SUCCESS else 1


@runs.command("download")
@click.argument("run_id")
@click.option(
    "--output",
    type=click.Path(file_okay=False, path_type=Path),
    help=f"Target folder [default: ./{RESULTS_FOLDER}/<run id>].",
)
@click.option("--archive", is_flag=True, help="Write one run.<id>.tar.gz instead of the files.")
@json_option
@click.pass_obj
def download(obj: CLIContext, run_id: str, output: Path | None, archive: bool) -> None:
    """Write the result files of a successful run to a local folder."""
    folder = (output if output is not None else Path(RESULTS_FOLDER, run_id)).absolute()

    async def fetch() -> dict[str, Any]:
        async with obj.factory() as factory:
            async with factory() as api:
                run = await api.runs().get_run(run_id)
            if run["state"] != RunState.SUCCESS:
                raise CLIError(f"run {run_id} is {run['state']}: only successful runs have results")
            if archive:
                path = await download_archive(factory, run_id, folder)
                return {"runId": run_id, "archive": str(path)}
            files = await download_files(factory, run, folder)
            return {"runId": run_id, "outputDir": str(folder), "files": files}

    doc = obj.run(fetch)
    out = Output(obj.json_output)
    if out.json_output:
        out.json(doc)
    elif archive:
        out.line("wrote ", Text(doc["archive"], style="green"))
    else:
        print_files(out, doc["files"])
