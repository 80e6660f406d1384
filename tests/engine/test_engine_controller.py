"""The asyncio engine on its own: runs recorded in a memory store, no database."""

from __future__ import annotations

import dataclasses
import sys
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import anyio
import pytest

from flowserv_async.controller import EngineContext, EngineLimits
from flowserv_async.engine import parse_workflow
from flowserv_async.engine.containment import cgroup_root
from flowserv_async.engine.controller import SHUTDOWN_REASON, AsyncioEngine
from flowserv_async.engine.job import RunJob
from flowserv_async.engine.memory import MemoryRunStore, StoredRun
from flowserv_async.engine.store import CANCELED_BY_USER
from flowserv_async.errors import FlowservError
from flowserv_async.states import RunState
from flowserv_async.template import ResultSchema
from flowserv_async.volume import FileSystemVolume

PY = sys.executable


@pytest.fixture
def store() -> MemoryRunStore:
    return MemoryRunStore()


@pytest.fixture
def volume(tmp_path: Path) -> FileSystemVolume:
    return FileSystemVolume(tmp_path / "store")


@pytest.fixture
async def engine(
    store: MemoryRunStore, volume: FileSystemVolume, tmp_path: Path
) -> AsyncIterator[AsyncioEngine]:
    engine = AsyncioEngine()
    limits = EngineLimits(cancel_grace=1.0, heartbeat=0.2, run_lease=1.0)
    await engine.open(EngineContext(store, volume, tmp_path / "runs", limits))
    try:
        yield engine
    finally:
        await engine.aclose()


@pytest.fixture
def job(store: MemoryRunStore, engine: AsyncioEngine) -> Callable[..., RunJob]:
    """A RunJob of commands, its run PENDING in the store."""

    def make(*commands: str, outputs: tuple[str, ...] = (), **kwargs: Any) -> RunJob:
        run_id = f"r{len(store.runs)}"
        store.add_run(run_id, engine.engine_id)
        workflow = parse_workflow(
            {"steps": [{"name": "s", "action": {"commands": list(commands)}}]}
        )
        return RunJob(
            run_id=run_id,
            workflow_id="w",
            group_id="g",
            workflow=workflow,
            context={},
            static_prefix="w/static",
            result_prefix=f"w/runs/{run_id}",
            result_files=outputs,
            **kwargs,
        )

    return make


async def run_to_end(engine: AsyncioEngine, job: RunJob) -> None:
    await engine.start(job)
    with anyio.fail_after(20):
        assert await engine.wait(job.run_id)


async def test_a_run_succeeds_with_its_files_and_log(
    engine: AsyncioEngine,
    store: MemoryRunStore,
    volume: FileSystemVolume,
    job: Any,
    tmp_path: Path,
) -> None:
    await volume.store("w/static/in.txt", b"hello")
    run = job(
        f"{PY} -c \"print('out'); open('out.txt','w').write(open('in.txt').read())\"",
        outputs=("out.txt",),
    )
    await run_to_end(engine, run)
    stored = store.runs[run.run_id]
    assert stored.history == [RunState.PENDING, RunState.RUNNING, RunState.SUCCESS]
    assert stored.files == (("out.txt", 5),)
    assert await volume.load("w/runs/r0/out.txt") == b"hello"
    assert [e.text for e in stored.log if e.stream == "stdout"] == ["out"]
    assert not engine.is_active(run.run_id)
    assert not await anyio.Path(tmp_path, "runs", run.run_id).exists()


class SlowLogStore(MemoryRunStore):
    """Slow to store log lines, except the run's last ones (the test's script writes 49)."""

    async def append_log(self, run_id: str, entries: Any, keep_from: int = 0) -> None:
        if entries[-1].text != "49":
            # Likely still in progress when the run ends and stores its last lines.
            await anyio.sleep(1.0)
        await super().append_log(run_id, entries, keep_from)


