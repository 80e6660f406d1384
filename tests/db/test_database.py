"""The async database: URLs, schema creation, SQLite settings, the default user."""

from __future__ import annotations

from pathlib import Path

import anyio
import pytest
from dbutil import POSTGRES_URL, backend_database
from sqlalchemy import inspect, select, text
from sqlalchemy.exc import DBAPIError

from flowserv_async import DB, init_db
from flowserv_async.config import DEFAULT_USER
from flowserv_async.db import async_url
from flowserv_async.db.models import Base, User
from flowserv_async.errors import InvalidConfigurationError


@pytest.mark.parametrize(
    ("url", "driver"),
    [
        ("sqlite:///x.db", "sqlite+aiosqlite"),
        ("sqlite+aiosqlite:///x.db", "sqlite+aiosqlite"),
        ("postgresql://u@h/db", "postgresql+asyncpg"),
        ("postgres://u@h/db", "postgresql+asyncpg"),
        ("postgresql+psycopg2://u@h/db", "postgresql+asyncpg"),
    ],
)
def test_sync_urls_map_to_async_drivers(url: str, driver: str) -> None:
    assert async_url(url).drivername == driver


@pytest.mark.parametrize("url", ["not a url", "mysql://u@h/db", "oracle+cx://u@h"])
def test_bad_urls(url: str) -> None:
    with pytest.raises(InvalidConfigurationError):
        async_url(url)


@pytest.mark.parametrize(
    "url",
    [
        "sqlite://",
        "sqlite:///:memory:",
        "sqlite+aiosqlite:///:memory:",
        "sqlite+aiosqlite:///file::memory:?cache=shared&uri=true",
        "sqlite+aiosqlite:///file:shared?mode=memory&cache=shared&uri=true",
    ],
)
def test_in_memory_sqlite_is_refused_by_name(url: str) -> None:
    # Each pooled connection (and the writer thread's) would open a database of its own.
    with pytest.raises(InvalidConfigurationError, match="in-memory SQLite database"):
        DB(url)


async def test_init_db_with_in_memory_sqlite_creates_nothing(tmp_path: Path) -> None:
    env = {"FLOWSERV_API_DIR": str(tmp_path / "base"), "FLOWSERV_DATABASE": "sqlite://"}
    with pytest.raises(InvalidConfigurationError, match="FLOWSERV_DATABASE"):
        await init_db(env)
    assert [p async for p in anyio.Path(tmp_path).iterdir()] == []


async def test_init_db_defaults_to_sqlite_in_the_base_folder(tmp_path: Path) -> None:
    env = {"FLOWSERV_API_DIR": str(tmp_path / "new" / "base")}
    db = await init_db(env)
    try:
        assert env["FLOWSERV_DATABASE"] == f"sqlite+aiosqlite:///{tmp_path}/new/base/flowserv.db"
        assert await anyio.Path(tmp_path / "new" / "base" / "flowserv.db").exists()
        async with db.session() as s:
            mode = (await s.execute(text("PRAGMA journal_mode"))).scalar_one()
            fks = (await s.execute(text("PRAGMA foreign_keys"))).scalar_one()
            busy = (await s.execute(text("PRAGMA busy_timeout"))).scalar_one()
            user = await s.get(User, DEFAULT_USER)
        assert (mode, fks) == ("wal", 1) and busy > 0
        assert user is not None and user.active
    finally:
        await db.dispose()


async def test_schema_is_created_once_and_kept(database: DB) -> None:
    async with database.session() as s, s.begin():
        s.add(User(user_id="u1", name="kept", secret="x", active=True))
    await database.create_schema()
    async with database.engine.connect() as conn:
        tables = set(await conn.run_sync(lambda c: inspect(c).get_table_names()))
    assert set(Base.metadata.tables) <= tables
    async with database.session() as s:
        names = set((await s.scalars(select(User.name))).all())
    assert names == {"kept", DEFAULT_USER}


async def test_init_erases_data(database: DB) -> None:
    async with database.session() as s, s.begin():
        s.add(User(user_id="u1", name="gone", secret="x", active=True))
    await database.init()
    async with database.session() as s:
        assert (await s.scalars(select(User.name))).all() == [DEFAULT_USER]


async def test_unique_user_name_is_enforced_by_the_database(database: DB) -> None:
    from sqlalchemy.exc import IntegrityError

    with pytest.raises(IntegrityError):
        async with database.session() as s, s.begin():
            s.add_all(
                [
                    User(user_id="a", name="same", secret="x"),
                    User(user_id="b", name="same", secret="x"),
                ]
            )


async def test_unreachable_database_is_a_configuration_error(tmp_path: Path) -> None:
    url = "postgresql+asyncpg://nobody@127.0.0.1:1/none"
    with pytest.raises(InvalidConfigurationError, match=r"127\.0\.0\.1:1"):
        await init_db({"FLOWSERV_DATABASE": url, "FLOWSERV_API_DIR": str(tmp_path)})


async def test_sqlite_read_modify_write_sessions_serialize_without_errors(
    tmp_path: Path,
) -> None:
    # SQLite only: write transactions there take the database lock up front. (On
    # PostgreSQL the services rely on constraints and conditional updates instead.)
    database = DB(f"sqlite:///{tmp_path / 'db.sqlite'}")
    await database.create_schema()
    async with database.write_session() as s:
        s.add(User(user_id="counter", name="0", secret="x"))

    async def increment() -> None:
        async with database.session() as s:
            await database.begin_write(s)
            user = await s.get(User, "counter")
            assert user is not None
            await anyio.sleep(0.005)
            user.name = str(int(user.name) + 1)
            await s.commit()

    async with anyio.create_task_group() as tg:
        for _ in range(20):
            tg.start_soon(increment)
    async with database.session() as s:
        assert (await s.get(User, "counter")).name == "20"  # type: ignore[union-attr]
    await database.dispose()


async def test_readers_do_not_wait_for_an_open_write_transaction(database: DB) -> None:
    async with database.session() as writer:
        await database.begin_write(writer)
        writer.add(User(user_id="w", name="pending", secret="x"))
        await writer.flush()
        with anyio.fail_after(5):
            async with database.session() as reader:
                names = set((await reader.scalars(select(User.name))).all())
        assert names == {DEFAULT_USER}
        await writer.commit()


async def test_a_connection_the_server_dropped_fails_one_session_only(tmp_path: Path) -> None:
    # No pre-ping (a round trip per session): the session that meets the dead pooled
    # connection fails, the next one gets a new connection.
    async with backend_database("postgres", tmp_path) as database:
        async with database.session() as s:
            pid = (await s.execute(text("SELECT pg_backend_pid()"))).scalar_one()
        admin = DB(POSTGRES_URL)
        async with admin.engine.connect() as other:
            await other.execute(text("SELECT pg_terminate_backend(:pid)"), {"pid": pid})
            gone = text("SELECT count(*) FROM pg_stat_activity WHERE pid = :pid")
            with anyio.fail_after(5):
                while (await other.execute(gone, {"pid": pid})).scalar_one():
                    await other.commit()  # a new snapshot of pg_stat_activity
                    await anyio.sleep(0.01)
        await admin.dispose()
        with pytest.raises(DBAPIError) as failed:
            async with database.session() as s:
                await s.execute(text("SELECT 1"))
        assert failed.value.connection_invalidated
        async with database.session() as s:
            assert (await s.execute(text("SELECT pg_backend_pid()"))).scalar_one() != pid
            assert (await s.scalars(select(User.name))).all() == [DEFAULT_USER]
