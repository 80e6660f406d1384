"""Statements compiled once on the SQLite writer's connection behave like the session's."""

from __future__ import annotations

import threading
from collections.abc import AsyncIterator, Sized
from datetime import UTC, datetime
from pathlib import Path
from typing import cast as typed

import anyio
import anyio.to_thread
import pytest
from dbutil import backend_database
from sqlalchemy import Table, bindparam, column, insert, select, table, text, update
from sqlalchemy.exc import IntegrityError, OperationalError

from flowserv_async import DB
from flowserv_async.db._statements import _CACHE_CAPACITY, CompiledStatements
from flowserv_async.db.models import Run, Workflow

_RUNS = typed(Table, Run.__table__)
_WORKFLOWS = typed(Table, Workflow.__table__)
_INSERT_WORKFLOW = insert(_WORKFLOWS)
_INSERT_RUN = insert(_RUNS).returning(_RUNS.c.created_at, _RUNS.c.arguments)
_EXPANDING = update(_RUNS).where(_RUNS.c.run_id.in_(["a", "b"])).values(state="ERROR")
_DEFER_FOREIGN_KEYS = text("PRAGMA defer_foreign_keys = ON")
_CREATED = datetime(2026, 1, 2, 3, 4, 5, 6000, tzinfo=UTC)


@pytest.fixture
async def sqlite_db(tmp_path: Path) -> AsyncIterator[DB]:
    async with backend_database("sqlite", tmp_path) as db:
        yield db


def _workflow(statements: CompiledStatements) -> None:
    statements.execute(
        _INSERT_WORKFLOW,
        {
            "workflow_id": "w",
            "name": "w",
            "workflow_spec": {"steps": []},
            "parameters": [{"name": "p"}],
            "ignore_postproc": False,
            "created_at": _CREATED,
        },
    )


def _run(run_id: str, workflow_id: str = "w") -> dict[str, object]:
    return {
        "run_id": run_id,
        "workflow_id": workflow_id,
        "state": "PENDING",
        "created_at": _CREATED,
        "arguments": [{"name": "p", "value": 1}],
    }


async def _run_ids(db: DB) -> list[str]:
    async with db.session() as session:
        return list((await session.scalars(select(Run.run_id))).all())


async def test_values_are_converted_like_the_sessions_both_ways(sqlite_db: DB) -> None:
    def write(statements: CompiledStatements) -> list[tuple[object, ...]]:
        _workflow(statements)
        return statements.execute(_INSERT_RUN, [_run("r1"), _run("r2")])

    returned = await sqlite_db.write_in_thread(write)
    assert returned == [(_CREATED, [{"name": "p", "value": 1}])] * 2
    async with sqlite_db.session() as session:
        run = await session.get(Run, "r1")
        workflow = await session.get(Workflow, "w")
    assert run is not None and workflow is not None
    assert (run.created_at, run.arguments) == (_CREATED, [{"name": "p", "value": 1}])
    assert (workflow.workflow_spec, workflow.parameters) == ({"steps": []}, [{"name": "p"}])


async def test_a_failed_statement_raises_sqlalchemys_error_and_writes_nothing(
    sqlite_db: DB,
) -> None:
    def write(statements: CompiledStatements) -> None:
        _workflow(statements)
        statements.execute(_INSERT_RUN, _run("r1", workflow_id="no-such-workflow"))

    with pytest.raises(IntegrityError):
        await sqlite_db.write_in_thread(write)
    assert await _run_ids(sqlite_db) == []
    async with sqlite_db.session() as session:
        assert await session.get(Workflow, "w") is None


async def test_a_failed_commit_raises_sqlalchemys_error_and_ends_the_transaction(
    sqlite_db: DB,
) -> None:
    def orphan(statements: CompiledStatements) -> None:
        # The foreign key is checked at the COMMIT, which then fails.
        statements.execute(_DEFER_FOREIGN_KEYS, {})
        statements.execute(_INSERT_RUN, _run("r1", workflow_id="no-such-workflow"))

    with pytest.raises(IntegrityError):
        await sqlite_db.write_in_thread(orphan)
    assert await _run_ids(sqlite_db) == []
    # The writer's connection was left outside any transaction: the next write works.
    await sqlite_db.write_in_thread(_workflow)
    async with sqlite_db.session() as session:
        assert await session.get(Workflow, "w") is not None