async def test_log_lines_of_running_runs_are_stored_while_they_run_and_in_order(
    volume: FileSystemVolume, tmp_path: Path
) -> None:
    store = SlowLogStore()
    engine = AsyncioEngine()
    limits = EngineLimits(cancel_grace=1.0, heartbeat=0.2, run_lease=1.0)
    await engine.open(EngineContext(store, volume, tmp_path / "runs", limits))
    script = (
        "import sys, time; print(sys.argv[1], flush=True); time.sleep(1.5)\n"
        "for i in range(50): print(i, flush=True); time.sleep(0.01)"
    )
    await anyio.Path(tmp_path, "script.py").write_text(script)
    jobs = []
    for run_id in ("a", "b"):
        store.add_run(run_id, engine.engine_id)
        workflow = parse_workflow(
            {
                "steps": [
                    {"name": "s", "action": {"commands": [f"{PY} {tmp_path}/script.py {run_id}"]}}
                ]
            }
        )
        jobs.append(RunJob(run_id, "w", "g", workflow, {}, "w/static", f"w/runs/{run_id}"))
    try:
        for run in jobs:
            await engine.start(run)
        with anyio.fail_after(10):
            while not (logged := [run.run_id for run in jobs if store.runs[run.run_id].log]):
                await anyio.sleep(0.05)
        assert engine.is_active(logged[0])
        with anyio.fail_after(20):
            for run in jobs:
                await engine.wait(run.run_id)  # False once it ended meanwhile
    finally:
        await engine.aclose()
    for run in jobs:
        stored = store.runs[run.run_id]
        assert stored.state == RunState.SUCCESS
        assert [e.text for e in stored.log] == [run.run_id, *map(str, range(50))]
        assert [e.pos for e in stored.log] == list(range(51))


async def test_a_failing_step_makes_the_run_error(
    engine: AsyncioEngine, store: MemoryRunStore, volume: FileSystemVolume, job: Any
) -> None:
    run = job(f'{PY} -c "import sys; sys.exit(3)"', outputs=("out.txt",))
    await run_to_end(engine, run)
    stored = store.runs[run.run_id]
    assert stored.state == RunState.ERROR and stored.messages
    assert await volume.walk("w/runs") == []


async def test_a_missing_result_file_makes_the_run_error_and_stores_nothing(
    engine: AsyncioEngine, store: MemoryRunStore, volume: FileSystemVolume, job: Any
) -> None:
    run = job("true", outputs=("missing.txt",))
    await run_to_end(engine, run)
    stored = store.runs[run.run_id]
    assert stored.state == RunState.ERROR
    assert stored.messages == ["output file 'missing.txt' is missing"]
    assert await volume.walk("w/runs") == []


async def test_a_lost_input_file_is_named_by_its_run_folder_path_not_its_storage_key(
    engine: AsyncioEngine,
    store: MemoryRunStore,
    volume: FileSystemVolume,
    job: Any,
    tmp_path: Path,
) -> None:
    await volume.store("w/g/uploads/kept", b"kept")
    inputs = (("w/g/uploads/kept", "data/kept.txt"), ("w/g/uploads/lost", "data/names.txt"))
    run = job("true", input_files=inputs)
    await run_to_end(engine, run)
    stored = store.runs[run.run_id]
    assert stored.state == RunState.ERROR
    assert stored.messages == ["engine failure: unknown file 'data/names.txt'"]
    assert not any("uploads" in message for message in stored.messages)
    assert await volume.walk("w/runs") == []
    assert not await anyio.Path(tmp_path / "runs" / run.run_id).exists()


async def test_results_that_break_the_schema_make_the_run_error(
    engine: AsyncioEngine, store: MemoryRunStore, volume: FileSystemVolume, job: Any
) -> None:
    schema = ResultSchema.from_dict(
        {"file": "r.json", "schema": [{"name": "score", "label": "Score", "dtype": "float"}]}
    )
    run = job(
        f"{PY} -c \"open('r.json','w').write('{{\\\"score\\\": \\\"high\\\"}}')\"",
        outputs=("r.json",),
        result_schema=schema,
    )
    await run_to_end(engine, run)
    stored = store.runs[run.run_id]
    assert stored.state == RunState.ERROR and "score" in stored.messages[0]
    assert await volume.walk("w/runs") == []


