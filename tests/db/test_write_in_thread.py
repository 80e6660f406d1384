"""SQLite write transactions run as one call in the writer thread (DB.write_in_thread)."""

from __future__ import annotations

import os
import threading
from collections.abc import AsyncIterator
from pathlib import Path
from typing import cast as typed

import anyio
import anyio.to_thread
import pytest
from dbutil import POSTGRES_URL, backend_database
from sqlalchemy import Table, insert, select

from flowserv_async import DB
from flowserv_async._util import utc_now
from flowserv_async.db._statements import CompiledStatements
from flowserv_async.db.models import User


@pytest.fixture
async def sqlite_db(tmp_path: Path) -> AsyncIterator[DB]:
    async with backend_database("sqlite", tmp_path) as db:
        yield db


def _add_user(user_id: str) -> User:
    return User(user_id=user_id, name=user_id, secret="!", active=True)


_INSERT_USER = insert(typed(Table, User.__table__))


def _insert_user(statements: CompiledStatements, user_id: str) -> None:
    statements.execute(
        _INSERT_USER,
        {
            "user_id": user_id,
            "name": user_id,
            "secret": "!",
            "active": True,
            "is_admin": False,
            "created_at": utc_now(),
        },
    )


async def _user_ids(db: DB) -> set[str]:
    async with db.session() as session:
        return set((await session.scalars(select(User.user_id))).all())


async def _write_on_the_loop(db: DB, user_id: str) -> None:
    """An async write transaction: it would wait for a lock the thread still held."""
    async with db.write_session() as session:
        session.add(_add_user(user_id))


async def test_a_write_commits_in_the_writer_thread_and_returns_its_result(
    sqlite_db: DB,
) -> None:
    def write(statements: CompiledStatements) -> str:
        _insert_user(statements, "u1")
        return threading.current_thread().name

    assert sqlite_db.writes_in_thread
    thread = await sqlite_db.write_in_thread(write)
    assert thread.startswith("flowserv-dbwrite_")
    assert "u1" in await _user_ids(sqlite_db)
    await _write_on_the_loop(sqlite_db, "u2")  # the write lock was released
    assert {"u1", "u2"} <= await _user_ids(sqlite_db)


async def test_an_error_rolls_the_write_back_and_is_raised(sqlite_db: DB) -> None:
    def write(statements: CompiledStatements) -> None:
        _insert_user(statements, "u1")
        raise KeyError("bad report")

    before = await _user_ids(sqlite_db)
    with pytest.raises(KeyError, match="bad report"):
        await sqlite_db.write_in_thread(write)
    assert await _user_ids(sqlite_db) == before
    await _write_on_the_loop(sqlite_db, "u2")
    assert await _user_ids(sqlite_db) == before | {"u2"}


async def test_a_cancelled_caller_waits_until_the_write_has_committed(sqlite_db: DB) -> None:
    entered, release = threading.Event(), threading.Event()

    def write(statements: CompiledStatements) -> None:
        entered.set()
        release.wait(10)
        _insert_user(statements, "u1")

    returned = []

    async def caller() -> None:
        await sqlite_db.write_in_thread(write)
        returned.append(True)  # the cancellation takes effect at the next checkpoint
        await anyio.sleep_forever()

    async with anyio.create_task_group() as tg:
        tg.start_soon(caller)
        await anyio.to_thread.run_sync(entered.wait)
        tg.cancel_scope.cancel()
        release.set()
    assert returned == [True]
    assert "u1" in await _user_ids(sqlite_db)
    # Neither the writer slot nor the thread's connection was left in a transaction.
    await _write_on_the_loop(sqlite_db, "u2")
    await sqlite_db.write_in_thread(lambda statements: _insert_user(statements, "u3"))
    assert {"u1", "u2", "u3"} <= await _user_ids(sqlite_db)


def _open_files(folder: Path) -> list[str]:
    fds = Path("/proc/self/fd")
    found = []
    for fd in fds.iterdir():
        try:
            target = os.readlink(fd)
        except OSError:
            continue  # closed meanwhile
        if target.startswith(str(folder)):
            found.append(target)
    return found


@pytest.mark.skipif(not Path("/proc/self/fd").is_dir(), reason="needs /proc")
async def test_dispose_closes_the_writer_threads_connection(tmp_path: Path) -> None:
    db = DB(f"sqlite+aiosqlite:///{tmp_path / 'flowserv.db'}")
    await db.create_schema()
    await db.write_in_thread(lambda statements: _insert_user(statements, "u1"))
    assert await anyio.to_thread.run_sync(_open_files, tmp_path)
    await db.dispose()
    assert await anyio.to_thread.run_sync(_open_files, tmp_path) == []


async def test_only_sqlite_has_a_writer_thread() -> None:
    db = DB(POSTGRES_URL)  # not connected: the call fails before any connection
    try:
        assert not db.writes_in_thread
        with pytest.raises(RuntimeError, match="only on SQLite"):
            await db.write_in_thread(lambda statements: None)
    finally:
        await db.dispose()
