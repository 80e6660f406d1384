"""Where the run writes execute: on a sync ``Session``, or compiled once on a raw connection.

The run writes (:mod:`flowserv_async.db.runstate`) are Core statements, defined once,
that run through :class:`Statements`:

- :class:`SessionStatements` runs them on a sync :class:`~sqlalchemy.orm.Session` (every
  backend: ``AsyncSession.run_sync``), events recorded in the session;
- :class:`CompiledStatements` runs them on the SQLite writer thread's own pysqlite
  connection (:meth:`flowserv_async.db.DB.write_in_thread`), each statement compiled once
  per set of parameter names, values converted by the types' own SQLAlchemy processors,
  events collected in a list for the caller to write before the commit.

The API's reads on SQLite (:meth:`flowserv_async.db.DB.read`) run on
:class:`CompiledStatements` too, outside a transaction, in the thread of a pooled
aiosqlite connection (:func:`read_compiled`), their rows named tuples with a
``Result``'s ``all()`` and ``first()`` (:class:`Rows`).

Why the second: a writer transaction (BEGIN, a statement or two, the event, COMMIT)
through a sync ``Session`` cost about 400 us of CPU, most of it SQLAlchemy's session and
execution context (and the rendering of ``IN`` lists for every call), against some 20 us
in SQLite; compiled once, about 130 us with the hand-off from the event loop (see
``benchmarks/README.md``, issue-11b). A statement with expanding parameters (``IN``
lists: ``db/runstate.py`` binds lists as one JSON text instead) or with Python-side
column defaults is refused, so it cannot silently run differently from the session
path. ``compile()``, ``positiontup``, ``binds`` and the types' processors are the
public SQLAlchemy API this relies on.
"""

from __future__ import annotations

from collections import namedtuple
from collections.abc import Callable, Mapping, MutableMapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar
from typing import cast as typed

from sqlalchemy.engine import Dialect
from sqlalchemy.engine.interfaces import DBAPIConnection
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import Session
from sqlalchemy.sql.dml import UpdateBase
from sqlalchemy.sql.expression import ClauseElement, Executable, SelectBase
from sqlalchemy.util import LRUCache

T = TypeVar("T")

#: One parameter set, or several (executemany).
Params = Mapping[str, Any] | Sequence[Mapping[str, Any]]


class Rows(list[Any]):
    """The rows of a statement, named tuples, with ``all()`` and ``first()`` of a ``Result``."""

    def all(self) -> list[Any]:
        """All rows."""
        return self

    def first(self) -> Any:
        """The first row, or None without rows."""
        return self[0] if self else None


class Statements(Protocol):
    """Runs Core statements inside a transaction that the caller owns."""

    @property
    def events(self) -> Session | list[dict[str, Any]]:
        """Where :func:`flowserv_async.events.store.emit` records the events."""
        ...

    def execute(self, stmt: Executable, params: Params) -> list[tuple[Any, ...]]:
        """Run a statement; its rows (none for a statement that returns none)."""
        ...


async def on_session(session: AsyncSession, write: Callable[..., T], *args: Any) -> T:
    """``write(statements, *args)`` on the session's connection, in its transaction."""
    return await session.run_sync(_with_statements, write, *args)


def _with_statements(session: Session, write: Callable[..., T], *args: Any) -> T:
    return write(SessionStatements(session), *args)


class SessionStatements:
    """:class:`Statements` on a sync session (any backend)."""

    def __init__(self, session: Session) -> None:
        self.session = session

    @property
    def events(self) -> Session:
        """The session: its commit writes the events."""
        return self.session

    def execute(self, stmt: Executable, params: Params) -> list[tuple[Any, ...]]:
        """Run a statement in the session."""
        result: Any = self.session.execute(stmt, params)
        return [tuple(row) for row in result] if result.returns_rows else []


@dataclass(frozen=True, slots=True)
class _Compiled:
    """A statement compiled for one dialect and one set of parameter names."""

    sql: str
    names: tuple[str, ...]
    defaults: Mapping[str, Any]
    binds: tuple[Callable[[Any], Any] | None, ...]
    results: tuple[Callable[[Any], Any] | None, ...]
    row_type: Callable[..., tuple[Any, ...]]

    def parameters(self, values: Mapping[str, Any]) -> tuple[Any, ...]:
        out = []
        for name, process in zip(self.names, self.binds, strict=True):
            value = values[name] if name in values else self.defaults[name]
            out.append(value if process is None else process(value))
        return tuple(out)

    def row(self, raw: Sequence[Any]) -> tuple[Any, ...]:
        return self.row_type(
            *(
                value if process is None else process(value)
                for value, process in zip(raw, self.results, strict=True)
            )
        )


