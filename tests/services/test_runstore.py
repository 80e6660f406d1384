"""The database run store: batched reports of many runs, never leaving a final state."""

from __future__ import annotations

from collections.abc import AsyncIterator

import anyio
import pytest
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError

from flowserv_async import DB
from flowserv_async.db.models import Group, Run, RunLogLine, Workflow
from flowserv_async.engine.job import ResultSpec
from flowserv_async.engine.log import LogEntry
from flowserv_async.engine.store import RunOutcome
from flowserv_async.errors import FlowservError
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
