"""The SQLite adapter: one driver call per statement, transactions only where needed."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import aiosqlite
import pytest
from sqlalchemy import func, insert, select, text, update
from sqlalchemy.exc import IntegrityError

from flowserv_async import DB
from flowserv_async.db._sqlite import StatementConnection
from flowserv_async.db.models import User


@pytest.fixture
async def db(tmp_path: Path) -> AsyncIterator[DB]:
    database = DB(f"sqlite+aiosqlite:///{tmp_path / 'a.db'}")
    await database.create_schema()
    yield database
    await database.dispose()


async def count_users(db: DB) -> int:
    async with db.session() as session:
        return int((await session.execute(select(func.count()).select_from(User))).scalar_one())


def test_the_aiosqlite_internals_it_uses_exist() -> None:
    # Pinned in pyproject.toml; this fails first when a new version moves them.
    assert callable(aiosqlite.Connection._execute)
    assert isinstance(aiosqlite.Connection._conn, property)


async def test_the_engine_uses_the_adapter(db: DB) -> None:
    async with db.engine.connect() as conn:
        raw = await conn.get_raw_connection()
        assert isinstance(raw.dbapi_connection, StatementConnection)


async def test_a_reading_session_holds_no_snapshot(db: DB) -> None:
    # Without a transaction each read sees what was committed since the last one.
    async with db.session() as reader:
        before = (await reader.execute(select(func.count()).select_from(User))).scalar_one()
        async with db.write_session() as writer:
            writer.add(User(user_id="u1", name="u1", secret="x", active=True))
        after = (await reader.execute(select(func.count()).select_from(User))).scalar_one()
    assert after == before + 1


async def test_a_write_outside_a_write_session_begins_a_transaction(db: DB) -> None:
    before = await count_users(db)
    async with db.session() as session:
        await session.execute(insert(User).values(user_id="u2", name="u2", secret="x"))
        await session.rollback()
    assert await count_users(db) == before
    async with db.session() as session:
        await session.execute(insert(User).values(user_id="u3", name="u3", secret="x"))
        await session.commit()
    assert await count_users(db) == before + 1


async def test_a_failed_write_session_leaves_nothing(db: DB) -> None:
    before = await count_users(db)
    with pytest.raises(IntegrityError):
        async with db.write_session() as session:
            await session.execute(
                insert(User),
                [
                    {"user_id": "u4", "name": "u4", "secret": "x"},
                    {"user_id": "u4", "name": "u5", "secret": "x"},
                ],
            )
    assert await count_users(db) == before


async def test_many_rows_rowcount_and_returning(db: DB) -> None:
    rows = [{"user_id": f"m{i}", "name": f"m{i}", "secret": "x"} for i in range(3)]
    async with db.write_session() as session:
        await session.execute(insert(User), rows)
        result = await session.execute(
            update(User)
            .where(User.user_id.in_(["m0", "m1"]))
            .values(active=False)
            .returning(User.user_id)
        )
        assert sorted(result.scalars().all()) == ["m0", "m1"]
        changed = await session.execute(
            update(User).where(User.user_id == "m2").values(active=False)
        )
        assert changed.rowcount == 1  # type: ignore[attr-defined]
    async with db.engine.connect() as conn:
        names = (await conn.execute(text("SELECT name FROM users WHERE active = 0"))).all()
    assert sorted(n for (n,) in names) == ["m0", "m1", "m2"]
