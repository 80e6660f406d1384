"""The database run queue: several service processes on one PostgreSQL database.

Service processes are real subprocesses (``service.py``), each with its own
LocalAPIFactory on the test's schema; their steps append to files in ``tmp_path``, so
the test counts how often each run was executed.
"""

from __future__ import annotations

import json
import signal
import sys
from collections import Counter
from collections.abc import AsyncIterator, Callable
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anyio
import psutil
import pytest
from anyio.abc import Process
from anyio.streams.buffered import BufferedByteReceiveStream
from runs_helpers import install, step
from sqlalchemy import func, select

from flowserv_async import DB, LocalAPIFactory
from flowserv_async.db.models import QueuedRun, Run, Workflow
from flowserv_async.errors import InvalidConfigurationError, UnknownParameterError
from flowserv_async.states import ACTIVE_STATES

PY = sys.executable
SERVICE = Path(__file__).with_name("service.py")
# Short heartbeats and lease: a killed process's runs fail within about a second.
SETTINGS = {
    "FLOWSERV_MAX_CONCURRENT_RUNS": "4",
    "FLOWSERV_HEARTBEAT": "0.2",
    "FLOWSERV_RUN_LEASE": "1",
    "FLOWSERV_CANCEL_GRACE": "1",
}
# Factories of the test process: open access; QUEUED ones use the database run queue.
OPEN = {"FLOWSERV_AUTH": "open"}
QUEUED = {**OPEN, "FLOWSERV_RUN_QUEUE": "database"}
# Each step (a shell) notes ``tag pid`` when it starts and ``tag`` when it ends; ``$$$$``
# is the shell's ``$$`` once the engine filled the placeholders.
STEP = "echo ${tag} $$$$ >> {folder}/started; sleep ${pause}; echo ${tag} >> {folder}/ended"


@pytest.fixture
def database(pg: DB) -> DB:
    """The suite's ``make_factory`` (conftest) makes this module's factories on ``pg``."""
    return pg


@pytest.fixture
async def group_id(make_factory: Callable[..., LocalAPIFactory], tmp_path: Path) -> str:
    """A group of a workflow whose one step is :data:`STEP` (installed in memory mode)."""
    factory = make_factory(OPEN)
    command = STEP.replace("{folder}", str(tmp_path))
    parameters = [{"name": "tag", "dtype": "string"}, {"name": "pause", "dtype": "float"}]
    async with factory:
        _, group = await install(factory, tmp_path / "wf", [step("s", command)], parameters)
    return group


@dataclass
class Service:
    """A service process: its engine id and its pipes."""

    process: Process
    output: BufferedByteReceiveStream
    engine_id: str = ""

    async def read(self) -> dict[str, Any]:
        doc: dict[str, Any] = json.loads(await self.output.receive_until(b"\n", 1 << 20))
        return doc

    async def start(self, group_id: str, count: int, prefix: str, pause: float) -> list[str]:
        """Start runs in this process; their ids."""
        assert self.process.stdin is not None
        await self.process.stdin.send(f"start {group_id} {count} {prefix} {pause}\n".encode())
        started: list[str] = (await self.read())["started"]
        return started


@asynccontextmanager
async def services(pg: DB, basedir: Path, count: int) -> AsyncIterator[list[Service]]:
    """``count`` service processes on the test's schema; stopped (or killed) at the end."""
    schema = pg.connect_args["server_settings"]["search_path"]
    url = pg.url.render_as_string(hide_password=False)
    settings = [f"{k}={v}" for k, v in SETTINGS.items()]
    command = [PY, str(SERVICE), url, schema, str(basedir), *settings]
    async with AsyncExitStack() as stack:
        started = []
        for _ in range(count):
            process = await stack.enter_async_context(await anyio.open_process(command))
            stack.push_async_callback(_stop, process)
            assert process.stdout is not None
            started.append(Service(process, BufferedByteReceiveStream(process.stdout)))
        with anyio.fail_after(30):
            for service in started:
                service.engine_id = (await service.read())["ready"]
        yield started


async def _stop(process: Process) -> None:
    """Close the process's input (it closes its factory and exits); kill it if it hangs."""
    with anyio.CancelScope(shield=True):
        if process.returncode is None:
            assert process.stdin is not None
            await process.stdin.aclose()
            with anyio.move_on_after(20):
                await process.wait()
            if process.returncode is None:
                process.kill()
                await process.wait()


async def runs_of(pg: DB) -> dict[str, Run]:
    """Every run, by id, as committed now."""
    async with pg.session() as session:
        return {r.run_id: r for r in (await session.scalars(select(Run))).all()}


