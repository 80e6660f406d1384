"""Code steps: Python functions called in the engine's process."""

from __future__ import annotations

import os
import threading
from pathlib import Path
from typing import Any

import anyio

from flowserv_async.engine import RunLog, StepState, WorkflowResult, run_workflow

HERE = __name__
LOOP_THREADS: set[int] = set()


async def double(count: int) -> int:
    await anyio.sleep(0)
    return 2 * count


def write_report(rundir: Path, doubled: int, label: str = "n") -> dict[str, Any]:
    # Blocking file I/O is fine here: plain functions run in a worker thread.
    (rundir / "report.txt").write_text(f"{label}={doubled}\n")
    return {"thread": threading.get_ident(), "cwd": os.getcwd()}


def fail(n: int) -> None:
    raise ValueError(f"n must be even, got {n}")


async def hang() -> None:
    await anyio.sleep_forever()


NOT_CALLABLE = 42


def code(name: str, func: str, **action: Any) -> dict[str, Any]:
    return {"name": name, "action": {"func": f"{HERE}.{func}", **action}}


async def execute(rundir: Path, *steps: dict[str, Any], **kwargs: Any) -> WorkflowResult:
    kwargs.setdefault("log", RunLog())
    return await run_workflow(
        {"parameters": {"n": 21, "label": "doubled"}, "steps": list(steps)},
        rundir=rundir,
        **kwargs,
    )


async def test_async_and_sync_functions_share_results_through_the_context(
    tmp_path: Path,
) -> None:
    log = RunLog()
    result = await execute(
        tmp_path,
        code("double", "double", arg="doubled", variables=[{"arg": "count", "var": "n"}]),
        code("report", "write_report", arg="info"),
        {"name": "show", "action": {"commands": ["cat report.txt", "echo ${doubled}"]}},
        log=log,
    )
    assert result.success, result.messages
    assert result.context["doubled"] == 42
    info = result.context["info"]
    assert info["thread"] != threading.get_ident()
    # The working directory of the process is never changed.
    assert info["cwd"] != str(tmp_path)
    assert [e.text for e in log.lines().lines] == ["doubled=42", "42"]


async def test_raising_function_fails_the_step_with_its_error(tmp_path: Path) -> None:
    log = RunLog()
    result = await execute(tmp_path, code("check", "fail"), log=log)
    assert not result.success
    assert result.messages == [
        f"step 'check': function '{HERE}.fail' raised ValueError: n must be even, got 21"
    ]
    stderr = [e.text for e in log.lines().lines if e.stream == "stderr"]
    assert stderr[0] == "Traceback (most recent call last):"
    assert stderr[-1] == "ValueError: n must be even, got 21"


async def test_unimportable_function_fails_before_any_step_runs(tmp_path: Path) -> None:
    result = await execute(
        tmp_path,
        {"name": "first", "action": {"commands": ["touch first.txt"]}},
        {"name": "bad", "action": {"func": "no_such_module_flowserv.fn"}},
    )
    assert not result.success
    assert result.messages[0].startswith(
        "step 'bad': cannot import function 'no_such_module_flowserv.fn': ModuleNotFoundError"
    )
    assert result.steps["bad"].state is StepState.ERROR
    assert result.steps["first"].state is StepState.PENDING
    assert not await anyio.Path(tmp_path / "first.txt").exists()


async def test_missing_or_uncallable_attribute_is_an_import_failure(tmp_path: Path) -> None:
    missing = await execute(tmp_path, code("a", "nothing_here"))
    assert f"module '{HERE}' has no attribute 'nothing_here'" in missing.messages[0]
    uncallable = await execute(tmp_path, code("a", "NOT_CALLABLE"))
    assert f"'{HERE}.NOT_CALLABLE' is not callable" in uncallable.messages[0]


async def test_async_function_is_cancelled_by_the_time_limit(tmp_path: Path) -> None:
    result = await execute(tmp_path, {**code("wait", "hang"), "timeout": 0.1})
    assert result.messages == ["step 'wait' exceeded its time limit of 0.1 s"]
