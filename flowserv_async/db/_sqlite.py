"""A thinner aiosqlite DBAPI adapter: one thread hand-off per statement, lazy transactions.

SQLAlchemy's aiosqlite adapter sends every cursor operation (open, execute, fetch,
close) to aiosqlite's thread on its own, and each round trip costs two thread
hand-offs; a read-only session also pays for ``BEGIN`` and ``COMMIT``. This adapter
runs a statement's execute, fetch and close as one call in the connection's thread,
and starts a transaction only when one is needed:

- a statement that changes the database (``INSERT``, ``UPDATE``, ``DELETE``, DDL,
  ``SAVEPOINT``) outside a transaction first runs ``BEGIN IMMEDIATE``, in the same call;
  so does the first statement after :meth:`StatementConnection.begin_immediate` (a write
  session, which must read and write in one transaction);
- reads outside a transaction run on their own (SQLite's autocommit), so a session that
  only reads sends neither ``BEGIN`` nor ``COMMIT``;
- ``commit()`` and ``rollback()`` do nothing when no transaction is open.

It plugs in through :func:`sqlalchemy.create_engine`'s public ``module`` argument and
subclasses SQLAlchemy's aiosqlite adapter classes; it calls aiosqlite's
``Connection._execute`` and ``_conn``. Both are internals, so the tested versions are
pinned in ``pyproject.toml`` and ``tests/db/test_sqlite_adapter.py`` checks them.
"""

from __future__ import annotations

import collections
import re
import sqlite3
from collections.abc import Callable
from typing import Any, TypeVar

import aiosqlite
from sqlalchemy.connectors.asyncio import AsyncAdapt_dbapi_connection
from sqlalchemy.dialects.sqlite.aiosqlite import (
    AsyncAdapt_aiosqlite_connection,
    AsyncAdapt_aiosqlite_cursor,
    AsyncAdapt_aiosqlite_dbapi,
)
from sqlalchemy.util import EMPTY_DICT
from sqlalchemy.util.concurrency import await_

T = TypeVar("T")

# The first keyword of statements that must run inside a transaction.
_WRITES = re.compile(
    r"\s*(INSERT|UPDATE|DELETE|REPLACE|CREATE|DROP|ALTER|SAVEPOINT)\b", re.IGNORECASE
)

# What one call in the connection's thread returns: description, rows (None when the
# statement returns none), rowcount, lastrowid, and whether a transaction is open.
_Outcome = tuple[Any, list[Any] | None, int, int | None, bool]


def _run(
    conn: sqlite3.Connection, operation: str, parameters: Any, many: bool, begin: bool
) -> _Outcome:
    """Execute one statement and fetch its rows (in aiosqlite's thread)."""
    if begin and not conn.in_transaction:
        conn.execute("BEGIN IMMEDIATE")
    if many:
        cursor = conn.executemany(operation, parameters)
    elif parameters is None:
        cursor = conn.execute(operation)
    else:
        cursor = conn.execute(operation, parameters)
    try:
        description = cursor.description
        rows = cursor.fetchall() if description else None
        return description, rows, cursor.rowcount, cursor.lastrowid, conn.in_transaction
    finally:
        cursor.close()


def _end(conn: sqlite3.Connection, commit: bool) -> None:
    if conn.in_transaction:
        if commit:
            conn.commit()
        else:
            conn.rollback()


