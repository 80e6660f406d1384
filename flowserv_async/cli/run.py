"""``run``: install (if needed), upload, start a run, follow it, fetch its results."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import click
from rich.text import Text

from flowserv_async.cli._context import CLIContext, find_group, find_workflow, json_option
from flowserv_async.cli._progress import (
    Interrupt,
    LogPrinter,
    catching_signals,
    download_files,
    drain_log,
    follow,
    print_files,
    print_messages,
    settle,
)
from flowserv_async.cli.render import Output, state_text
from flowserv_async.config import FLOWSERV_ASYNCENGINE
from flowserv_async.errors import UnknownWorkflowError, UnknownWorkflowGroupError
from flowserv_async.local import LocalAPIFactory
from flowserv_async.states import ACTIVE_STATES, RunState

#: Folder (below the working directory) for result files when --output is not given.
RESULTS_FOLDER = "flowserv-results"


def folder_workflow_id(folder: Path) -> str:
    """The identifier of the workflow installed by ``run`` from a folder.

    Derived from the folder's absolute path, so that running the same folder again
    reuses the workflow (and its groups, runs and leaderboard).
    """
    return hashlib.sha256(str(folder).encode()).hexdigest()[:32]


def _pairs(value: tuple[str, ...], what: str) -> list[tuple[str, str]]:
    pairs = []
    for item in value:
        name, sep, rest = item.partition("=")
        if not sep or not name.strip():
            raise click.BadParameter(f"expected NAME={what}, got {item!r}")
        pairs.append((name.strip(), rest))
    return pairs


def parse_arguments(
    ctx: click.Context, param: click.Parameter, value: tuple[str, ...]
) -> list[tuple[str, str]]:
    """Parse ``--arg name=value`` options."""
    return _pairs(value, "VALUE")


def parse_files(
    ctx: click.Context, param: click.Parameter, value: tuple[str, ...]
) -> list[tuple[str, Path]]:
    """Parse ``--file name=path`` options; the files must exist."""
    files = []
    for name, path in _pairs(value, "PATH"):
        local = Path(path).expanduser()
        if not local.is_file():
            raise click.BadParameter(f"file {path!r} for parameter '{name}' does not exist")
        files.append((name, local.resolve()))
    return files


@dataclass
class RunRequest:
    """What ``run`` was asked to do (paths resolved before the event loop starts)."""

    workflow: str
    folder: Path | None
    arguments: list[tuple[str, str]]
    files: list[tuple[str, Path]]
    group: str
    timeout: float | None
    output: Path | None
    results: Path

    def output_folder(self, run_id: str) -> Path:
        """Where the run's result files go."""
        return self.output if self.output is not None else self.results / run_id


class RunCommand:
    """One invocation of ``run``: set-up, following, results."""

    def __init__(
        self, factory: LocalAPIFactory, request: RunRequest, out: Output, interrupt: Interrupt
    ) -> None:
        self.factory = factory
        self.request = request
        self.out = out
        self.interrupt = interrupt
        self.workflow_id = ""

    def say(self, *parts: str | Text | tuple[str, str]) -> None:
        """Print a progress line (not in JSON mode)."""
        if not self.out.json_output:
            self.out.line(*parts)

    async def main(self) -> int:
        """Start the run and follow it; return the exit status."""
        with self.interrupt.guard() as scope:
            run = await self.start()
        if scope.cancelled_caught:
            self.say(f"interrupted by {self.interrupt.name} before the run started")
            return self.interrupt.exit_code
        run_id = run["id"]
        printer = LogPrinter(self.out)
        followed = await follow(
            self.factory,
            run_id,
            self.out,
            printer,
            interrupt=self.interrupt,
            timeout=self.request.timeout,
        )
        handle = await settle(self.factory, run_id, followed.state)
        await drain_log(self.factory, run_id, printer, followed.offset)
        return await self.report(handle, followed.stopped)

    async def start(self) -> dict[str, Any]:
        """Install or find the workflow, find or create the group, upload, start."""
        req = self.request
        async with self.factory() as api:
            if req.folder is not None:
                workflow_id = folder_workflow_id(req.folder)
                try:
                    wf = await api.workflows().get_workflow(workflow_id)
                    how = "installed before from"
                except UnknownWorkflowError:
                    wf = await api.workflows().create_workflow(
                        str(req.folder), identifier=workflow_id
                    )
                    how = "installed from"
                self.say(
                    "workflow ", (wf["name"], "bold"), f" {wf['id']} ({how} ", str(req.folder), ")"
                )
            else:
                wf = await find_workflow(api, req.workflow)
                self.say("workflow ", (wf["name"], "bold"), f" {wf['id']}")
            try:
                group = await find_group(api, req.group, workflow_id=wf["id"])
                created = False
            except UnknownWorkflowGroupError:
                group = await api.groups().create_group(wf["id"], req.group)
                created = True
            self.say(
                "group ", (group["name"], "bold"), f" {group['id']}", " (new)" if created else ""
            )
            arguments: list[dict[str, Any]] = [{"name": n, "value": v} for n, v in req.arguments]
            for name, path in req.files:
                upload = await api.uploads().upload_file(group["id"], path, path.name)
                self.say(f"uploaded {path} as {upload['id']} for '{name}'")
                arguments.append(
                    {"name": name, "value": {"type": "$file", "value": {"fileId": upload["id"]}}}
                )
            run = await api.runs().start_run(group["id"], arguments)
        self.workflow_id = wf["id"]
        return run

    async def report(self, run: dict[str, Any], stopped: str | None) -> int:
        """Print the outcome, fetch the result files, wait for post-processing."""
        state = run["state"]
        doc: dict[str, Any] = dict(run)
        self.say(f"run {run['id']}: ", state_text(state))
        code = 0 if state == RunState.SUCCESS else 1
        if state == RunState.SUCCESS:
            folder = self.request.output_folder(run["id"])
            files = await download_files(self.factory, run, folder)
            doc["files"], doc["outputDir"] = files, str(folder)
            if not self.out.json_output:
                print_files(self.out, files)
            if stopped is None:
                postproc = await self.postproc()
                if postproc is not None:
                    doc["postproc"] = postproc
        elif not self.out.json_output:
            print_messages(self.out, run)
        if self.out.json_output:
            self.out.json(doc)
        if self.interrupt.event.is_set():
            return self.interrupt.exit_code
        return code

    async def postproc(self) -> dict[str, Any] | None:
        """Wait for the post-processing run that this run's success started, if any.

        The engine runs in this process: leaving early would cancel it.
        """
        async with self.factory() as api:
            wf = await api.workflows().get_workflow(self.workflow_id)
        postproc: dict[str, Any] | None = wf.get("postproc")
        if postproc is None or postproc["state"] not in ACTIVE_STATES:
            return None
        run_id = postproc["id"]
        self.say(f"post-processing run {run_id} updates the leaderboard")
        printer = LogPrinter(self.out, prefix="postproc/")
        followed = await follow(
            self.factory,
            run_id,
            self.out,
            printer,
            label="post-processing",
            interrupt=self.interrupt,
        )
        handle = await settle(self.factory, run_id, followed.state)
        await drain_log(self.factory, run_id, printer, followed.offset)
        self.say(f"post-processing {run_id}: ", state_text(handle["state"]))
        if handle["state"] != RunState.SUCCESS and not self.out.json_output:
            print_messages(self.out, handle)
        return handle


