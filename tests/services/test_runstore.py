"""The database run store: batched reports of many runs, never leaving a final state."""

from __future__ import annotations

import threading
from collections.abc import AsyncIterator
from typing import Any

import anyio
import pytest
from sqlalchemy import Engine, event, func, select
from sqlalchemy.exc import IntegrityError

from flowserv_async import DB
from flowserv_async._util import utc_now
from flowserv_async.db._statements import CompiledStatements
from flowserv_async.db.models import Group, Run, RunLogLine, StoredEvent, Workflow
from flowserv_async.db.runstate import NewRun
from flowserv_async.engine.job import ResultSpec
from flowserv_async.engine.log import LogEntry
from flowserv_async.engine.store import RunOutcome
from flowserv_async.errors import FlowservError
from flowserv_async.events.store import NOTIFY_KEY
from flowserv_async.services.runstore import DatabaseRunStore
from flowserv_async.states import RunState


@pytest.fixture
async def store(database: DB) -> AsyncIterator[DatabaseRunStore]:
    async with database.write_session() as session:
        session.add(Workflow(workflow_id="w", name="w", workflow_spec={}, parameters=[]))
        await session.flush()
        session.add(
            Group(
                group_id="g",
                workflow_id="w",
                name="g",
                owner_id="0" * 8,
                workflow_spec={},
                parameters=[],
            )
        )
        await session.flush()
        for i in range(40):
            session.add(Run(run_id=f"r{i}", workflow_id="w", group_id="g", state="PENDING"))
    runstore = DatabaseRunStore(database)
    await runstore.open()
    yield runstore
    await runstore.aclose()


async def states(database: DB) -> dict[str, tuple[str, list[str] | None]]:
    async with database.session() as session:
        rows = await session.execute(select(Run.run_id, Run.state, Run.messages))
        return {r.run_id: (r.state, r.messages) for r in rows}


async def test_concurrent_reports_of_many_runs_are_all_written(
    store: DatabaseRunStore, database: DB
) -> None:
    moved: dict[str, bool] = {}

    async def report(i: int) -> None:
        run_id = f"r{i}"
        moved[run_id] = await store.mark_running(run_id)
        if i % 2:
            await store.finish(run_id, RunState.ERROR, [f"failed {i}"])
        await store.append_log(run_id, [LogEntry(0, "s", "stdout", f"line {i}")])

    async with anyio.create_task_group() as tg:
        for i in range(40):
            tg.start_soon(report, i)
    # append_log returns before its lines are written; closing writes what is queued.
    await store.aclose()
    assert all(moved.values()) and len(moved) == 40
    found = await states(database)
    assert found["r0"] == ("RUNNING", None)
    assert found["r1"] == ("ERROR", ["failed 1"])
    async with database.session() as session:
        lines = (await session.scalars(select(RunLogLine.text))).all()
    assert len(lines) == 40


async def test_a_final_run_never_moves(store: DatabaseRunStore, database: DB) -> None:
    assert await store.finish("r0", RunState.CANCELED, ["stop"])
    results = await _gather(
        store.mark_running("r0"),
        store.finish("r0", RunState.ERROR, ["late"]),
        store.mark_running("r1"),
    )
    assert results == [False, False, True]
    found = await states(database)
    assert found["r0"] == ("CANCELED", ["stop"])
    assert found["r1"][0] == "RUNNING"


async def test_a_bad_report_fails_alone(
    store: DatabaseRunStore, database: DB, caplog: pytest.LogCaptureFixture
) -> None:
    # Ranked results of a group that does not exist: the ranking row breaks a foreign key.
    bad = ResultSpec(run_id="r5", workflow_id="w", group_id="nope", prefix="w/runs/r5")
    outcome: dict[str, object] = {}

    async def save_bad() -> None:
        try:
            outcome["bad"] = await store.save_results(bad, RunOutcome((), {"x": 1}), "e")
        except IntegrityError as exc:
            outcome["bad"] = exc

    async def good() -> None:
        outcome["good"] = await store.mark_running("r2")

    async with anyio.create_task_group() as tg:
        # Log lines of an unknown run are queued, not awaited: their failure is logged.
        await store.append_log("no-such-run", [LogEntry(0, None, "stdout", "x")])
        tg.start_soon(save_bad)
        tg.start_soon(good)
    assert isinstance(outcome["bad"], IntegrityError)
    assert outcome["good"] is True
    found = await states(database)
    assert found["r2"][0] == "RUNNING"
    assert found["r5"][0] == "PENDING"
    async with database.session() as session:
        assert (await session.scalars(select(RunLogLine))).all() == []
    assert "cannot store a log report" in caplog.text


async def test_after_close_reports_are_written_directly(
    store: DatabaseRunStore, database: DB
) -> None:
    await store.aclose()
    assert await store.mark_running("r3")
    assert (await states(database))["r3"][0] == "RUNNING"
    await store.open()
    with pytest.raises(FlowservError, match="already open"):
        await store.open()


