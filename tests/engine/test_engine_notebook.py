"""Notebook steps: papermill in a step process (the ``notebooks`` extra)."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import anyio
import psutil
import pytest
from runs_helpers import command_processes

from flowserv_async.engine import RunLog, parse_engine_config, run_workflow

pytest.importorskip("papermill", reason="needs the notebooks extra")


def notebook(*cells: str, parameters: str | None = None) -> str:
    """A notebook (nbformat 4) with an optional tagged parameters cell, then ``cells``."""

    def cell(source: str, tags: list[str] | None = None) -> dict[str, Any]:
        return {
            "id": f"cell-{len(source)}-{len(tags or [])}",
            "cell_type": "code",
            "execution_count": None,
            "metadata": {"tags": tags or []},
            "outputs": [],
            "source": source,
        }

    doc = {
        "cells": ([cell(parameters, ["parameters"])] if parameters else [])
        + [cell(c) for c in cells],
        "metadata": {
            "kernelspec": {"display_name": "Python 3", "language": "python", "name": "python3"},
            "language_info": {"name": "python"},
        },
        "nbformat": 4,
        "nbformat_minor": 5,
    }
    return json.dumps(doc)


def nb_step(name: str, **action: Any) -> dict[str, Any]:
    return {"name": name, "action": action}


async def write(path: Path, text: str) -> None:
    await anyio.Path(path).write_text(text)


async def test_notebook_gets_its_params_from_the_context_and_logs_live(tmp_path: Path) -> None:
    await write(
        tmp_path / "greet.ipynb",
        notebook(
            "print(f'{greeting}, {who}!')\nopen('out.txt', 'w').write(greeting * times)",
            parameters="greeting = 'x'\nwho = 'nobody'\ntimes = 1",
        ),
    )
    log = RunLog()
    result = await run_workflow(
        {
            "parameters": {"greeting": "Hi", "name": "Ann", "times": 2},
            "steps": [
                nb_step(
                    "nb",
                    notebook="greet.ipynb",
                    params=["greeting", "who", "times"],
                    variables=[{"arg": "who", "var": "name"}],
                )
            ],
        },
        rundir=tmp_path,
        log=log,
    )
    assert result.success, result.messages
    assert await anyio.Path(tmp_path, "out.txt").read_text() == "HiHi"
    executed = json.loads(await anyio.Path(tmp_path, "greet.out.ipynb").read_text())
    assert "Hi, Ann!" in json.dumps(executed["cells"])
    assert "Hi, Ann!" in [e.text for e in log.lines().lines if e.step == "nb"]


async def test_failing_notebook_fails_the_step_with_the_error(tmp_path: Path) -> None:
    await write(tmp_path / "bad.ipynb", notebook("raise ValueError('no data here')"))
    result = await run_workflow(
        {"steps": [nb_step("nb", notebook="bad.ipynb", output="out/bad.ipynb")]},
        rundir=tmp_path,
        log=RunLog(),
    )
    assert not result.success
    assert "step 'nb'" in result.messages[0]
    assert "no data here" in result.messages[0]


async def test_without_the_extra_the_error_names_it(tmp_path: Path) -> None:
    # A papermill that cannot be imported shadows the installed one.
    fake = tmp_path / "fake" / "papermill"
    await anyio.Path(fake).mkdir(parents=True)
    await write(fake / "__init__.py", "raise ImportError('not installed')\n")
    await write(tmp_path / "nb.ipynb", notebook("print(1)"))
    config = parse_engine_config(
        {
            "workers": [
                {"name": "w", "type": "subprocess", "env": {"PYTHONPATH": str(fake.parent)}}
            ],
            "workflow": [{"step": "nb", "worker": "w"}],
        }
    )
    result = await run_workflow(
        {"steps": [nb_step("nb", notebook="nb.ipynb")]},
        rundir=tmp_path,
        log=RunLog(),
        config=config,
    )
    assert not result.success
    assert "pip install 'flowserv-async[notebooks]'" in result.messages[0]
    assert not await anyio.Path(tmp_path, "nb.out.ipynb").exists()


def _processes(kernel_pid: int) -> tuple[psutil.Process, psutil.Process, list[int]]:
    """The kernel, the step process, and the ids of the step process's descendants."""
    (step_process,) = command_processes()
    descendants = [p.pid for p in step_process.children(recursive=True)]
    return psutil.Process(kernel_pid), step_process, descendants


def _gone(processes: list[psutil.Process]) -> bool:
    for proc in processes:
        try:
            if proc.status() != psutil.STATUS_ZOMBIE:
                return False
        except psutil.NoSuchProcess:
            continue
    return True


async def test_cancel_leaves_neither_the_step_nor_its_kernel_running(tmp_path: Path) -> None:
    await write(
        tmp_path / "slow.ipynb",
        notebook(
            "import os, subprocess, sys, time\n"
            # A process the kernel starts stays in the kernel's session.
            "child = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)'])\n"
            "open('pids', 'w').write(f'{os.getpid()} {child.pid}')\n"
            "time.sleep(60)"
        ),
    )
    scope = anyio.CancelScope()
    async with anyio.create_task_group() as tg:

        async def run() -> None:
            with scope:
                await run_workflow(
                    {"steps": [nb_step("nb", notebook="slow.ipynb")]},
                    rundir=tmp_path,
                    log=RunLog(),
                    grace=2,
                )

        tg.start_soon(run)
        pidfile = anyio.Path(tmp_path, "pids")
        with anyio.fail_after(60):
            while not await pidfile.exists() or not await pidfile.read_text():
                await anyio.sleep(0.1)
        kernel_pid, child_pid = map(int, (await pidfile.read_text()).split())
        kernel, step_process, descendants = await anyio.to_thread.run_sync(_processes, kernel_pid)
        kernel_child = await anyio.to_thread.run_sync(psutil.Process, child_pid)
        # The kernel is out of reach of the step's process group: a session of its own.
        assert kernel.pid in descendants
        assert os.getsid(kernel.pid) != os.getsid(step_process.pid)
        scope.cancel()
    assert scope.cancelled_caught
    # SIGKILL has been sent when cancel returns; wait (bounded) for the processes to end.
    # (The kernel would also end by itself once its parent is gone; its child would not.)
    with anyio.fail_after(10):
        while not await anyio.to_thread.run_sync(_gone, [kernel, kernel_child, step_process]):
            await anyio.sleep(0.05)