async def test_cancel_records_the_reason_once_the_step_is_gone(
    engine: AsyncioEngine, store: MemoryRunStore, job: Any
) -> None:
    run = job("sleep 30")
    await engine.start(run)
    with anyio.fail_after(10):
        while store.runs[run.run_id].state != RunState.RUNNING:
            await anyio.sleep(0.01)
        await engine.cancel_run(run.run_id, reason="enough")
    stored = store.runs[run.run_id]
    assert stored.state == RunState.CANCELED and stored.messages == ["enough"]
    assert not engine.is_active(run.run_id)
    await engine.cancel_run(run.run_id)  # no longer known: a no-op


async def test_a_run_that_ended_while_queued_never_starts(
    engine: AsyncioEngine, store: MemoryRunStore, job: Any
) -> None:
    run = job("touch started")
    await store.finish(run.run_id, RunState.CANCELED, [CANCELED_BY_USER])
    await run_to_end(engine, run)
    assert store.runs[run.run_id].history == [RunState.PENDING, RunState.CANCELED]


async def test_close_cancels_active_runs_and_refuses_new_ones(
    store: MemoryRunStore, volume: FileSystemVolume, tmp_path: Path
) -> None:
    engine = AsyncioEngine()
    await engine.open(EngineContext(store, volume, tmp_path / "runs", EngineLimits(cancel_grace=1)))
    store.add_run("r", engine.engine_id)
    job = RunJob(
        "r",
        "w",
        "g",
        parse_workflow({"steps": [{"name": "s", "action": {"commands": ["sleep 30"]}}]}),
        {},
        "w/static",
        "w/runs/r",
    )
    await engine.start(job)
    with anyio.fail_after(10):
        while store.runs["r"].state != RunState.RUNNING:
            await anyio.sleep(0.01)
        await engine.aclose()
    assert store.runs["r"].state == RunState.CANCELED
    assert store.runs["r"].messages == [SHUTDOWN_REASON]
    with pytest.raises(FlowservError, match="closed"):
        await engine.start(job)
    await engine.open(EngineContext(store, volume, tmp_path / "runs", EngineLimits()))
    with pytest.raises(FlowservError, match="already open"):
        await engine.open(EngineContext(store, volume, tmp_path / "runs", EngineLimits()))
    store.add_run("again", engine.engine_id)
    quick = parse_workflow({"steps": [{"name": "s", "action": {"commands": ["true"]}}]})
    await run_to_end(engine, dataclasses.replace(job, run_id="again", workflow=quick))
    assert store.runs["again"].state == RunState.SUCCESS
    await engine.aclose()


async def test_runs_of_a_silent_engine_fail_and_own_runs_get_heartbeats(
    store: MemoryRunStore, volume: FileSystemVolume, tmp_path: Path
) -> None:
    orphan = store.add_run("orphan", engine_id="dead")
    orphan.heartbeat_at -= 60
    engine = AsyncioEngine()
    limits = EngineLimits(heartbeat=0.05, run_lease=1.0)
    await engine.open(EngineContext(store, volume, tmp_path / "runs", limits))
    try:
        assert orphan.state == RunState.ERROR and "interrupted" in orphan.messages[0]
        mine = store.add_run("mine", engine_id=engine.engine_id)
        job = RunJob(
            "mine",
            "w",
            "g",
            parse_workflow({"steps": [{"name": "s", "action": {"commands": ["sleep 30"]}}]}),
            {},
            "w/static",
            "w/runs/mine",
        )
        await engine.start(job)
        with anyio.fail_after(10):
            while mine.state != RunState.RUNNING:
                await anyio.sleep(0.01)
            mine.heartbeat_at -= 60
            silent_since = mine.heartbeat_at
            while mine.heartbeat_at == silent_since:
                await anyio.sleep(0.02)
        # Refreshed by the heartbeat, so the engine's own sweep left it running.
        assert mine.heartbeat_at > silent_since + 59
        assert mine.state == RunState.RUNNING
    finally:
        await engine.aclose()


class FlakyStore(MemoryRunStore):
    """A memory store whose first ``failures`` final-state writes raise."""

    def __init__(self, failures: int) -> None:
        super().__init__()
        self.failures = failures
        self.attempts = 0

    async def finish(self, run_id: str, state: RunState, messages: Any = ()) -> bool:
        self.attempts += 1
        if self.attempts <= self.failures:
            raise ConnectionError("database unreachable")
        return await super().finish(run_id, state, messages)


