"""LocalAPIFactory lifespan, sessions, and engine selection."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import anyio
import pytest

from flowserv_async import DB, LocalAPIFactory, WorkflowController, init_backend
from flowserv_async.controller import EngineContext
from flowserv_async.engine import parse_workflow
from flowserv_async.engine.job import RunJob
from flowserv_async.errors import (
    FlowservError,
    InvalidConfigurationError,
    MissingConfigurationError,
    UnknownRunError,
)
from flowserv_async.local import FactoryState


class RecordingEngine(WorkflowController):
    """A controller that records what the factory asks of it."""

    def __init__(self, service: Any = None) -> None:
        super().__init__(service)
        self.calls: list[str] = []

    async def open(self, context: EngineContext) -> None:
        self.calls.append("open")

    async def aclose(self) -> None:
        self.calls.append("aclose")

    async def start(self, job: RunJob) -> None:
        self.calls.append(f"exec:{job.run_id}")

    async def cancel_run(self, run_id: str, reason: str | None = None) -> None:
        self.calls.append(f"cancel:{run_id}")


def test_construction_does_no_io(tmp_path: Path) -> None:
    LocalAPIFactory(env={"FLOWSERV_API_DIR": str(tmp_path / "never")})
    assert not (tmp_path / "never").exists()


def test_bad_configuration_fails_at_construction() -> None:
    with pytest.raises(InvalidConfigurationError, match="FLOWSERV_AUTH_TTL"):
        LocalAPIFactory(env={"FLOWSERV_AUTH_TTL": "soon"})


async def test_lifespan_opens_and_closes_in_order(tmp_path: Path) -> None:
    engine = RecordingEngine()
    factory = LocalAPIFactory(env={"FLOWSERV_API_DIR": str(tmp_path)}, engine=engine)
    async with anyio.create_task_group() as tg:
        for _ in range(5):
            tg.start_soon(factory.open)
    assert factory.is_open and engine.calls == ["open"]
    assert await anyio.Path(tmp_path / "flowserv.db").exists()
    job = RunJob(
        "r1",
        "w1",
        None,
        parse_workflow({"steps": [{"name": "s", "action": {"commands": ["true"]}}]}),
        {},
        "w1/static",
        "w1/runs/r1",
    )
    assert await factory.exec_workflow(job, None, {}, None) == ("PENDING", factory.volume)
    await factory.cancel_run("r1")
    await factory.aclose()
    await factory.aclose()
    assert engine.calls == ["open", "exec:r1", "cancel:r1", "aclose"]
    with pytest.raises(FlowservError, match="closed"):
        factory()
    with pytest.raises(FlowservError, match="closed"):
        await factory.open()


async def test_one_off_session_opens_and_releases_the_factory(tmp_path: Path) -> None:
    factory = LocalAPIFactory(env={"FLOWSERV_API_DIR": str(tmp_path)})
    async with factory() as api:
        await api.users().register_user("alice", "pw")
        assert factory.is_open
    assert not factory.is_open
    async with factory() as api:
        assert (await api.users().list_users())["users"][0]["username"] == "alice"


async def test_sessions_after_explicit_open_keep_it_open(
    make_factory: Callable[..., LocalAPIFactory],
) -> None:
    factory = make_factory()
    async with factory:
        async with factory() as api:
            await api.users().list_users()
        assert factory.is_open


async def test_given_database_stays_open_after_close(
    make_factory: Callable[..., LocalAPIFactory], database: DB
) -> None:
    factory = make_factory()
    async with factory:
        pass
    async with database.session() as s:
        from sqlalchemy import text

        assert (await s.execute(text("SELECT 1"))).scalar_one() == 1


async def test_session_manager_is_single_use(factory: LocalAPIFactory) -> None:
    manager = factory()
    async with manager:
        pass
    with pytest.raises(FlowservError, match="once"):
        async with manager:
            pass


def test_init_backend_loads_the_configured_class() -> None:
    factory = LocalAPIFactory(
        env={"FLOWSERV_BACKEND_MODULE": __name__, "FLOWSERV_BACKEND_CLASS": "RecordingEngine"}
    )
    engine = init_backend(factory)
    assert isinstance(engine, RecordingEngine) and engine.service is factory


@pytest.mark.parametrize(
    ("env", "error"),
    [
        ({"FLOWSERV_BACKEND_MODULE": __name__}, MissingConfigurationError),
        ({"FLOWSERV_BACKEND_CLASS": "RecordingEngine"}, MissingConfigurationError),
        (
            {"FLOWSERV_BACKEND_MODULE": "no.such.module", "FLOWSERV_BACKEND_CLASS": "X"},
            InvalidConfigurationError,
        ),
        (
            {"FLOWSERV_BACKEND_MODULE": __name__, "FLOWSERV_BACKEND_CLASS": "Missing"},
            InvalidConfigurationError,
        ),
        (
            {"FLOWSERV_BACKEND_MODULE": "pathlib", "FLOWSERV_BACKEND_CLASS": "PurePath"},
            InvalidConfigurationError,
        ),
    ],
)
def test_init_backend_errors(env: dict[str, str], error: type[Exception]) -> None:
    with pytest.raises(error, match=r"FLOWSERV_BACKEND|cannot load|not a WorkflowController"):
        init_backend(LocalAPIFactory(env=env))


async def test_failed_open_leaves_nothing_open(tmp_path: Path) -> None:
    env = {
        "FLOWSERV_API_DIR": str(tmp_path),
        "FLOWSERV_BACKEND_MODULE": __name__,
        "FLOWSERV_BACKEND_CLASS": "Missing",
    }
    factory = LocalAPIFactory(env=env)
    with pytest.raises(InvalidConfigurationError):
        await factory.open()
    assert not factory.is_open


async def test_calls_on_a_never_opened_factory_do_not_keep_it_open(tmp_path: Path) -> None:
    engine = RecordingEngine()
    factory = LocalAPIFactory(env={"FLOWSERV_API_DIR": str(tmp_path)}, engine=engine)
    job = RunJob(
        "r1",
        "w1",
        None,
        parse_workflow({"steps": [{"name": "s", "action": {"commands": ["true"]}}]}),
        {},
        "w1/static",
        "w1/runs/r1",
    )
    with pytest.raises(FlowservError, match="new, not open"):
        await factory.exec_workflow(job, None, {}, None)
    with pytest.raises(TypeError, match="RunJob"):
        await factory.exec_workflow("r1", None, {}, None)
    await factory.cancel_run("r1")
    with pytest.raises(UnknownRunError):
        await factory.wait_run("r1", timeout=5)
    assert factory.state == FactoryState.NEW
    assert engine.calls == ["open", "cancel:r1", "aclose", "open", "aclose"]


# -- Admission: at most as many sessions at work as the pool has connections ----------


@asynccontextmanager
async def all_slots_but_one(factory: LocalAPIFactory) -> AsyncIterator[None]:
    """Hold every admission slot but one (as other sessions would), then free them."""
    admission = factory.db.admission
    limit = admission.value
    for _ in range(limit - 1):
        await admission.acquire()
    try:
        with anyio.fail_after(30):  # a deadlock guard: the test's sessions need the slot
            yield
    finally:
        for _ in range(limit - 1):
            admission.release()
    assert admission.value == limit


async def test_admission_bounds_the_sessions_at_work(factory: LocalAPIFactory) -> None:
    admission = factory.db.admission
    limit = admission.value
    inside = most = 0

    async def one() -> None:
        nonlocal inside, most
        async with factory() as api:
            inside += 1
            most = max(most, inside)
            await api.users().list_users()
            for _ in range(3):
                await anyio.lowlevel.checkpoint()
            inside -= 1

    async with anyio.create_task_group() as tg:
        for _ in range(3 * limit):
            tg.start_soon(one)
    # Without the admission every session would have entered before the first finished.
    assert most == limit
    assert admission.value == limit


async def test_a_session_inside_a_session_needs_no_second_slot(factory: LocalAPIFactory) -> None:
    async with all_slots_but_one(factory), factory() as outer:
        assert factory.db.admission.value == 0
        async with factory() as inner:
            await inner.users().list_users()
        await outer.users().list_users()


async def test_a_commit_inside_a_session_gives_its_slot_back(factory: LocalAPIFactory) -> None:
    committed, other_done = anyio.Event(), anyio.Event()

    async def waits_for_the_engine() -> None:
        async with factory() as api:
            await api.users().list_users()
            await api.users().ctx.commit()
            committed.set()
            await other_done.wait()

    async def other() -> None:
        await committed.wait()
        async with factory() as api:
            await api.users().list_users()
        other_done.set()

    async with all_slots_but_one(factory), anyio.create_task_group() as tg:
        tg.start_soon(waits_for_the_engine)
        tg.start_soon(other)


async def test_every_way_out_of_a_session_gives_its_slot_back(factory: LocalAPIFactory) -> None:
    admission = factory.db.admission
    limit = admission.value
    with pytest.raises(RuntimeError, match="body"):
        async with factory():
            raise RuntimeError("body")
    assert admission.value == limit
    with pytest.raises(FlowservError):
        async with factory() as api:
            await api.users().whoami_user("no-such-token")
    assert admission.value == limit
    # Cancelled while waiting for a slot: nothing held, nothing counted.
    for _ in range(limit):
        await admission.acquire()
    with anyio.move_on_after(0.05):
        async with factory():
            pytest.fail("admitted without a free slot")
    for _ in range(limit):
        admission.release()
    assert admission.value == limit
    assert factory._active_sessions == 0


# -- Reads: on a connection of their own until the session is used ---------------------


def checked_out(factory: LocalAPIFactory) -> int:
    """Connections of the factory's pool in use (on PostgreSQL the event hub holds one)."""
    pool: Any = factory.db.engine.sync_engine.pool
    return int(pool.checkedout())


async def test_a_read_after_a_write_sees_the_sessions_own_write(
    factory: LocalAPIFactory,
) -> None:
    async with factory() as api:
        await api.users().register_user("alice", "pw")
    before = checked_out(factory)
    async with factory() as api:
        token = (await api.users().login_user("alice", "pw"))["token"]
        # Not committed yet: only a read in the session's transaction finds the token.
        assert (await api.users().whoami_user(token))["username"] == "alice"
    assert checked_out(factory) == before


async def test_reads_give_their_connection_back_on_every_way_out(
    factory: LocalAPIFactory,
) -> None:
    before = checked_out(factory)
    async with factory() as api:
        with pytest.raises(UnknownRunError):
            await api.runs().get_run("no-such-run")
        assert checked_out(factory) == before
        with anyio.CancelScope() as scope:
            scope.cancel()
            await api.runs().get_run("no-such-run")
        assert scope.cancelled_caught
        assert checked_out(factory) == before
    with pytest.raises(UnknownRunError):
        await factory.wait_run("no-such-run")
    assert checked_out(factory) == before
