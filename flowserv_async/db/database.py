"""The async database: engine, session factory, schema creation."""

from __future__ import annotations

import secrets
from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, TypeVar, TypeVarTuple, Unpack

import anyio
from sqlalchemy import Engine, create_engine, event
from sqlalchemy.engine import URL, Connection, make_url
from sqlalchemy.engine.interfaces import DBAPIConnection
from sqlalchemy.exc import ArgumentError, DBAPIError, IntegrityError, SQLAlchemyError
from sqlalchemy.ext.asyncio import (
    AsyncEngine,
    AsyncSession,
    async_sessionmaker,
    create_async_engine,
)
from sqlalchemy.orm import Session, SessionTransaction
from sqlalchemy.pool import ConnectionPoolEntry, PoolProxiedConnection
from sqlalchemy.util.concurrency import greenlet_spawn

from flowserv_async._threads import ThreadPool
from flowserv_async.config import DEFAULT_USER, FLOWSERV_DATABASE, Settings, merge_env
from flowserv_async.db._sqlite import statement_dbapi
from flowserv_async.db._statements import CompiledStatements, compiled_cache, read_compiled
from flowserv_async.db.models import Base, User
from flowserv_async.errors import InvalidConfigurationError

# Sync drivers that users know from flowserv, mapped to their asyncio drivers.
_ASYNC_DRIVERS = {
    "sqlite": "sqlite+aiosqlite",
    "sqlite+pysqlite": "sqlite+aiosqlite",
    "postgres": "postgresql+asyncpg",
    "postgresql": "postgresql+asyncpg",
    "postgresql+psycopg2": "postgresql+asyncpg",
    "postgresql+psycopg": "postgresql+asyncpg",
}

_SQLITE_POOL_SIZE = 8

# Connections to a server database, kept open: as many as sessions are admitted at once
# (:attr:`DB.admission` is sized by the pool). No overflow connections: SQLAlchemy
# closes one that comes back to a pool already holding ``pool_size`` idle ones, so with
# 5 + 10, 16 concurrent requests opened 23-57 connections per 3,000 and a two-process
# server under load up to 270 in 5 s (a backend process each, every statement prepared
# again on each).
_SERVER_POOL_SIZE = 15
_SERVER_MAX_OVERFLOW = 0

# Seconds after which a pooled server connection is replaced instead of reused.
_POOL_RECYCLE_S = 1800

# How long SQLite waits for a lock before it reports "database is locked", in ms.
SQLITE_BUSY_TIMEOUT_MS = 60_000


def async_url(url: str) -> URL:
    """Parse a database URL and map a sync driver to its asyncio driver."""
    try:
        parsed = make_url(url)
    except ArgumentError as exc:
        raise InvalidConfigurationError(f"invalid database URL {url!r}") from exc
    driver = _ASYNC_DRIVERS.get(parsed.drivername, parsed.drivername)
    if driver not in ("sqlite+aiosqlite", "postgresql+asyncpg"):
        raise InvalidConfigurationError(
            f"unsupported database driver {parsed.drivername!r} in {FLOWSERV_DATABASE}"
            " (use sqlite+aiosqlite or postgresql+asyncpg)"
        )
    if driver == "sqlite+aiosqlite" and _in_memory(parsed):
        raise InvalidConfigurationError(
            f"an in-memory SQLite database ({parsed.render_as_string()!r} in {FLOWSERV_DATABASE})"
            " is not supported: each of the service's connections would have an empty"
            " database of its own; give a file path instead"
        )
    return parsed.set(drivername=driver)


def _in_memory(url: URL) -> bool:
    database = url.database or ""
    if database in ("", ":memory:"):
        return True
    # URI file names: file::memory:, file:name?mode=memory (with uri=true).
    return database.startswith("file:") and (
        ":memory:" in database or url.query.get("mode") == "memory" or "mode=memory" in database
    )


WRITE_OPTION = "flowserv_write"
"""Execution option of a write session: its transaction begins with its first statement.

On SQLite that transaction begins as ``BEGIN IMMEDIATE``.
"""


def _begin_write_sessions_at_once(engine: AsyncEngine) -> None:
    """A write session's transaction begins with its first statement, even a read.

    Both adapters (``db/_sqlite.py``, ``db/_postgres.py``) otherwise send no ``BEGIN``
    for reads: a session that only reads runs without a transaction, and one that
    writes begins it with its first write.
    """

    @event.listens_for(engine.sync_engine, "begin")
    def _on_begin(conn: Any) -> None:
        if conn.get_execution_options().get(WRITE_OPTION, False):
            # Sent with the transaction's first statement (SQLite: in the same call).
            conn.connection.dbapi_connection.begin_immediate()