async def _gather(*calls: object) -> list[object]:
    results: list[object] = [None] * len(calls)

    async def one(i: int, call: object) -> None:
        results[i] = await call  # type: ignore[misc]

    async with anyio.create_task_group() as tg:
        for i, call in enumerate(calls):
            tg.start_soon(one, i, call)
    return results


def _new_run(run_id: str, group_id: str = "g") -> NewRun:
    return NewRun(run_id, "w", group_id, [], "engine", utc_now())


async def test_runs_created_meanwhile_are_inserted_together(
    store: DatabaseRunStore, database: DB, monkeypatch: pytest.MonkeyPatch
) -> None:
    inserts: list[str] = []

    def record(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        if statement.lstrip().upper().startswith("INSERT INTO RUNS"):
            inserts.append(statement)

    # On SQLite the writer runs its compiled statements on its own connection.
    execute = CompiledStatements.execute

    def record_compiled(statements: CompiledStatements, stmt: Any, params: Any) -> Any:
        record(None, None, str(stmt))
        return execute(statements, stmt, params)

    monkeypatch.setattr(CompiledStatements, "execute", record_compiled)
    event.listen(Engine, "before_cursor_execute", record)
    try:
        # On SQLite the writer waits for this transaction (it ends before the task group
        # waits for the runs); the runs queue meanwhile.
        async with anyio.create_task_group() as tg, database.write_session():
            for i in range(20):
                tg.start_soon(store.create_run, _new_run(f"n{i}"))
            await anyio.wait_all_tasks_blocked()
    finally:
        event.remove(Engine, "before_cursor_execute", record)
    found = await states(database)
    assert all(found[f"n{i}"] == ("PENDING", None) for i in range(20))
    assert 1 <= len(inserts) <= 2
    async with database.session() as session:
        created = await session.scalars(
            select(StoredEvent.run_id).where(StoredEvent.type == "run.created")
        )
        assert sorted(created) == sorted(f"n{i}" for i in range(20))


async def test_a_run_that_cannot_be_created_fails_alone(
    store: DatabaseRunStore, database: DB
) -> None:
    outcome: dict[str, object] = {}

    async def create(key: str, run: NewRun) -> None:
        try:
            await store.create_run(run)
            outcome[key] = True
        except IntegrityError as exc:
            outcome[key] = exc

    async with anyio.create_task_group() as tg:
        tg.start_soon(create, "bad", _new_run("bad", group_id="no-such-group"))
        tg.start_soon(create, "good", _new_run("good"))
    assert isinstance(outcome["bad"], IntegrityError)
    assert outcome["good"] is True
    found = await states(database)
    assert "bad" not in found and found["good"] == ("PENDING", None)
    async with database.session() as session:
        told = await session.scalars(select(StoredEvent.run_id))
        assert "bad" not in list(told)


async def test_runs_marked_running_together_keep_their_own_process_records(
    store: DatabaseRunStore,
) -> None:
    # The records of a batch are set by the one UPDATE that moves the runs to RUNNING.
    records = {
        f"r{i}": {"mechanism": "tag", "tag": f"r{i}", "rundir": f"/runs/r{i}"} for i in range(5)
    }
    assert await store.finish("r6", RunState.CANCELED, ["gone"])
    moved: dict[str, bool] = {}

    async def report(run_id: str, record: dict[str, str] | None) -> None:
        moved[run_id] = await store.mark_running(run_id, record)

    async with anyio.create_task_group() as tg:
        for run_id, record in records.items():
            tg.start_soon(report, run_id, record)
        tg.start_soon(report, "r5", None)
        tg.start_soon(report, "r6", {"mechanism": "tag", "tag": "r6"})
    assert moved == {**dict.fromkeys(records, True), "r5": True, "r6": False}
    assert await store.leftovers([*records, "r5", "r6"]) == records


async def test_the_event_hub_is_told_on_the_event_loop_after_the_commit(
    store: DatabaseRunStore, database: DB
) -> None:
    told: list[tuple[int, str]] = []

    def notify(last: int) -> None:
        told.append((last, threading.current_thread().name))

    info = dict(database.session_factory.kw.get("info") or {})
    database.session_factory.configure(info={**info, NOTIFY_KEY: notify})
    try:
        await store.create_run(_new_run("n0"))
        assert await store.mark_running("n0")
    finally:
        database.session_factory.configure(info=info)
    loop_thread = threading.current_thread().name
    assert [thread for _, thread in told] == [loop_thread, loop_thread]
    async with database.session() as session:
        last = await session.scalar(select(func.max(StoredEvent.event_id)))
        run_events = (
            await session.scalars(select(StoredEvent.event_id).where(StoredEvent.run_id == "n0"))
        ).all()
    # Each commit told the largest id it wrote: the created run's event, then the move.
    assert [last_id for last_id, _ in told] == sorted(run_events) == [run_events[0], last]