class StatementCursor(AsyncAdapt_aiosqlite_cursor):
    """A cursor that executes and fetches a statement in one call to the thread."""

    __slots__ = ("_description", "_lastrowid", "_rowcount")

    # There is no driver cursor to close: rows are fetched with the statement.
    _awaitable_cursor_close = False

    def __init__(self, adapt_connection: AsyncAdapt_dbapi_connection) -> None:
        self._adapt_connection = adapt_connection
        self._connection = adapt_connection._connection
        self._cursor = None  # type: ignore[assignment]
        self._soft_closed_memoized = EMPTY_DICT
        self._rows = collections.deque()
        self._description: Any = None
        self._rowcount = -1
        self._lastrowid: int | None = None

    @property
    def description(self) -> Any:
        """The description of the last statement's columns (None without rows)."""
        return self._description

    @property
    def rowcount(self) -> int:
        """Rows changed by the last statement."""
        return self._rowcount

    @property
    def lastrowid(self) -> int:
        """The rowid of the last inserted row."""
        return self._lastrowid or 0

    def close(self) -> None:
        """Drop unread rows."""
        self._rows.clear()

    def execute(self, operation: Any, parameters: Any = None) -> Any:
        """Run a statement and keep its rows."""
        self._call(operation, parameters, many=False)

    def executemany(self, operation: Any, seq_of_parameters: Any) -> Any:
        """Run a statement for each parameter set."""
        self._call(operation, seq_of_parameters, many=True)

    def _call(self, operation: str, parameters: Any, many: bool) -> None:
        adapt = self._adapt_connection
        assert isinstance(adapt, StatementConnection)
        begin = adapt._begin_pending or _WRITES.match(operation) is not None
        adapt._begin_pending = False
        try:
            outcome: _Outcome = await_(
                self._connection._execute(
                    _run, self._connection._conn, operation, parameters, many, begin
                )
            )
        except Exception as error:
            # A failed statement may have begun a transaction (BEGIN IMMEDIATE ran):
            # let commit/rollback ask the driver instead of skipping it.
            adapt._in_transaction = True
            adapt._handle_exception(error)
        self._description, rows, self._rowcount, self._lastrowid, in_tx = outcome
        adapt._in_transaction = in_tx
        self._rows = collections.deque(rows or ())


class StatementConnection(AsyncAdapt_aiosqlite_connection):
    """An aiosqlite connection whose transactions begin with the first write."""

    __slots__ = ("_begin_pending", "_in_transaction")

    _cursor_cls = StatementCursor

    def __init__(self, dbapi: Any, connection: Any) -> None:
        super().__init__(dbapi, connection)
        self._in_transaction = False
        self._begin_pending = False

    def run(self, call: Callable[..., T], *args: Any) -> T:
        """``call(sqlite3 connection, *args)`` as one call in the connection's thread.

        A closed connection raises ``sqlite3.OperationalError``, as SQLAlchemy's adapter
        reports it, so that the dialect sees a disconnect.
        """
        try:
            result: T = await_(self._connection._execute(call, self._connection._conn, *args))
        except ValueError as error:
            if error.args in (("no active connection",), ("Connection closed",)):
                raise sqlite3.OperationalError(error.args[0]) from error
            raise
        return result

    def begin_immediate(self) -> None:
        """Begin a write transaction (``BEGIN IMMEDIATE``) with the next statement."""
        self._begin_pending = True

    def commit(self) -> None:
        """Commit the open transaction; nothing to do without one."""
        self._end(commit=True)

    def rollback(self) -> None:
        """Roll back the open transaction; nothing to do without one."""
        self._end(commit=False)

    def _end(self, commit: bool) -> None:
        self._begin_pending = False
        if not self._in_transaction or not self._connection._connection:
            return
        try:
            await_(self._connection._execute(_end, self._connection._conn, commit))
        except Exception as error:
            self._handle_exception(error)
        finally:
            self._in_transaction = False


class StatementDBAPI(AsyncAdapt_aiosqlite_dbapi):
    """The DBAPI module for ``create_async_engine(url, module=...)``."""

    def connect(self, *arg: Any, **kw: Any) -> StatementConnection:
        """Open an aiosqlite connection and wrap it."""
        connection = self.aiosqlite.connect(*arg, **kw)
        connection._thread.daemon = True
        return StatementConnection(self, await_(connection))


def statement_dbapi() -> StatementDBAPI:
    """A new DBAPI module of the adapter."""
    return StatementDBAPI(aiosqlite, sqlite3)
