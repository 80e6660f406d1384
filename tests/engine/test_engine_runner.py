"""Running workflows: the step DAG, failures, cancellation, time limits, outputs."""

from __future__ import annotations

import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import anyio
import pytest

from flowserv_async.engine import (
    RunLog,
    StepState,
    WorkflowResult,
    find_missing_files,
    parse_engine_config,
    run_workflow,
)
from flowserv_async.errors import InvalidConfigurationError, InvalidTemplateError

if TYPE_CHECKING:
    from .conftest import ProcessProbe


def sleeper(pidfile: str) -> str:
    """A command that writes its pid (= its process group) to a file, then sleeps."""
    script = f"import os, time; open('{pidfile}', 'w').write(str(os.getpid())); time.sleep(60)"
    return f'${{python}} -c "{script}"'


def step(name: str, *commands: str, **extra: Any) -> dict[str, Any]:
    return {"name": name, "action": {"environment": "sh", "commands": list(commands)}, **extra}


async def execute(rundir: Path, *steps: dict[str, Any], **kwargs: Any) -> WorkflowResult:
    kwargs.setdefault("log", RunLog())
    kwargs.setdefault("grace", 0.5)
    return await run_workflow({"steps": list(steps)}, rundir=rundir, **kwargs)


async def pid_from(path: Path) -> int:
    return int(await anyio.Path(path).read_text())


async def test_independent_steps_overlap_and_a_joining_step_waits_for_both(
    tmp_path: Path,
) -> None:
    result = await execute(
        tmp_path,
        step("a", "sh -c 'sleep 0.5; echo a > a.txt'", files={"outputs": ["a.txt"]}),
        step("b", "sh -c 'sleep 0.5; echo b > b.txt'", files={"outputs": ["b.txt"]}),
        step(
            "c",
            "sh -c 'cat a.txt b.txt > c.txt'",
            files={"inputs": ["a.txt", "b.txt"], "outputs": ["c.txt"]},
        ),
    )
    assert result.success, result.messages
    a, b, c = (result.steps[name] for name in "abc")
    assert all(s.state is StepState.SUCCESS for s in (a, b, c))
    assert a.started_at is not None and a.ended_at is not None
    assert b.started_at is not None and b.ended_at is not None
    assert c.started_at is not None
    assert a.started_at < b.ended_at and b.started_at < a.ended_at
    assert c.started_at >= max(a.ended_at, b.ended_at)
    assert a.started is not None and a.ended is not None and a.started <= a.ended
    assert await anyio.Path(tmp_path / "c.txt").read_text() == "a\nb\n"


async def test_steps_without_files_run_one_after_another(tmp_path: Path) -> None:
    result = await execute(
        tmp_path,
        step("one", "sleep 0.2"),
        step("two", "sleep 0.2"),
        step("three", "sleep 0.2"),
    )
    assert result.success
    one, two, three = result.steps.values()
    assert one.ended_at is not None and two.started_at is not None
    assert two.ended_at is not None and three.started_at is not None
    assert two.started_at >= one.ended_at
    assert three.started_at >= two.ended_at


async def test_failing_step_cancels_a_running_sibling_and_kills_it(
    tmp_path: Path, probe: ProcessProbe
) -> None:
    log = RunLog()
    result = await execute(
        tmp_path,
        step("slow", sleeper("slow.pid"), files={"outputs": ["slow.txt"]}),
        step(
            "broken",
            "sh -c 'while [ ! -f slow.pid ]; do sleep 0.02; done; echo it broke >&2; exit 3'",
            files={"outputs": ["broken.txt"]},
        ),
        step("after", "echo never", files={"inputs": ["broken.txt"]}),
        log=log,
    )
    assert not result.success
    slow, broken, after = result.steps.values()
    assert broken.state is StepState.ERROR
    assert broken.returncode == 3
    assert broken.message is not None
    assert "step 'broken'" in broken.message
    assert "exit code 3" in broken.message
    assert "it broke" in broken.message
    assert result.messages == [broken.message]
    assert slow.state is StepState.CANCELED
    assert slow.ended_at is not None
    assert after.state is StepState.PENDING
    assert after.started_at is None
    assert await probe.members(await pid_from(tmp_path / "slow.pid")) == []
    assert "never" not in [e.text for e in log.lines().lines]


async def test_nonzero_exit_stops_the_step_at_that_command(tmp_path: Path) -> None:
    log = RunLog()
    result = await execute(
        tmp_path,
        step("s", "echo first", "sh -c 'echo bad input >&2; exit 2'", "echo third"),
        log=log,
    )
    assert not result.success
    message = result.steps["s"].message
    assert message is not None
    assert message.startswith("step 's': command 'sh -c 'echo bad input >&2; exit 2'' failed")
    assert "exit code 2" in message
    assert message.endswith("bad input")
    assert [e.text for e in log.lines().lines] == ["first", "bad input"]


