"""Helpers for tests that install small workflows and run them."""

from __future__ import annotations

import contextlib
import json
import os
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import anyio
import psutil
from dbutil import backend_database

from flowserv_async import LocalAPIFactory

PY = sys.executable


def step(
    name: str,
    *commands: str,
    inputs: list[str] | None = None,
    outputs: list[str] | None = None,
    **extra: Any,
) -> dict[str, Any]:
    """A container step running ``commands``."""
    doc: dict[str, Any] = {
        "name": name,
        "action": {"environment": "python", "commands": list(commands)},
        **extra,
    }
    if inputs is not None or outputs is not None:
        doc["files"] = {"inputs": inputs or [], "outputs": outputs or []}
    return doc


async def install(
    factory: LocalAPIFactory,
    folder: Path,
    steps: list[dict[str, Any]],
    parameters: list[dict[str, Any]] | None = None,
    outputs: list[str] | None = None,
    extra: dict[str, Any] | None = None,
    group: str = "team",
) -> tuple[str, str]:
    """Install a workflow made of ``steps`` and create a group; return their ids."""
    workflow: dict[str, Any] = {"steps": steps}
    if outputs is not None:
        workflow["files"] = {"inputs": [], "outputs": outputs}
    template = {"workflow": workflow, "parameters": parameters or [], **(extra or {})}
    await anyio.Path(folder).mkdir(parents=True, exist_ok=True)
    await anyio.Path(folder, "spec.json").write_text(json.dumps(template))
    async with factory() as api:
        wf = await api.workflows().create_workflow(
            source=str(folder), name=folder.name, specfile="spec.json"
        )
        grp = await api.groups().create_group(wf["id"], group)
    return wf["id"], grp["id"]


async def start(
    factory: LocalAPIFactory,
    group_id: str,
    arguments: list[dict[str, Any]] | None = None,
    **kwargs: Any,
) -> dict[str, Any]:
    """Start a run in its own session."""
    async with factory() as api:
        return await api.runs().start_run(group_id, arguments or [], **kwargs)


def launchers(owners: set[int]) -> list[psutil.Process]:
    """The launchers that start the run commands of the processes ``owners``.

    A launcher (see ``flowserv_async.engine.containment``) is nobody's child; its last
    argument is ``<pid>:<start time>`` of the process whose commands it starts.
    """
    found = []
    for proc in psutil.process_iter(["cmdline"]):
        cmdline = proc.info["cmdline"] or []
        if cmdline[1:4] == ["-I", "-S", "-c"] and cmdline[-1].partition(":")[0] in {
            str(owner) for owner in owners
        }:
            found.append(proc)
    return found


def engine_of(command: psutil.Process) -> psutil.Process:
    """The process whose run started a command: its parent, or its launcher's owner."""
    parent = command.parent()
    assert parent is not None, "the command's parent is gone"
    cmdline = parent.cmdline()
    if cmdline[1:4] == ["-I", "-S", "-c"]:
        return psutil.Process(int(cmdline[-1].partition(":")[0]))
    return parent


def command_processes() -> list[psutil.Process]:
    """The main processes of commands: our children, and those of our launchers."""
    found = psutil.Process().children()
    for launcher in launchers({os.getpid()}):
        with contextlib.suppress(psutil.NoSuchProcess):
            found.extend(launcher.children())
    return found


def descendants(process: psutil.Process) -> list[psutil.Process]:
    """The descendants of a process, with the run commands its launchers started."""
    found = process.children(recursive=True)
    for launcher in launchers({process.pid, *(p.pid for p in found)}):
        with contextlib.suppress(psutil.NoSuchProcess):
            found.extend(launcher.children(recursive=True))
    return found


def step_processes() -> list[psutil.Process]:
    """The live processes started by this test process (its descendants)."""
    return [p for p in descendants(psutil.Process(os.getpid())) if _alive(p)]


def _alive(p: psutil.Process) -> bool:
    try:
        return p.status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def group_alive(pgid: int) -> bool:
    """True while a non-zombie process of the process group exists."""
    for p in psutil.process_iter():
        try:
            if os.getpgid(p.pid) == pgid and p.status() != psutil.STATUS_ZOMBIE:
                return True
        except (psutil.NoSuchProcess, ProcessLookupError, PermissionError):
            continue
    return False


def _find(predicate: Any) -> psutil.Process | None:
    for p in step_processes():
        try:
            if predicate(p.cmdline()):
                return p
        except psutil.NoSuchProcess:
            continue
    return None


async def wait_for_process(predicate: Any, timeout: float = 10) -> psutil.Process:
    """Wait until a descendant process matching ``predicate(cmdline)`` runs."""
    with anyio.fail_after(timeout):
        while True:
            found = await anyio.to_thread.run_sync(_find, predicate)
            if found is not None:
                return found
            await anyio.sleep(0.05)


@asynccontextmanager
async def blocking_factory(folder: Path) -> AsyncIterator[LocalAPIFactory]:
    """An open factory on SQLite in ``folder`` whose ``start_run`` returns when the run
    has ended (open access)."""
    async with backend_database("sqlite", folder) as db:
        env = {
            "FLOWSERV_API_DIR": str(folder / "api"),
            "FLOWSERV_AUTH": "open",
            "FLOWSERV_ASYNCENGINE": "false",
        }
        async with LocalAPIFactory(env=env, db=db) as opened:
            yield opened


async def run_hello_world(factory: LocalAPIFactory) -> dict[str, Any]:
    """Install the bundled hello world, run it for Alice and Bob, check its greetings.

    Returns the ids (``workflow``, ``group``, ``upload``) and the final ``run``.
    """
    from flowserv_async.examples.run_helloworld import HERE

    async with factory() as api:
        workflow = await api.workflows().create_workflow(source=str(HERE))
        group = await api.groups().create_group(workflow["id"], "team")
        upload = await api.uploads().upload_file(group["id"], b"Alice\nBob\n", "names.txt")
    arguments = [
        {"name": "names", "value": {"type": "$file", "value": {"fileId": upload["id"]}}},
        {"name": "greeting", "value": "Hi"},
    ]
    run = await start(factory, group["id"], arguments)
    run = await factory.wait_run(run["id"], timeout=60)
    assert run["state"] == "SUCCESS", run.get("messages")
    # A result file with an output entry is named by its key, as in flowserv.
    greetings = next(f for f in run["files"] if f["name"] == "greetings")
    async with factory() as api:
        handle = await api.runs().get_result_file(run["id"], greetings["id"])
        assert (await handle.read()).decode() == "Hi, Alice!\nHi, Bob!\n"
    return {
        "workflow": workflow["id"],
        "group": group["id"],
        "upload": upload["id"],
        "run": run,
    }