async def wait_until_all_final(pg: DB, count: int) -> dict[str, Run]:
    """Wait until ``count`` runs exist and none is active."""
    with anyio.fail_after(50):
        while True:
            runs = await runs_of(pg)
            if len(runs) == count and all(r.state not in ACTIVE_STATES for r in runs.values()):
                return runs
            await anyio.sleep(0.1)


async def queued(pg: DB) -> int:
    async with pg.session() as session:
        return int(await session.scalar(select(func.count()).select_from(QueuedRun)) or 0)


async def lines(path: Path) -> list[str]:
    if not await anyio.Path(path).exists():
        return []
    return (await anyio.Path(path).read_text()).split()


def tag_of(run: Run) -> str:
    return str(next(a["value"] for a in run.arguments if a["name"] == "tag"))


async def started_pid(folder: Path, tag: str) -> int:
    """The pid of the step of the run tagged ``tag``, once it runs."""
    with anyio.fail_after(30):
        while True:
            words = await lines(folder / "started")
            pids = dict(zip(words[::2], words[1::2], strict=True))
            if tag in pids:
                return int(pids[tag])
            await anyio.sleep(0.05)


def alive(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


async def test_three_processes_execute_90_runs_each_exactly_once(
    pg: DB, basedir: Path, group_id: str, tmp_path: Path
) -> None:
    async with services(pg, basedir, 3) as procs:
        async with anyio.create_task_group() as tg:
            for index, service in enumerate(procs):
                tg.start_soon(service.start, group_id, 30, f"p{index}", 0.05)
        runs = await wait_until_all_final(pg, 90)
    assert {(r.state, tuple(r.messages or ())) for r in runs.values()} == {("SUCCESS", ())}
    ended = Counter(await lines(tmp_path / "ended"))
    assert ended == Counter({tag_of(r): 1 for r in runs.values()})
    assert len(ended) == 90
    # Every process took runs from the shared queue, and none is left in it.
    assert {r.engine_id for r in runs.values()} == {s.engine_id for s in procs}
    assert await queued(pg) == 0


async def test_a_killed_process_loses_no_run(
    pg: DB, basedir: Path, group_id: str, tmp_path: Path
) -> None:
    async with services(pg, basedir, 3) as procs:
        victim = procs[0]
        created: dict[int, list[str]] = {}

        async def start(index: int) -> None:
            created[index] = await procs[index].start(group_id, 30, f"p{index}", 0.5)

        async with anyio.create_task_group() as tg:
            for index in range(3):
                tg.start_soon(start, index)
        with anyio.fail_after(30):
            while not any(
                r.engine_id == victim.engine_id and r.state == "RUNNING"
                for r in (await runs_of(pg)).values()
            ):
                await anyio.sleep(0.02)
        victim.process.send_signal(signal.SIGKILL)
        await victim.process.wait()
        runs = await wait_until_all_final(pg, 90)
    by_victim = {i: r for i, r in runs.items() if r.engine_id == victim.engine_id}
    # The runs it had started fail after the lease; none is run a second time.
    assert by_victim
    assert {r.state for r in by_victim.values()} <= {"ERROR", "SUCCESS"}
    interrupted = [r for r in by_victim.values() if r.state == "ERROR"]
    assert interrupted
    assert all("interrupted" in r.messages[0] for r in interrupted)
    # Every other run, also those the victim created but had not started, succeeded.
    others = [r for i, r in runs.items() if i not in by_victim]
    assert {r.state for r in others} == {"SUCCESS"}
    assert set(created[0]) - set(by_victim)
    ended = Counter(await lines(tmp_path / "ended"))
    assert all(ended[tag_of(r)] == 1 for r in others)
    assert max(ended.values()) == 1
    assert await queued(pg) == 0


async def test_cancel_and_wait_reach_the_process_that_executes_the_run(
    pg: DB,
    basedir: Path,
    group_id: str,
    tmp_path: Path,
    make_factory: Callable[..., LocalAPIFactory],
) -> None:
    async with services(pg, basedir, 1) as (service,):
        (long,) = await service.start(group_id, 1, "long", 60)
        (short,) = await service.start(group_id, 1, "short", 1)
        pid = await started_pid(tmp_path, "long-0")
        await started_pid(tmp_path, "short-0")
        # Opened once both runs are taken: this process executes neither.
        factory = make_factory({**QUEUED, **SETTINGS})
        await factory.open()
        async with factory() as api:
            handle = await api.runs().cancel_run(long, reason="enough")
            assert not await anyio.to_thread.run_sync(alive, pid)
        assert handle["state"] == "CANCELED"
        assert handle["messages"] == ["enough"]
        done = await factory.wait_run(short, timeout=30)
        assert done["state"] == "SUCCESS"
        runs = await runs_of(pg)
        assert runs[long].engine_id == runs[short].engine_id == service.engine_id
    assert await lines(tmp_path / "ended") == ["short-0"]


async def test_deleting_a_group_stops_its_runs_in_another_process(
    pg: DB,
    basedir: Path,
    group_id: str,
    tmp_path: Path,
    make_factory: Callable[..., LocalAPIFactory],
) -> None:
    async with services(pg, basedir, 1) as (service,):
        await service.start(group_id, 1, "long", 60)
        pid = await started_pid(tmp_path, "long-0")
        factory = make_factory({**QUEUED, **SETTINGS})
        await factory.open()
        async with factory() as api:
            await api.groups().delete_group(group_id)
        with anyio.fail_after(20):
            while await anyio.to_thread.run_sync(alive, pid):
                await anyio.sleep(0.05)
        assert await runs_of(pg) == {}
    assert await lines(tmp_path / "ended") == []


async def test_a_queued_run_is_cancelled_in_the_queue_and_never_runs(
    pg: DB, group_id: str, tmp_path: Path, make_factory: Callable[..., LocalAPIFactory]
) -> None:
    factory = make_factory({**QUEUED, **SETTINGS, "FLOWSERV_MAX_CONCURRENT_RUNS": "1"})
    await factory.open()
    async with factory() as api:
        first = await api.runs().start_run(
            group_id, [{"name": "tag", "value": "a"}, {"name": "pause", "value": 60}]
        )
        second = await api.runs().start_run(
            group_id, [{"name": "tag", "value": "b"}, {"name": "pause", "value": 0}]
        )
    await started_pid(tmp_path, "a")
    async with factory() as api:
        assert (await api.runs().get_run(second["id"]))["state"] == "PENDING"
        handle = await api.runs().cancel_run(second["id"], reason="not now")
        assert handle["state"] == "CANCELED" and handle["messages"] == ["not now"]
        await api.runs().cancel_run(first["id"])
    assert await queued(pg) == 0
    assert [w for w in await lines(tmp_path / "started") if not w.isdigit()] == ["a"]


async def test_bad_input_leaves_no_run_and_nothing_queued(
    pg: DB, group_id: str, make_factory: Callable[..., LocalAPIFactory]
) -> None:
    factory = make_factory(QUEUED)
    await factory.open()
    with pytest.raises(UnknownParameterError):
        async with factory() as api:
            await api.runs().start_run(group_id, [{"name": "nope", "value": 1}])
    assert await runs_of(pg) == {}
    assert await queued(pg) == 0


async def test_a_queued_run_that_cannot_be_read_becomes_error(
    pg: DB, group_id: str, make_factory: Callable[..., LocalAPIFactory]
) -> None:
    async with pg.write_session() as session:
        workflow_id = await session.scalar(select(Workflow.workflow_id))
        session.add(
            Run(run_id="r" * 32, workflow_id=workflow_id, group_id=group_id, state="PENDING")
        )
        await session.flush()
        session.add(QueuedRun(run_id="r" * 32, job=b"\x80\x05cos\nsystem\n."))
    factory = make_factory(QUEUED)
    await factory.open()
    handle = await factory.wait_run("r" * 32, timeout=30)
    assert handle["state"] == "ERROR"
    assert handle["messages"] == ["cannot read a queued run: a queued run may not name os.system"]
    assert await queued(pg) == 0


async def test_the_database_queue_needs_postgresql(tmp_path: Path) -> None:
    env = {"FLOWSERV_API_DIR": str(tmp_path), "FLOWSERV_RUN_QUEUE": "database"}
    factory = LocalAPIFactory(env=env)
    with pytest.raises(
        InvalidConfigurationError, match="FLOWSERV_RUN_QUEUE=database needs PostgreSQL"
    ):
        await factory.open()
    assert not factory.is_open
    await factory.aclose()


async def test_a_one_off_session_queues_runs_that_a_lifespan_executes(
    pg: DB, group_id: str, make_factory: Callable[..., LocalAPIFactory]
) -> None:
    # Opened for one session, a factory closes right after it: it claims nothing.
    async with make_factory(QUEUED)() as api:
        args = [{"name": "tag", "value": "a"}, {"name": "pause", "value": 0}]
        run_id = (await api.runs().start_run(group_id, args))["id"]
    run = (await runs_of(pg))[run_id]
    assert (run.state, run.engine_id) == ("PENDING", None)
    assert await queued(pg) == 1
    service = make_factory(QUEUED)
    await service.open()
    assert (await service.wait_run(run_id, timeout=30))["state"] == "SUCCESS"
    assert (await runs_of(pg))[run_id].engine_id == service.engine.engine_id