async def test_expanding_parameters_and_python_defaults_are_refused(sqlite_db: DB) -> None:
    def expanding(statements: CompiledStatements) -> None:
        _workflow(statements)
        statements.execute(_EXPANDING, {})

    def defaults(statements: CompiledStatements) -> None:
        # created_at has a Python-side default that only SQLAlchemy's execution applies.
        statements.execute(_INSERT_RUN, {"run_id": "r1", "workflow_id": "w", "state": "PENDING"})

    with pytest.raises(ValueError, match="expanding parameters"):
        await sqlite_db.write_in_thread(expanding)
    with pytest.raises(ValueError, match="Python-side defaults"):
        await sqlite_db.write_in_thread(defaults)
    assert await _run_ids(sqlite_db) == []
    async with sqlite_db.session() as session:
        assert await session.get(Workflow, "w") is None


_RUN_ROWS = select(_RUNS.c.run_id, _RUNS.c.created_at.label("made")).where(
    _RUNS.c.run_id == bindparam("run_id")
)
_NO_SUCH_TABLE = select(column("x")).select_from(table("no_such_table"))


def _checked_out(db: DB) -> int:
    return typed(int, db.engine.pool.checkedout())  # type: ignore[attr-defined]


def _read_run(statements: CompiledStatements, run_id: str) -> tuple[object, object]:
    rows = statements.execute(_RUN_ROWS, {"run_id": run_id})
    first = rows.first()
    return rows.all(), (first.run_id, first.made) if first is not None else None


async def test_a_read_runs_compiled_and_names_its_rows_by_label(sqlite_db: DB) -> None:
    def write(statements: CompiledStatements) -> None:
        _workflow(statements)
        statements.execute(_INSERT_RUN, _run("r1"))

    await sqlite_db.write_in_thread(write)
    rows, first = await sqlite_db.read(_read_run, "r1")
    assert first == ("r1", _CREATED)
    assert rows == [first]
    # An unknown id: no rows, no first row.
    assert await sqlite_db.read(_read_run, "no-such-run") == ([], None)
    assert _checked_out(sqlite_db) == 0


async def test_a_failed_read_raises_sqlalchemys_error_and_returns_the_connection(
    sqlite_db: DB,
) -> None:
    def failing(statements: CompiledStatements) -> None:
        statements.execute(_NO_SUCH_TABLE, {})

    def raising(statements: CompiledStatements) -> None:
        raise LookupError("from the read")

    with pytest.raises(OperationalError, match="no_such_table"):
        await sqlite_db.read(failing)
    with pytest.raises(LookupError, match="from the read"):
        await sqlite_db.read(raising)
    assert _checked_out(sqlite_db) == 0
    assert await sqlite_db.read(_read_run, "r1") == ([], None)


async def test_a_cancelled_read_returns_the_connection_and_it_stays_usable(
    sqlite_db: DB,
) -> None:
    entered, release = threading.Event(), threading.Event()

    def blocking(statements: CompiledStatements) -> None:
        entered.set()
        release.wait(10)
        statements.execute(_RUN_ROWS, {"run_id": "r1"})

    with anyio.move_on_after(10) as scope:
        async with anyio.create_task_group() as tasks:
            tasks.start_soon(sqlite_db.read, blocking)
            await anyio.to_thread.run_sync(entered.wait, 10)
            tasks.cancel_scope.cancel()
    assert not scope.cancelled_caught
    assert _checked_out(sqlite_db) == 0
    # The connection's thread finishes the cancelled read before it runs the next one.
    release.set()
    assert await sqlite_db.read(_read_run, "r1") == ([], None)
    assert _checked_out(sqlite_db) == 0


async def test_statements_built_per_call_do_not_accumulate_compiled(sqlite_db: DB) -> None:
    def read_each(statements: CompiledStatements) -> None:
        for n in range(_CACHE_CAPACITY * 2):
            statements.execute(select(_RUNS.c.run_id).limit(n), {})

    await sqlite_db.read(read_each)
    # SQLAlchemy's LRU cache trims to its capacity when half as many again are in it.
    assert len(typed(Sized, sqlite_db._compiled)) <= _CACHE_CAPACITY * 1.5


async def test_a_read_on_a_closed_connection_fails_once_and_the_pool_replaces_it(
    sqlite_db: DB,
) -> None:
    async with sqlite_db.engine.connect() as conn:
        raw = await conn.get_raw_connection()
        await raw.dbapi_connection._connection.close()  # type: ignore[union-attr]
    failures: list[OperationalError] = []
    for _ in range(20):
        try:
            assert await sqlite_db.read(_read_run, "r1") == ([], None)
        except OperationalError as exc:
            failures.append(exc)
    # Pooled connections are handed out in turn: a closed one kept would fail again.
    assert [exc.connection_invalidated for exc in failures] == [True]
    assert _checked_out(sqlite_db) == 0