async def execute(env: dict[str, Any], request: RunRequest, json_output: bool) -> int:
    """Run the ``run`` command in the event loop (``env``: the factory's configuration)."""
    out = Output(json_output)
    # The CLI follows the run itself: start_run must return at once.
    factory = LocalAPIFactory(env={**env, FLOWSERV_ASYNCENGINE: "true"})
    async with catching_signals() as interrupt, factory:
        return await RunCommand(factory, request, out, interrupt).main()


@click.command()
@click.argument("workflow")
@click.option(
    "--arg",
    "arguments",
    multiple=True,
    callback=parse_arguments,
    metavar="NAME=VALUE",
    help="A parameter value (converted to the parameter's type). Repeatable.",
)
@click.option(
    "--file",
    "files",
    multiple=True,
    callback=parse_files,
    metavar="NAME=PATH",
    help="A local file for a file parameter; it is uploaded to the group. Repeatable.",
)
@click.option("--group", default="local", show_default=True, help="Name of the group to run in.")
@click.option(
    "--timeout",
    type=click.FloatRange(min=0, min_open=True),
    help="Cancel the run after this many seconds (exit status 1).",
)
@click.option(
    "--output",
    type=click.Path(file_okay=False, path_type=Path),
    help=f"Folder for the result files [default: ./{RESULTS_FOLDER}/<run id>].",
)
@json_option
@click.pass_obj
def run(
    obj: CLIContext,
    workflow: str,
    arguments: list[tuple[str, str]],
    files: list[tuple[str, Path]],
    group: str,
    timeout: float | None,
    output: Path | None,
) -> int:
    """Run WORKFLOW once and fetch its results.

    WORKFLOW is an installed workflow (identifier or name) or a template folder. A
    folder is installed on first use, with an identifier derived from its absolute
    path; later runs of the same folder reuse that workflow (to pick up changes to the
    template, 'workflows delete' it first). The run goes in the group --group of the
    workflow, created when missing.

    The command shows the run's state and log lines while it runs. On SUCCESS it writes
    the result files to --output and waits for a post-processing run that the success
    started; it exits 0. A run that ends in ERROR or CANCELED exits 1 with its messages.
    Ctrl-C (SIGINT) cancels the run, waits until it is CANCELED and exits 130;
    SIGTERM exits 143 and SIGHUP (terminal closed) 129 the same way.
    """
    source = Path(workflow).expanduser()
    folder = source.resolve() if source.is_dir() else None
    if folder is None and (workflow.startswith((".", "~")) or "/" in workflow):
        raise click.BadParameter(f"folder {workflow!r} does not exist", param_hint="WORKFLOW")
    request = RunRequest(
        workflow=workflow,
        folder=folder,
        arguments=arguments,
        files=files,
        group=group,
        timeout=timeout,
        output=output.absolute() if output is not None else None,
        results=Path(RESULTS_FOLDER).absolute(),
    )
    code: int = obj.run(execute, obj.env(), request, obj.json_output)
    return code