def _on_sqlite_connect(dbapi_connection: DBAPIConnection, record: ConnectionPoolEntry) -> None:
    # Let a "begin" hook emit BEGIN instead of the driver.
    dbapi_connection.isolation_level = None
    cursor = dbapi_connection.cursor()
    cursor.execute(f"PRAGMA busy_timeout = {SQLITE_BUSY_TIMEOUT_MS}")
    cursor.execute("PRAGMA journal_mode = WAL")
    cursor.execute("PRAGMA synchronous = NORMAL")
    cursor.execute("PRAGMA foreign_keys = ON")
    cursor.close()


def _configure_sqlite(engine: AsyncEngine) -> None:
    """WAL, a busy timeout, foreign keys, and write transactions that wait their turn.

    Sessions that only read run without a transaction: in WAL mode they neither wait
    for writers nor block them. Writing transactions begin with ``BEGIN IMMEDIATE`` (see
    :meth:`DB.begin_write`): a deferred transaction that reads and then writes fails at
    once with "database is locked" when another connection wrote in between (the busy
    timeout does not apply to that upgrade), whereas an immediate one waits for the lock.
    """
    event.listen(engine.sync_engine, "connect", _on_sqlite_connect)


def _thread_writer(url: URL, connect_args: Mapping[str, Any]) -> Engine:
    """The sync engine of :meth:`DB.write_in_thread` on the same SQLite file.

    One pysqlite connection, configured like the async engine's (no ``BEGIN`` of the
    driver's own), used by one thread at a time (the writer thread; :meth:`DB.dispose`
    closes it there as well). Its dialect compiles the writer's statements.
    """
    engine = create_engine(
        url.set(drivername="sqlite+pysqlite"),
        pool_size=1,
        max_overflow=0,
        connect_args={**connect_args, "check_same_thread": False},
    )
    event.listen(engine, "connect", _on_sqlite_connect)
    return engine


# The thread of DB.write_in_thread: one is enough, the writes of a database are serial.
_writes = ThreadPool(1, "flowserv-dbwrite")

T = TypeVar("T")
Ts = TypeVarTuple("Ts")

_WRITER_KEY = "flowserv_writer"

Reader = Connection | CompiledStatements
"""What :meth:`DB.read` runs a read's statements on (both have ``execute(stmt, params)``)."""


class _Session(Session):
    """The sync session behind every AsyncSession.

    It frees the writer slot when a write transaction ends (commit, rollback, close).
    """


def _release_writer(session: Session) -> None:
    writer = session.info.pop(_WRITER_KEY, None)
    if writer is not None:
        writer.release()


@event.listens_for(_Session, "after_transaction_end")
def _after_transaction_end(session: Session, transaction: SessionTransaction) -> None:
    if transaction.parent is None:
        _release_writer(session)