def _compile(stmt: Executable, dialect: Dialect, keys: tuple[str, ...]) -> _Compiled:
    compiled: Any = typed(ClauseElement, stmt).compile(dialect=dialect, column_keys=list(keys))
    binds = [compiled.binds[name] for name in compiled.positiontup]
    if any(bind.expanding for bind in binds):
        raise ValueError(f"a statement with expanding parameters cannot be compiled once: {stmt}")
    if compiled.insert_prefetch or compiled.update_prefetch:
        raise ValueError(f"a statement with Python-side defaults cannot be compiled once: {stmt}")
    columns = list(stmt.exported_columns) if isinstance(stmt, SelectBase | UpdateBase) else []
    return _Compiled(
        sql=compiled.string,
        names=tuple(compiled.positiontup),
        defaults={
            name: bind.effective_value for name, bind in compiled.binds.items() if not bind.required
        },
        binds=tuple(b.type.dialect_impl(dialect).bind_processor(dialect) for b in binds),
        results=tuple(
            c.type.dialect_impl(dialect).result_processor(dialect, None) for c in columns
        ),
        # Named as a Result's rows are: by the columns' keys (labels).
        row_type=namedtuple("Row", [c.key for c in columns], rename=True),  # type: ignore[misc]
    )


CompiledCache = MutableMapping[tuple[Executable, tuple[str, ...]], _Compiled]

# Compiled statements kept: more than the run store and the reads use (some 40), so
# that only statements built per call pattern (a leaderboard per sort order, in an LRU
# cache of their own) are ever evicted, and they do not accumulate.
_CACHE_CAPACITY = 500


def compiled_cache() -> CompiledCache:
    """A new cache for :class:`CompiledStatements`: bounded, shared by threads."""
    cache: CompiledCache = LRUCache(_CACHE_CAPACITY)
    return cache


class CompiledStatements:
    """:class:`Statements` on a pysqlite connection, each statement compiled once.

    Args:
        connection: the DBAPI connection, in a transaction that the caller owns.
        dialect: the dialect that compiles the statements.
        cache: compiled statements by statement and parameter names, kept by the
            caller across transactions (:func:`compiled_cache`). The statements must be
            built once (module constants, or cached by what they depend on), or each
            call compiles anew.

    """

    def __init__(
        self,
        connection: DBAPIConnection,
        dialect: Dialect,
        cache: CompiledCache,
    ) -> None:
        self.connection = connection
        self.dialect = dialect
        self.cache = cache
        self._events: list[dict[str, Any]] = []

    @property
    def events(self) -> list[dict[str, Any]]:
        """The events recorded so far; the caller writes them before the commit."""
        return self._events

    def execute(self, stmt: Executable, params: Params) -> Rows:
        """Run a statement; DBAPI errors are raised as SQLAlchemy's (``IntegrityError``...)."""
        sets = [params] if isinstance(params, Mapping) else list(params)
        if not sets:
            return Rows()
        key = (stmt, tuple(sets[0]))
        compiled = self.cache.get(key)
        if compiled is None:
            compiled = self.cache[key] = _compile(stmt, self.dialect, key[1])
        cursor = self.connection.cursor()
        try:
            return _run(cursor, compiled, sets)
        except self.dialect.loaded_dbapi.Error as exc:
            raise DBAPIError.instance(
                compiled.sql, sets, exc, self.dialect.loaded_dbapi.Error
            ) from exc
        finally:
            cursor.close()

    def commit(self) -> None:
        """Commit the transaction; a failure is raised as SQLAlchemy's error."""
        try:
            self.connection.commit()
        except self.dialect.loaded_dbapi.Error as exc:
            raise DBAPIError.instance("COMMIT", (), exc, self.dialect.loaded_dbapi.Error) from exc


def read_compiled(
    connection: DBAPIConnection,
    dialect: Dialect,
    cache: CompiledCache,
    read: Callable[..., T],
    args: tuple[Any, ...],
) -> T:
    """``read(statements, *args)`` outside a transaction, each statement compiled once."""
    return read(CompiledStatements(connection, dialect, cache), *args)


def _run(cursor: Any, compiled: _Compiled, sets: list[Mapping[str, Any]]) -> Rows:
    """Send one statement to the driver: each set on its own when it returns rows."""
    if not compiled.results and len(sets) > 1:
        cursor.executemany(compiled.sql, [compiled.parameters(values) for values in sets])
        return Rows()
    rows = Rows()
    for values in sets:
        cursor.execute(compiled.sql, compiled.parameters(values))
        if compiled.results:
            rows.extend(compiled.row(raw) for raw in cursor.fetchall())
    return rows
