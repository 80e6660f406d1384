"""``groups`` and ``files``: the groups (submissions) of a workflow and their uploads.

A GROUP argument is a group identifier or the name of one of your groups.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from flowserv_async.cli._context import CLIContext, find_group, find_workflow, json_option
from flowserv_async.cli.render import Output, state_text, timestamp


def show_group(out: Output, group: dict[str, Any]) -> None:
    """Print a group handle: fields, members, files and runs."""
    out.fields([("id", group["id"]), ("name", group["name"]), ("workflow", group["workflow"])])
    out.table(["id", "username"], [(m["id"], m["username"]) for m in group["members"]], "members")
    out.table(
        ["id", "name", "size", "created"],
        [(f["id"], f["name"], f["size"], timestamp(f["createdAt"])) for f in group["files"]],
        title="files",
    )
    if "runs" in group:
        out.table(
            ["id", "state", "created"],
            [(r["id"], state_text(r["state"]), timestamp(r["createdAt"])) for r in group["runs"]],
            title="runs",
        )


@click.group()
def groups() -> None:
    """Create and inspect groups (submissions) of a workflow."""


@groups.command("list")
@click.option("--workflow", help="Only the groups of this workflow (identifier or name).")
@json_option
@click.pass_obj
def list_groups(obj: CLIContext, workflow: str | None) -> None:
    """List your groups."""

    async def listing() -> dict[str, Any]:
        async with obj.factory()() as api:
            workflow_id = (await find_workflow(api, workflow))["id"] if workflow else None
            return await api.groups().list_groups(workflow_id=workflow_id)

    doc = obj.run(listing)
    out = Output(obj.json_output)
    if out.json_output:
        out.json(doc)
    else:
        out.table(
            ["id", "name", "workflow"], [(g["id"], g["name"], g["workflow"]) for g in doc["groups"]]
        )


@groups.command("show")
@click.argument("group")
@json_option
@click.pass_obj
def show(obj: CLIContext, group: str) -> None:
    """Show a group with its members, files and runs."""

    async def get() -> dict[str, Any]:
        async with obj.factory()() as api:
            return await find_group(api, group)

    doc = obj.run(get)
    out = Output(obj.json_output)
    if out.json_output:
        out.json(doc)
    else:
        show_group(out, doc)


@groups.command("create")
@click.argument("workflow")
@click.argument("name")
@click.option("--member", "members", multiple=True, help="User id of another member.")
@json_option
@click.pass_obj
def create(obj: CLIContext, workflow: str, name: str, members: tuple[str, ...]) -> None:
    """Create a group NAME for WORKFLOW (identifier or name); you are a member."""

    async def make() -> dict[str, Any]:
        async with obj.factory()() as api:
            wf = await find_workflow(api, workflow)
            return await api.groups().create_group(wf["id"], name, members=list(members))

    doc = obj.run(make)
    out = Output(obj.json_output)
    if out.json_output:
        out.json(doc)
    else:
        out.line("created group ", (doc["name"], "bold"), " with id ", doc["id"])


@groups.command("delete")
@click.argument("group")
@click.pass_obj
def delete(obj: CLIContext, group: str) -> None:
    """Delete a group with its runs and uploaded files."""

    async def remove() -> dict[str, Any]:
        async with obj.factory()() as api:
            doc = await find_group(api, group)
            await api.groups().delete_group(doc["id"])
            return doc

    doc = obj.run(remove)
    Output().line("deleted group ", (doc["name"], "bold"), " ", doc["id"])


@click.group()
def files() -> None:
    """Upload, list and delete the files of a group."""


@files.command("upload")
@click.argument("group")
@click.argument("path", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--name", help="Name of the file in the group (default: the file's name).")
@json_option
@click.pass_obj
def upload(obj: CLIContext, group: str, path: Path, name: str | None) -> None:
    """Upload the local file PATH to GROUP."""
    local = path.resolve()

    async def store() -> dict[str, Any]:
        async with obj.factory()() as api:
            doc = await find_group(api, group)
            return await api.uploads().upload_file(doc["id"], local, name or local.name)

    doc = obj.run(store)
    out = Output(obj.json_output)
    if out.json_output:
        out.json(doc)
    else:
        out.line("uploaded ", (doc["name"], "bold"), f" ({doc['size']} bytes) with id ", doc["id"])


@files.command("list")
@click.argument("group")
@json_option
@click.pass_obj
def list_files(obj: CLIContext, group: str) -> None:
    """List the files of GROUP."""

    async def listing() -> dict[str, Any]:
        async with obj.factory()() as api:
            doc = await find_group(api, group)
            return await api.uploads().list_uploaded_files(doc["id"])

    doc = obj.run(listing)
    out = Output(obj.json_output)
    if out.json_output:
        out.json(doc)
    else:
        out.table(
            ["id", "name", "size", "created"],
            [(f["id"], f["name"], f["size"], timestamp(f["createdAt"])) for f in doc["files"]],
        )


@files.command("delete")
@click.argument("group")
@click.argument("file_id")
@click.pass_obj
def delete_file(obj: CLIContext, group: str, file_id: str) -> None:
    """Delete the file FILE_ID of GROUP."""

    async def remove() -> None:
        async with obj.factory()() as api:
            doc = await find_group(api, group)
            await api.uploads().delete_file(doc["id"], file_id)

    obj.run(remove)
    Output().line("deleted file ", file_id)
