"""``workflows``: install, list, show, delete workflows and show their leaderboards."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click
from rich.text import Text

from flowserv_async.cli._context import CLIContext, find_workflow, json_option
from flowserv_async.cli.render import Output, state_text


def parse_order(ctx: click.Context, param: click.Parameter, value: str | None) -> Any:
    """Parse ``col:asc,col2:desc`` into ``[{name, sortDesc}]`` (default direction: desc)."""
    if value is None:
        return None
    order: list[dict[str, Any]] = []
    for item in value.split(","):
        name, _, direction = item.strip().partition(":")
        direction = direction.strip().lower() or "desc"
        if not name.strip() or direction not in {"asc", "desc"}:
            raise click.BadParameter(
                f"malformed sort column {item.strip()!r}: expected name[:asc|:desc]"
            )
        order.append({"name": name.strip(), "sortDesc": direction == "desc"})
    return order


def parameter_rows(parameters: list[dict[str, Any]]) -> list[tuple[Any, ...]]:
    """Rows ``name, type, required, default, label`` of parameter declarations."""
    ordered = sorted(parameters, key=lambda p: (p.get("index", 0), p["name"]))
    return [
        (p["name"], p["dtype"], p.get("isRequired", False), p.get("defaultValue"), p.get("label"))
        for p in ordered
    ]


def show_workflow(out: Output, wf: dict[str, Any]) -> None:
    """Print a workflow handle: fields, parameters, groups and post-processing."""
    postproc = wf.get("postproc")
    out.fields(
        [
            ("id", wf["id"]),
            ("name", wf["name"]),
            ("description", wf.get("description")),
            ("postproc", f"{postproc['id']} {postproc['state']}" if postproc else None),
        ]
    )
    out.table(
        ["name", "type", "required", "default", "label"],
        parameter_rows(wf["parameters"]),
        title="parameters",
    )
    if wf.get("outputs"):
        out.table(
            ["source", "key", "title"],
            [(o["source"], o.get("key"), o.get("title")) for o in wf["outputs"]],
            title="outputs",
        )
    out.table(
        ["id", "name"], [(g["id"], g["name"]) for g in wf.get("groups", [])], title="your groups"
    )


@click.group()
def workflows() -> None:
    """Install and inspect workflow templates."""


@workflows.command("install")
@click.argument("source")
@click.option("--id", "identifier", help="Identifier of the workflow (default: a new one).")
@click.option("--name", help="Name of the workflow (default: from the manifest).")
@click.option("--description", help="Short description (default: from the manifest).")
@click.option("--instructions", help="Instructions file in the source folder.")
@click.option("--specfile", help="Template file in the source folder (default: manifest).")
@click.option("--manifest", "manifestfile", help="Manifest file (default: flowserv.yaml).")
@click.option("--ignore-postproc", is_flag=True, help="Never run the post-processing step.")
@json_option
@click.pass_obj
def install(
    obj: CLIContext,
    source: str,
    identifier: str | None,
    name: str | None,
    description: str | None,
    instructions: str | None,
    specfile: str | None,
    manifestfile: str | None,
    ignore_postproc: bool,
) -> None:
    """Install a workflow from a template folder SOURCE (or a repository key)."""
    folder = Path(source).expanduser()
    if folder.is_dir():
        source = str(folder.resolve())

    async def install_workflow() -> dict[str, Any]:
        async with obj.factory()() as api:
            return await api.workflows().create_workflow(
                source,
                identifier=identifier,
                name=name,
                description=description,
                instructions=instructions,
                specfile=specfile,
                manifestfile=manifestfile,
                ignore_postproc=ignore_postproc,
            )

    wf = obj.run(install_workflow)
    out = Output(obj.json_output)
    if out.json_output:
        out.json(wf)
    else:
        out.line("installed workflow ", (wf["name"], "bold"), " with id ", wf["id"])


@workflows.command("list")
@json_option
@click.pass_obj
def list_workflows(obj: CLIContext) -> None:
    """List the installed workflows."""

    async def listing() -> dict[str, Any]:
        async with obj.factory()() as api:
            return await api.workflows().list_workflows()

    doc = obj.run(listing)
    out = Output(obj.json_output)
    if out.json_output:
        out.json(doc)
    else:
        rows = [(w["id"], w["name"], w.get("description")) for w in doc["workflows"]]
        out.table(["id", "name", "description"], rows)


@workflows.command("show")
@click.argument("workflow")
@json_option
@click.pass_obj
def show(obj: CLIContext, workflow: str) -> None:
    """Show a workflow (identifier or name) with its parameters."""

    async def get() -> dict[str, Any]:
        async with obj.factory()() as api:
            return await find_workflow(api, workflow)

    wf = obj.run(get)
    out = Output(obj.json_output)
    if out.json_output:
        out.json(wf)
    else:
        show_workflow(out, wf)


@workflows.command("delete")
@click.argument("workflow")
@click.pass_obj
def delete(obj: CLIContext, workflow: str) -> None:
    """Delete a workflow with its groups, uploads, runs and files."""

    async def remove() -> dict[str, Any]:
        async with obj.factory()() as api:
            wf = await find_workflow(api, workflow)
            await api.workflows().delete_workflow(wf["id"])
            return wf

    wf = obj.run(remove)
    Output().line("deleted workflow ", (wf["name"], "bold"), " ", wf["id"])


@workflows.command("leaderboard")
@click.argument("workflow")
@click.option("--all", "include_all", is_flag=True, help="Every run, not the best per group.")
@click.option(
    "--order",
    callback=parse_order,
    metavar="COL[:asc|:desc],...",
    help="Sort columns (default: the template's order; direction default: desc).",
)
@json_option
@click.pass_obj
def leaderboard(
    obj: CLIContext, workflow: str, include_all: bool, order: list[dict[str, Any]] | None
) -> None:
    """Show the ranking of a workflow's successful runs."""

    async def ranking() -> dict[str, Any] | None:
        async with obj.factory()() as api:
            wf = await find_workflow(api, workflow)
            doc: dict[str, Any] | None = await api.workflows().get_ranking(
                wf["id"], order_by=order, include_all=include_all
            )
            return doc

    board = obj.run(ranking)
    out = Output(obj.json_output)
    if out.json_output:
        out.json(board)
        return
    if board is None:
        out.line("the workflow has no result schema: it has no leaderboard")
        return
    schema = board["schema"]
    rows = []
    for pos, entry in enumerate(board["ranking"], start=1):
        values = {r["name"]: r["value"] for r in entry["results"]}
        rows.append(
            (
                pos,
                entry["group"]["name"],
                entry["run"]["id"],
                *[values.get(c["name"]) for c in schema],
            )
        )
    out.table(["#", "group", "run", *[c["name"] for c in schema]], rows)
    postproc = board.get("postproc")
    if postproc:
        out.line("post-processing run ", postproc["id"], ": ", state_text(postproc["state"]))
        for file in postproc.get("files", []):
            out.line("  ", Text(file["name"]), f"  (runs download {postproc['id']})")
