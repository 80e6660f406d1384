"""The asyncpg DBAPI adapter with lazy transactions: reads before the first write run alone.

SQLAlchemy's asyncpg adapter starts a transaction (``BEGIN``, a round trip of its own)
before the first statement of every connection checkout, and ends it with ``COMMIT``
or ``ROLLBACK``: a one-statement read costs three round trips. This adapter starts the
transaction only when one is needed:

- a plain read (:func:`reads_only`: a ``SELECT`` that takes no row lock and calls none
  of the functions with effects that the package uses) outside a transaction runs on
  its own, in the server's autocommit, so a session that only reads sends neither
  ``BEGIN`` nor ``COMMIT``;
- every other statement (writes, ``SELECT ... FOR UPDATE``, ``WITH`` queries, advisory
  locks, ``pg_notify``, ``SET``, server-side cursors, ``executemany``) begins the
  transaction first, as SQLAlchemy's adapter does;
- after :meth:`LazyTransactionConnection.begin_immediate` (a write session, see
  ``DB.begin_write``) the next statement begins it whatever it is, so a write session
  reads and writes in one transaction exactly as before;
- once a transaction is open every statement runs in it until it ends; ``commit()`` and
  ``rollback()`` send nothing when none is open.

Reads that ran before the first write are not part of the transaction. Under READ
COMMITTED, PostgreSQL's default and the level the package runs at, that changes
nothing: every statement of a transaction takes a new snapshot too, and a plain read
holds no lock. Under a stricter isolation level (a transaction-wide snapshot) every
statement begins the transaction, as before.

It plugs in through :func:`sqlalchemy.create_engine`'s public ``module`` argument and
subclasses SQLAlchemy's asyncpg adapter classes, overriding their
``_prepare_and_execute`` and ``_start_transaction`` and reading ``_transaction``. These
are internals, so the tested SQLAlchemy versions are pinned in ``pyproject.toml`` and
``tests/db/test_postgres_adapter.py`` checks them.
"""

from __future__ import annotations

import functools
import re
from typing import Any

import asyncpg
from sqlalchemy.dialects.postgresql.asyncpg import (
    AsyncAdapt_asyncpg_connection,
    AsyncAdapt_asyncpg_cursor,
    AsyncAdapt_asyncpg_dbapi,
)
from sqlalchemy.util.concurrency import await_

_SELECT = re.compile(r"\s*SELECT\b", re.IGNORECASE)

# What makes a SELECT need its transaction: a row lock (held until the transaction
# ends), SELECT INTO (creates a table), and the functions with effects that the package
# calls (advisory locks, notifications, sequences, settings).
_NEEDS_TRANSACTION = re.compile(
    r"\bFOR\s+(?:NO\s+KEY\s+UPDATE|UPDATE|KEY\s+SHARE|SHARE)\b|\bINTO\b"
    r"|\b(?:pg_advisory\w*|pg_try_advisory\w*|pg_notify|nextval|setval|set_config)\s*\(",
    re.IGNORECASE,
)

# Isolation levels at which each statement sees its own snapshot (None: the server's
# default, READ COMMITTED unless the server is configured otherwise).
_STATEMENT_SNAPSHOTS = (None, "read_committed")


@functools.lru_cache(maxsize=1024)
def reads_only(operation: str) -> bool:
    """True for a statement that may run outside a transaction (a plain ``SELECT``).

    Cached: the same statements come back (SQLAlchemy's compiled cache), and the search
    costs some 50 us for a statement of 700 characters.
    """
    return _SELECT.match(operation) is not None and _NEEDS_TRANSACTION.search(operation) is None


class LazyTransactionCursor(AsyncAdapt_asyncpg_cursor):
    """A cursor whose plain reads run outside a transaction when none is open."""

    __slots__ = ()

    async def _prepare_and_execute(self, operation: Any, parameters: Any) -> None:
        adapt = self._adapt_connection
        assert isinstance(adapt, LazyTransactionConnection)
        # Read by _start_transaction, which the parent calls only when no transaction is
        # open; one connection runs one statement at a time.
        adapt._alone = not adapt._begin_pending and reads_only(operation)
        try:
            await super()._prepare_and_execute(operation, parameters)
        finally:
            adapt._alone = False


class LazyTransactionConnection(AsyncAdapt_asyncpg_connection):
    """An asyncpg connection whose transactions begin with the first statement that needs one."""

    __slots__ = ("_alone", "_begin_pending")

    _cursor_cls = LazyTransactionCursor

    def __init__(self, dbapi: Any, connection: Any, **kw: Any) -> None:
        super().__init__(dbapi, connection, **kw)
        self._alone = False
        self._begin_pending = False

    def begin_immediate(self) -> None:
        """Begin a transaction with the next statement, even a read (a write session)."""
        if self._transaction is None:
            self._begin_pending = True

    async def _start_transaction(self) -> None:
        if self._alone and self.isolation_level in _STATEMENT_SNAPSHOTS:
            return
        self._begin_pending = False
        await super()._start_transaction()

    def commit(self) -> None:
        """Commit the open transaction; nothing is sent without one."""
        self._begin_pending = False
        super().commit()

    def rollback(self) -> None:
        """Roll back the open transaction; nothing is sent without one."""
        self._begin_pending = False
        super().rollback()


class LazyTransactionDBAPI(AsyncAdapt_asyncpg_dbapi):
    """The DBAPI module for ``create_async_engine(url, module=...)``."""

    def connect(self, *arg: Any, **kw: Any) -> LazyTransactionConnection:
        """Open an asyncpg connection and wrap it (the parent's ``connect``, our class)."""
        creator_fn = kw.pop("async_creator_fn", self.asyncpg.connect)
        cache_size = kw.pop("prepared_statement_cache_size", 100)
        name_func = kw.pop("prepared_statement_name_func", None)
        return await_(
            LazyTransactionConnection.create(
                self,
                creator_fn(*arg, **kw),
                prepared_statement_cache_size=cache_size,
                prepared_statement_name_func=name_func,
            )
        )


def lazy_transaction_dbapi() -> LazyTransactionDBAPI:
    """A new DBAPI module of the adapter."""
    return LazyTransactionDBAPI(asyncpg)