async def test_failure_messages_name_files_relative_to_the_run_folder(tmp_path: Path) -> None:
    result = await execute(
        tmp_path,
        step("s", "cat ${rundir}/data/missing.txt", "echo never"),
        log=RunLog(),
    )
    assert not result.success
    assert str(tmp_path) not in "".join(result.messages)
    assert result.messages[0].startswith("step 's': command 'cat data/missing.txt' failed")
    assert "data/missing.txt" in result.messages[0].splitlines()[-1]


async def test_cancelling_the_run_kills_the_whole_process_group(
    tmp_path: Path, probe: ProcessProbe
) -> None:
    finished = False

    async def run(scope: anyio.CancelScope) -> None:
        nonlocal finished
        with scope:
            await execute(tmp_path, step("s", "sh -c 'sleep 60 & sleep 60'"))
            finished = True

    scope = anyio.CancelScope()
    async with anyio.create_task_group() as tg:
        tg.start_soon(run, scope)
        pgid = await probe.leader()
        await probe.wait_members(pgid, 2)
        scope.cancel()
    assert scope.cancelled_caught
    assert not finished
    assert await probe.members(pgid) == []


async def test_process_ignoring_sigterm_is_killed_after_the_grace_period(
    tmp_path: Path, probe: ProcessProbe
) -> None:
    grace = 0.3
    scope = anyio.CancelScope()

    async def run() -> None:
        with scope:
            await execute(tmp_path, step("s", "sh -c \"trap '' TERM; sleep 60\""), grace=grace)

    async with anyio.create_task_group() as tg:
        tg.start_soon(run)
        pgid = await probe.leader()
        await probe.wait_members(pgid, 2)  # the shell and its sleep: the trap is set
        cancelled = time.monotonic()
        scope.cancel()
    assert time.monotonic() - cancelled >= grace
    assert await probe.members(pgid) == []


async def test_step_timeout_fails_the_run_naming_step_and_limit(
    tmp_path: Path, probe: ProcessProbe
) -> None:
    result = await execute(tmp_path, step("slow", sleeper("slow.pid"), timeout=0.3))
    assert not result.success
    assert result.messages == ["step 'slow' exceeded its time limit of 0.3 s"]
    assert result.steps["slow"].state is StepState.ERROR
    assert await probe.members(await pid_from(tmp_path / "slow.pid")) == []


async def test_default_step_timeout_applies_to_steps_without_their_own(tmp_path: Path) -> None:
    result = await execute(
        tmp_path,
        step("quick", "sleep 0.1", timeout=5),
        step("slow", "sleep 60"),
        step_timeout=0.2,
    )
    assert result.steps["quick"].state is StepState.SUCCESS
    assert result.messages == ["step 'slow' exceeded its time limit of 0.2 s"]


async def test_missing_declared_output_fails_the_run_naming_the_file(tmp_path: Path) -> None:
    workflow = {
        "files": {"outputs": ["results/score.json", "made.txt"]},
        "steps": [step("s", "touch made.txt")],
    }
    result = await run_workflow(workflow, rundir=tmp_path, log=RunLog())
    assert not result.success
    assert result.messages == ["declared output 'results/score.json' is missing"]
    assert result.steps["s"].state is StepState.SUCCESS
    assert await find_missing_files(tmp_path, ["made.txt", "nope"]) == ["nope"]
    with pytest.raises(InvalidTemplateError, match="leaves its folder"):
        await find_missing_files(tmp_path, ["../outside"])


async def test_absent_optional_actor_step_is_skipped(tmp_path: Path) -> None:
    log = RunLog()
    workflow = {
        "steps": [
            step("before", "echo before"),
            {"name": "actor", "action": None},
            step("after", "echo after"),
        ]
    }
    result = await run_workflow(workflow, rundir=tmp_path, log=log)
    assert result.success
    assert result.steps["actor"].state is StepState.SKIPPED
    assert [e.text for e in log.lines().lines] == ["before", "after"]


async def test_parameters_and_context_fill_command_placeholders(tmp_path: Path) -> None:
    log = RunLog()
    workflow = {
        "parameters": {"n": 3, "name": "from-parameters"},
        "steps": [step("s", "echo ${n} ${name} ${extra} ${missing}", "echo ${rundir}")],
    }
    result = await run_workflow(
        workflow, rundir=tmp_path, log=log, context={"extra": "more", "name": "from-context"}
    )
    assert result.success
    assert [e.text for e in log.lines().lines] == [
        "3 from-context more missing",
        str(tmp_path),
    ]


async def test_step_mapped_to_a_wrong_worker_is_refused_before_anything_runs(
    tmp_path: Path,
) -> None:
    config = parse_engine_config(
        {"workers": [{"name": "c", "type": "code"}], "workflow": [{"step": "b", "worker": "c"}]}
    )
    with pytest.raises(InvalidConfigurationError, match="container step 'b'"):
        await execute(tmp_path, step("a", "touch a.txt"), step("b", "true"), config=config)
    assert not await anyio.Path(tmp_path / "a.txt").exists()


async def test_malformed_workflow_is_refused(tmp_path: Path) -> None:
    with pytest.raises(InvalidTemplateError, match="duplicate step name 'a'"):
        await execute(tmp_path, step("a", "true"), step("a", "true"))
