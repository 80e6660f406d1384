"""The asyncpg adapter: reads before the first write run without a transaction."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import anyio
import anyio.lowlevel
import pytest
from sqlalchemy import event, func, insert, select, text
from sqlalchemy.dialects.postgresql.asyncpg import (
    AsyncAdapt_asyncpg_connection,
    AsyncAdapt_asyncpg_cursor,
)
from sqlalchemy.exc import DBAPIError, IntegrityError

from flowserv_async import DB, LocalAPIFactory
from flowserv_async.config import DEFAULT_USER
from flowserv_async.db._postgres import LazyTransactionConnection, reads_only
from flowserv_async.db.models import User


class Sent:
    """What the server was sent: statements, and the transaction commands among them."""

    def __init__(self) -> None:
        self.statements: list[str] = []
        self.commands: list[str] = []

    def clear(self) -> None:
        self.statements.clear()
        self.commands.clear()

    async def settled(self) -> Sent:
        # asyncpg hands logged queries to the loop (call_soon): let them arrive.
        for _ in range(3):
            await anyio.lowlevel.checkpoint()
        return self


@pytest.fixture
def sent(pg: DB) -> Sent:
    """Record every statement of the engine's connections from now on.

    Statements come from SQLAlchemy's cursor events; BEGIN, COMMIT and ROLLBACK, which
    asyncpg sends as simple queries of its own, from asyncpg's query logger.
    """
    record = Sent()

    def log_command(query: Any) -> None:
        record.commands.append(query.query)

    @event.listens_for(pg.engine.sync_engine, "before_cursor_execute")
    def _statement(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        record.statements.append(statement)

    @event.listens_for(pg.engine.sync_engine.pool, "checkout")
    def _checkout(dbapi_connection: Any, *args: Any) -> None:
        # A set of callbacks: adding the same one again does nothing.
        dbapi_connection.driver_connection.add_query_logger(log_command)

    return record


async def count_users(pg: DB) -> int:
    async with pg.session() as session:
        return int((await session.execute(select(func.count()).select_from(User))).scalar_one())


def test_the_sqlalchemy_internals_it_uses_exist() -> None:
    # Pinned in pyproject.toml; this fails first when a new version moves them.
    assert callable(AsyncAdapt_asyncpg_cursor._prepare_and_execute)
    assert callable(AsyncAdapt_asyncpg_connection._start_transaction)
    assert "_transaction" in AsyncAdapt_asyncpg_connection.__slots__


@pytest.mark.parametrize(
    ("statement", "alone"),
    [
        ("SELECT users.user_id FROM users WHERE users.name = $1", True),
        ("\n  select count(*) from runs", True),
        ("SELECT users.user_id FROM users FOR UPDATE", False),
        ("SELECT workflow.id FROM workflow FOR KEY SHARE", False),
        ("SELECT runs.id FROM runs FOR NO KEY UPDATE SKIP LOCKED", False),
        ("SELECT 1 FROM runs FOR SHARE", False),
        ("SELECT pg_notify($1, $2) AS pg_notify_1", False),
        ("SELECT pg_advisory_xact_lock($1)", False),
        ("SELECT nextval('s')", False),
        ("SELECT * INTO copy FROM users", False),
        ("WITH locked AS (SELECT pg_advisory_xact_lock(1)) INSERT INTO e VALUES (1)", False),
        ("WITH r AS (SELECT 1) SELECT * FROM r", False),
        ("INSERT INTO users (user_id) VALUES ($1)", False),
        ("UPDATE runs SET state = $1", False),
        ("SET search_path TO x", False),
        ("SHOW search_path", False),
    ],
)
def test_which_statements_run_without_a_transaction(statement: str, alone: bool) -> None:
    assert reads_only(statement) is alone


async def test_the_engine_uses_the_adapter(pg: DB) -> None:
    async with pg.engine.connect() as conn:
        raw = await conn.get_raw_connection()
        assert isinstance(raw.dbapi_connection, LazyTransactionConnection)


async def test_a_reading_session_sends_no_begin_or_commit(pg: DB, sent: Sent) -> None:
    async with pg.session() as session:
        await session.execute(select(User.user_id))
        await session.execute(select(func.count()).select_from(User))
        await session.commit()
    await sent.settled()
    assert len(sent.statements) == 2
    assert sent.commands == []


async def test_an_api_read_sends_no_begin_or_commit(pg: DB, sent: Sent, basedir: Path) -> None:
    env = {"FLOWSERV_API_DIR": str(basedir), "FLOWSERV_AUTH": "open"}
    async with LocalAPIFactory(env=env, db=pg) as factory:
        sent.clear()
        async with factory() as api:
            await api.groups().list_groups()
            await api.workflows().list_workflows()
        await sent.settled()
        assert sent.statements
        assert sent.commands == []
        async with factory() as api:
            await api.users().register_user("reader", "pw", verify=False)
        await sent.settled()
        assert sent.commands == ["BEGIN;", "COMMIT;"]


async def test_a_write_session_reads_and_writes_in_one_transaction(pg: DB, sent: Sent) -> None:
    async with pg.write_session() as session:
        await session.execute(select(User.user_id))
        # Begun before the read, which wrote nothing.
        assert (await sent.settled()).commands == ["BEGIN;"]
        session.add(User(user_id="w1", name="w1", secret="x", active=True))
    assert (await sent.settled()).commands == ["BEGIN;", "COMMIT;"]
    async with pg.session() as session:
        assert await session.get(User, "w1") is not None


async def test_begin_write_after_reads_begins_before_the_next_statement(pg: DB, sent: Sent) -> None:
    async with pg.session() as session:
        await session.execute(select(User.user_id))
        await pg.begin_write(session)
        await session.execute(select(User.user_id))
        await sent.settled()
        assert sent.commands == ["BEGIN;"]
        await session.rollback()
    await sent.settled()
    assert sent.commands == ["BEGIN;", "ROLLBACK;"]


async def test_the_first_write_begins_and_rollback_undoes_it(pg: DB, sent: Sent) -> None:
    before = await count_users(pg)
    sent.clear()
    async with pg.session() as session:
        await session.execute(select(User.user_id))
        await session.execute(insert(User).values(user_id="r1", name="r1", secret="x"))
        await session.execute(select(User.user_id))
        await session.rollback()
    await sent.settled()
    assert sent.commands == ["BEGIN;", "ROLLBACK;"]
    assert await count_users(pg) == before
    async with pg.session() as session:
        await session.execute(insert(User).values(user_id="r2", name="r2", secret="x"))
        await session.commit()
    assert await count_users(pg) == before + 1


async def test_a_failed_write_leaves_nothing(pg: DB) -> None:
    before = await count_users(pg)
    with pytest.raises(IntegrityError):
        async with pg.session() as session:
            await session.execute(select(User.user_id))
            await session.execute(
                insert(User),
                [
                    {"user_id": "f1", "name": "f1", "secret": "x"},
                    {"user_id": "f1", "name": "f2", "secret": "x"},
                ],
            )
    assert await count_users(pg) == before


async def test_a_failed_read_leaves_the_connection_usable(pg: DB, sent: Sent) -> None:
    with pytest.raises(DBAPIError, match="division by zero"):
        async with pg.session() as session:
            await session.execute(text("SELECT 1 / 0"))
    # No transaction was aborted, none is rolled back.
    async with pg.session() as session:
        assert (await session.execute(text("SELECT 2"))).scalar_one() == 2
    await sent.settled()
    assert sent.commands == []


async def test_select_for_update_holds_its_lock_until_the_end(pg: DB) -> None:
    async with pg.session() as holder:
        locked = select(User.user_id).where(User.user_id == DEFAULT_USER).with_for_update()
        assert (await holder.execute(locked)).scalar_one() == DEFAULT_USER
        async with pg.session() as other:
            with pytest.raises(DBAPIError, match="could not obtain lock"):
                await other.execute(
                    select(User.user_id)
                    .where(User.user_id == DEFAULT_USER)
                    .with_for_update(nowait=True)
                )
        await holder.commit()
    async with pg.session() as other:
        await other.execute(select(User.user_id).with_for_update(nowait=True))


async def test_an_advisory_transaction_lock_is_held_until_the_end(pg: DB) -> None:
    try_lock = text("SELECT pg_try_advisory_xact_lock(4711)")
    async with pg.session() as holder:
        await holder.execute(text("SELECT pg_advisory_xact_lock(4711)"))
        async with pg.session() as other:
            assert (await other.execute(try_lock)).scalar_one() is False
        await holder.commit()
    async with pg.session() as other:
        assert (await other.execute(try_lock)).scalar_one() is True


async def test_a_stricter_isolation_level_reads_in_a_transaction(pg: DB, sent: Sent) -> None:
    async with pg.session() as session:
        await session.connection(execution_options={"isolation_level": "REPEATABLE READ"})
        await session.execute(select(User.user_id))
        await session.commit()
    await sent.settled()
    assert "COMMIT;" in sent.commands
    assert any(command.startswith("BEGIN") for command in sent.commands)