class DB:
    """An async database: the engine, its session factory and the schema.

    Args:
        url: SQLAlchemy URL; sync drivers are mapped to their asyncio drivers.
        connect_args: passed to the driver's ``connect()`` (e.g. asyncpg
            ``server_settings``).
        echo: log every statement.

    """

    def __init__(
        self, url: str, *, connect_args: Mapping[str, Any] | None = None, echo: bool = False
    ) -> None:
        self.url = async_url(url)
        self.connect_args = dict(connect_args or {})
        self.is_sqlite = self.url.get_backend_name() == "sqlite"
        kwargs: dict[str, Any] = {"echo": echo, "connect_args": self.connect_args}
        if self.is_sqlite:
            kwargs["module"] = statement_dbapi()
            # Each connection is a thread: enough that bursts reuse pooled ones, few
            # enough that their threads do not crowd the event loop out of the GIL
            # (64 runs: 0.54 s of CPU with 8, 0.65 s with 32).
            kwargs["pool_size"] = kwargs["max_overflow"] = _SQLITE_POOL_SIZE
        else:
            # Imported here: asyncpg is an optional extra.
            from flowserv_async.db._postgres import lazy_transaction_dbapi

            kwargs["module"] = lazy_transaction_dbapi()
            kwargs["pool_size"] = _SERVER_POOL_SIZE
            kwargs["max_overflow"] = _SERVER_MAX_OVERFLOW
            # No pre-ping: it is a round trip per session (0.3 -> 1.1 ms for a one-statement
            # session on the loopback). A connection the server dropped fails the one
            # session that uses it; SQLAlchemy then discards the pool's older connections,
            # so the next session connects afresh. Recycling bounds a connection's age for
            # proxies and firewalls that drop idle ones.
            kwargs["pool_recycle"] = _POOL_RECYCLE_S
        self.engine = create_async_engine(self.url, **kwargs)
        if self.is_sqlite:
            _configure_sqlite(self.engine)
        _begin_write_sessions_at_once(self.engine)
        self.session_factory = async_sessionmaker(
            self.engine, expire_on_commit=False, sync_session_class=_Session
        )
        # SQLite has one writer at a time. Writers of this process queue here, in the
        # event loop, instead of in SQLite's busy handler, which sleeps in steps of up
        # to 100 ms. Held from BEGIN IMMEDIATE to the end of that transaction.
        self._writer = anyio.Semaphore(1)
        self._thread_engine = (
            _thread_writer(self.url, self.connect_args) if self.is_sqlite else None
        )
        self._thread_connection: PoolProxiedConnection | None = None
        self._compiled = compiled_cache()
        # API sessions that may work at once: as many as the pool has connections. The
        # others wait here, parked, instead of each being stepped up to the pool's queue
        # (1,000 sessions started together lagged the event loop by some 100 ms).
        self.admission = anyio.Semaphore(
            kwargs["pool_size"] + kwargs["max_overflow"], fast_acquire=True
        )

    @asynccontextmanager
    async def session(self) -> AsyncIterator[AsyncSession]:
        """Yield a new session; the caller controls its transaction."""
        async with self.session_factory() as session:
            yield session

    async def read(self, read: Callable[[Reader, Unpack[Ts]], T], *args: *Ts) -> T:
        """Run ``read(executor, *args)`` on a pooled connection, outside a transaction.

        For reads that need no session: the checkout, the statements and the return of
        the connection are one call into SQLAlchemy's greenlet, where a session costs
        an ``AsyncSession``, its transaction and a call per statement and to end it.
        Both adapters run a read outside a transaction on its own (SQLite's autocommit,
        PostgreSQL's), as they run a session's reads before its first write.

        On SQLite the whole of ``read`` is one call in the connection's thread, its
        statements compiled once (:class:`CompiledStatements` on the driver's
        connection, as the writer's): a statement through a SQLAlchemy ``Connection``
        cost more CPU (execution context, events) than the query. Elsewhere ``read``
        gets a SQLAlchemy ``Connection``.
        """
        return await greenlet_spawn(self._read_sync, read, *args)

    def _read_sync(self, read: Callable[[Reader, Unpack[Ts]], T], *args: *Ts) -> T:
        if self._thread_engine is None:
            with self.engine.sync_engine.connect() as conn:
                return read(conn, *args)
        pooled = self.engine.sync_engine.raw_connection()
        adapted: Any = pooled.dbapi_connection
        dialect = self.engine.dialect
        try:
            result: T = adapted.run(
                read_compiled, self._thread_engine.dialect, self._compiled, read, args
            )
        except dialect.loaded_dbapi.Error as exc:
            # The adapter's own (the statements raise SQLAlchemy's): its connection is
            # gone, so the pool replaces it, as a Connection would have it do.
            gone = dialect.is_disconnect(exc, adapted, None)
            if gone:
                pooled.invalidate(exc)
            raise DBAPIError.instance(
                None, None, exc, dialect.loaded_dbapi.Error, connection_invalidated=gone
            ) from exc
        finally:
            pooled.close()
        return result

    @asynccontextmanager
    async def write_session(self) -> AsyncIterator[AsyncSession]:
        """Yield a session in a write transaction; commit on success, else roll back."""
        async with self.session_factory() as session:
            await self.begin_write(session)
            try:
                yield session
            except BaseException:
                with anyio.CancelScope(shield=True):
                    await session.rollback()
                raise
            await session.commit()

    async def begin_write(self, session: AsyncSession) -> None:
        """Make sure the session's transaction may write without a lock upgrade.

        On SQLite a transaction that has only read so far is committed (it wrote
        nothing) and a new one begins with ``BEGIN IMMEDIATE``, waiting for the write
        lock. On PostgreSQL the transaction begins with the next statement, even a read
        (the reads so far ran without one). For a transaction that already writes this
        does nothing.
        """
        if session.in_transaction():
            conn = await session.connection()
            if (
                conn.sync_connection is not None
                and conn.sync_connection.get_execution_options().get(WRITE_OPTION, False)
            ):
                return
            if not self.is_sqlite:
                # Its reads ran without a transaction: the next statement begins one.
                raw: Any = await conn.get_raw_connection()
                raw.dbapi_connection.begin_immediate()
                return
            await session.commit()
        if not self.is_sqlite:
            await session.connection(execution_options={WRITE_OPTION: True})
            return
        await self._writer.acquire()
        session.sync_session.info[_WRITER_KEY] = self._writer
        try:
            await session.connection(execution_options={WRITE_OPTION: True})
        except BaseException:
            _release_writer(session.sync_session)
            raise

    @property
    def writes_in_thread(self) -> bool:
        """True when :meth:`write_in_thread` is available (SQLite)."""
        return self._thread_engine is not None

    async def write_in_thread(self, write: Callable[[CompiledStatements], T]) -> T:
        """Run ``write(statements)`` in one write transaction in a thread (SQLite only).

        The whole transaction is one call in the writer thread, on that thread's own
        pysqlite connection, with each statement compiled once
        (:class:`~flowserv_async.db._statements.CompiledStatements`); the event loop only
        waits. It takes its turn with the async writers (:meth:`begin_write`), so the two
        never wait for each other in SQLite's busy handler. Commits on success, else rolls
        back and raises. A cancelled caller waits until the transaction has ended.

        ``write`` writes the events it recorded itself, before it returns: the commit
        follows at once.
        """
        if self._thread_engine is None:
            raise RuntimeError("write_in_thread is available only on SQLite")
        async with self._writer:
            return await _writes.run(self._write_sync, self._thread_engine, write)

    def _write_sync(self, engine: Engine, write: Callable[[CompiledStatements], T]) -> T:
        if self._thread_connection is None:
            self._thread_connection = engine.raw_connection()
        connection = self._thread_connection.dbapi_connection
        assert connection is not None
        connection.execute("BEGIN IMMEDIATE")
        statements = CompiledStatements(connection, engine.dialect, self._compiled)
        try:
            result = write(statements)
            statements.commit()
        except BaseException:
            # Also after a failed COMMIT: the connection must not stay in the transaction.
            connection.rollback()
            raise
        return result

    def _close_thread_connection(self, engine: Engine) -> None:
        if self._thread_connection is not None:
            self._thread_connection.close()
            self._thread_connection = None
        engine.dispose()

    async def create_schema(self) -> None:
        """Create the tables that are missing and the default user."""
        if self.is_sqlite and self.url.database:
            await anyio.Path(self.url.database).parent.mkdir(parents=True, exist_ok=True)
        async with self.engine.execution_options(**{WRITE_OPTION: True}).begin() as conn:
            await conn.run_sync(Base.metadata.create_all)
        await self._create_default_user()

    async def init(self) -> None:
        """Drop and recreate all tables. This erases all data."""
        async with self.engine.execution_options(**{WRITE_OPTION: True}).begin() as conn:
            await conn.run_sync(Base.metadata.drop_all)
        await self.create_schema()

    async def dispose(self) -> None:
        """Close every pooled connection."""
        if self._thread_engine is not None:
            # The writer thread's connection is closed in that thread.
            await _writes.run(self._close_thread_connection, self._thread_engine)
        await self.engine.dispose()

    async def _create_default_user(self) -> None:
        async with self.session() as session:
            if await session.get(User, DEFAULT_USER) is not None:
                return
        # A random secret that is no password hash at all: no password ever matches it,
        # and creating a database does not spend a scrypt computation on it.
        secret = f"!{secrets.token_hex(32)}"
        try:
            async with self.write_session() as session:
                if await session.get(User, DEFAULT_USER) is None:
                    session.add(
                        User(user_id=DEFAULT_USER, name=DEFAULT_USER, secret=secret, active=True)
                    )
        except IntegrityError:
            # Another process created it at the same moment.
            pass


async def init_db(env: dict[str, Any] | None = None) -> DB:
    """Open the configured database and create its schema when missing.

    Without ``FLOWSERV_DATABASE`` the database is SQLite in ``FLOWSERV_API_DIR``, and
    ``env`` (when given) gets ``FLOWSERV_DATABASE`` set to that URL.
    """
    settings = Settings.from_env(merge_env(env))
    url = settings.database
    if url is None:
        url = f"sqlite+aiosqlite:///{Path(settings.api_dir, 'flowserv.db')}"
        if env is not None:
            env[FLOWSERV_DATABASE] = url
    db = DB(url)
    try:
        await db.create_schema()
    except (OSError, SQLAlchemyError) as exc:
        await db.dispose()
        shown = db.url.render_as_string(hide_password=True)
        raise InvalidConfigurationError(f"cannot open database {shown}: {exc}") from exc
    except BaseException:
        with anyio.CancelScope(shield=True):
            await db.dispose()
        raise
    return db