async def run_one_command(
    store: MemoryRunStore,
    volume: FileSystemVolume,
    tmp_path: Path,
    command: str,
    limits: EngineLimits,
) -> StoredRun:
    """Run ``command`` as run ``r`` on an engine of its own; return the stored run."""
    engine = AsyncioEngine()
    await engine.open(EngineContext(store, volume, tmp_path / "runs", limits))
    try:
        stored = store.add_run("r", engine.engine_id)
        workflow = parse_workflow({"steps": [{"name": "s", "action": {"commands": [command]}}]})
        await run_to_end(engine, RunJob("r", "w", "g", workflow, {}, "w/static", "w/runs/r"))
        return stored
    finally:
        await engine.aclose()


async def test_a_final_state_that_fails_to_write_is_written_again_until_it_lands(
    volume: FileSystemVolume, tmp_path: Path
) -> None:
    store = FlakyStore(failures=4)
    stored = await run_one_command(store, volume, tmp_path, "false", EngineLimits())
    assert stored.state == RunState.ERROR
    assert store.attempts == 5


async def test_an_own_run_the_engine_no_longer_tracks_is_failed_by_its_sweep(
    engine: AsyncioEngine, store: MemoryRunStore
) -> None:
    # Active in the store for this engine, which does not execute it: a ghost.
    lost = store.add_run("lost", engine_id=engine.engine_id)
    lost.state = RunState.RUNNING
    lost.heartbeat_at -= 60
    with anyio.fail_after(10):
        while lost.state == RunState.RUNNING:
            await anyio.sleep(0.02)
    assert lost.state == RunState.ERROR
    assert "interrupted" in lost.messages[0]


async def test_an_engine_failure_names_paths_relative_to_the_run_folder(
    engine: AsyncioEngine, store: MemoryRunStore, job: Any, tmp_path: Path
) -> None:
    # The second generated file needs a folder where the first one is a file.
    run = job("true", generated_files=(("sub", b"x"), ("sub/file", b"y")))
    await run_to_end(engine, run)
    stored = store.runs[run.run_id]
    assert stored.state == RunState.ERROR
    assert stored.messages[0].startswith("engine failure: ")
    assert "'sub'" in stored.messages[0]
    assert str(tmp_path) not in stored.messages[0]


@pytest.mark.parametrize(
    ("choice", "expected"), [("tag", "tag"), ("auto", "cgroup" if cgroup_root() else "tag")]
)
async def test_a_run_records_how_its_processes_are_contained(
    store: MemoryRunStore, volume: FileSystemVolume, tmp_path: Path, choice: str, expected: str
) -> None:
    limits = EngineLimits(containment=choice)
    stored = await run_one_command(store, volume, tmp_path, "true", limits)
    assert stored.state == RunState.SUCCESS
    assert stored.processes is not None
    assert stored.processes["mechanism"] == expected
    assert stored.processes["tag"] == "r"
    assert stored.processes["rundir"] == str(tmp_path / "runs" / "r")


def test_an_engine_closed_in_one_event_loop_opens_and_stores_logs_in_another(
    tmp_path: Path,
) -> None:
    store = MemoryRunStore()
    engine = AsyncioEngine()
    context = EngineContext(
        store, FileSystemVolume(tmp_path / "store"), tmp_path / "runs", EngineLimits()
    )

    async def one_run(run_id: str) -> None:
        await engine.open(context)
        try:
            store.add_run(run_id, engine.engine_id)
            workflow = parse_workflow(
                {"steps": [{"name": "s", "action": {"commands": ["echo out"]}}]}
            )
            await run_to_end(engine, RunJob(run_id, "w", "g", workflow, {}, "w/static", "w/r"))
        finally:
            await engine.aclose()

    for run_id in ("first", "second"):
        anyio.run(one_run, run_id)
        assert store.runs[run_id].state == RunState.SUCCESS
        assert [entry.text for entry in store.runs[run_id].log] == ["out"]
