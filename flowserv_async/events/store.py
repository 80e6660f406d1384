"""The durable event table: writing events with the change they describe, and reading.

:func:`emit` only records an event in the session. When the session's transaction
commits, the events are inserted just before the ``COMMIT`` (so they exist exactly when
the change does; a rolled-back savepoint drops its events). On PostgreSQL the insert
first takes a transaction-scoped advisory lock and ends with ``pg_notify``: ids are
then committed in increasing order, and every listening process is told the new
largest id when the transaction commits. SQLite has one writer at a time, so ids are in
commit order there anyway.
"""

from __future__ import annotations

import json
from datetime import UTC
from typing import Any
from typing import cast as typed

from sqlalchemy import (
    BigInteger,
    String,
    Table,
    bindparam,
    column,
    delete,
    event,
    func,
    insert,
    select,
    text,
)
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession
from sqlalchemy.orm import Session, SessionTransaction

from flowserv_async._util import utc_now
from flowserv_async.db._statements import SessionStatements, Statements
from flowserv_async.db.models import StoredEvent
from flowserv_async.events.model import Event, EventFilter, EventType

#: PostgreSQL channel that carries the largest new event id.
CHANNEL = "flowserv_events"
#: Key of the advisory lock that orders event writers on PostgreSQL.
LOCK_KEY = 0x666C6F77
#: Retention runs when the largest id crosses a multiple of this (or of the number kept).
PRUNE_EVERY = 1000

# Keys in ``Session.info``.
_PENDING = "flowserv_events_pending"
_WRITTEN = "flowserv_events_written"
NOTIFY_KEY = "flowserv_events_notify"
MEMBERS_KEY = "flowserv_events_members_changed"
_MEMBERS_CHANGED = "flowserv_members_changed"
KEEP_KEY = "flowserv_events_keep"
DEFAULT_KEEP = 100_000

_TABLE = typed(Table, StoredEvent.__table__)


EventTarget = Session | list[dict[str, Any]]
"""Where events are recorded: a session (written at its commit), or a list that the
caller writes with :func:`write_events` before its commit (the SQLite writer thread)."""


def emit(
    target: EventTarget,
    type: EventType,
    *,
    workflow_id: str,
    group_id: str | None,
    run_id: str | None,
    data: dict[str, Any],
) -> None:
    """Record an event in the session; it is written if and when the change commits."""
    row = {
        "type": str(type),
        "workflow_id": workflow_id,
        "group_id": group_id,
        "run_id": run_id,
        "created_at": utc_now(),
        "data": data,
    }
    if isinstance(target, list):
        target.append(row)
        return
    transaction = target.get_nested_transaction() or target.get_transaction()
    target.info.setdefault(_PENDING, []).append((transaction, row))


def has_pending(session: Session) -> bool:
    """True when the session recorded events that its commit has to write."""
    return bool(session.info.get(_PENDING))


# PostgreSQL, in one round trip: take the advisory lock (held until the commit ends, so
# the next writer's ids are larger and commit later; every inserted row needs the lock's
# row first, so no id is drawn before it), insert, and notify the largest new id
# (delivered when the transaction commits).
_PG_WRITE = text(
    """
    WITH locked AS (SELECT pg_advisory_xact_lock(:key)),
    inserted AS (
        INSERT INTO events (type, workflow_id, group_id, run_id, created_at, data)
        SELECT r.type, r.workflow_id, r.group_id, r.run_id, r.created_at, r.data
        FROM locked, json_to_recordset(CAST(:rows AS json)) AS r(
            type text, workflow_id text, group_id text, run_id text,
            created_at timestamp, data json)
        RETURNING event_id
    )
    SELECT min(event_id), max(event_id), pg_notify(:channel, max(event_id)::text)
    FROM inserted
    """
).columns(column("first", BigInteger), column("last", BigInteger), column("notified", String))


_SQLITE_WRITE = insert(_TABLE).returning(_TABLE.c.event_id)

_PRUNE = delete(_TABLE).where(_TABLE.c.event_id <= bindparam("last_dropped"))


def _pg_params(rows: list[dict[str, Any]]) -> dict[str, Any]:
    doc = [
        {**row, "created_at": row["created_at"].astimezone(UTC).replace(tzinfo=None).isoformat()}
        for row in rows
    ]
    return {"key": LOCK_KEY, "channel": CHANNEL, "rows": json.dumps(doc)}


@event.listens_for(Session, "before_commit")
def _write_pending(session: Session) -> None:
    if session.in_nested_transaction():
        return
    pending: list[tuple[SessionTransaction | None, dict[str, Any]]] = session.info.pop(_PENDING, [])
    if not pending:
        return
    statements = SessionStatements(session)
    dialect = session.get_bind().dialect.name
    keep = int(session.info.get(KEEP_KEY, DEFAULT_KEEP))
    rows = [row for _, row in pending]
    session.info[_WRITTEN] = write_events(statements, dialect, rows, keep)


def write_events(
    statements: Statements, dialect: str, rows: list[dict[str, Any]], keep: int
) -> int:
    """Insert events (before the commit of their change); returns the largest new id.

    Every ``PRUNE_EVERY`` ids (or ``keep``, when smaller) the events beyond the newest
    ``keep`` are deleted (none when ``keep`` is 0).
    """
    if dialect == "postgresql":
        first, last, _ = statements.execute(_PG_WRITE, _pg_params(rows))[0]
    else:
        # Parameter sets, not one statement with the rows in it: that is compiled anew
        # for every batch (about 4x the CPU for 64 rows). Only the smallest and largest
        # id are needed, so the ids may come back in any order (SQLAlchemy then sends
        # many rows per INSERT).
        ids = [row[0] for row in statements.execute(_SQLITE_WRITE, rows)]
        first, last = min(ids), max(ids)
    every = min(keep, PRUNE_EVERY)
    if keep and (first - 1) // every != last // every and last > keep:
        statements.execute(_PRUNE, {"last_dropped": last - keep})
    return int(last)


def members_changed(session: AsyncSession) -> None:
    """The transaction changes who is a member of some group (or deletes a group).

    When it commits, the event streams of this process look up membership again before
    they show the next group event.
    """
    session.sync_session.info[_MEMBERS_CHANGED] = True


@event.listens_for(Session, "after_commit")
def _wake_consumers(session: Session) -> None:
    if session.info.pop(_MEMBERS_CHANGED, False):
        changed = session.info.get(MEMBERS_KEY)
        if changed is not None:
            changed()
    last = session.info.pop(_WRITTEN, None)
    if last is not None:
        notify = session.info.get(NOTIFY_KEY)
        if notify is not None:
            notify(last)


@event.listens_for(Session, "after_soft_rollback")
def _drop_rolled_back(session: Session, previous_transaction: SessionTransaction) -> None:
    if previous_transaction.parent is None:
        session.info.pop(_PENDING, None)
        session.info.pop(_WRITTEN, None)
        session.info.pop(_MEMBERS_CHANGED, None)
        return
    pending = session.info.get(_PENDING)
    if pending:
        session.info[_PENDING] = [
            (t, row) for t, row in pending if not _within(t, previous_transaction)
        ]


def _within(transaction: SessionTransaction | None, ancestor: SessionTransaction) -> bool:
    while transaction is not None:
        if transaction is ancestor:
            return True
        transaction = transaction.parent
    return False


def _filtered(stmt: Any, flt: EventFilter) -> Any:
    if flt.run_id is not None:
        stmt = stmt.where(StoredEvent.run_id == flt.run_id)
    if flt.group_id is not None:
        stmt = stmt.where(StoredEvent.group_id == flt.group_id)
    if flt.workflow_id is not None:
        stmt = stmt.where(StoredEvent.workflow_id == flt.workflow_id)
    return stmt


async def read_events(
    session: AsyncSession | AsyncConnection, after: int, flt: EventFilter, limit: int
) -> list[Event]:
    """The first ``limit`` stored events after id ``after`` that match the filter."""
    stmt = _filtered(select(_TABLE), flt)
    stmt = stmt.where(StoredEvent.event_id > after).order_by(StoredEvent.event_id).limit(limit)
    return [
        Event(
            id=row.event_id,
            type=EventType(row.type),
            time=row.created_at,
            workflow_id=row.workflow_id,
            group_id=row.group_id,
            run_id=row.run_id,
            data=row.data,
        )
        for row in (await session.execute(stmt)).all()
    ]


async def id_range(session: AsyncSession | AsyncConnection) -> tuple[int, int]:
    """The smallest and largest stored event id, ``(0, 0)`` for an empty store."""
    row = (
        await session.execute(
            select(func.min(StoredEvent.event_id), func.max(StoredEvent.event_id))
        )
    ).one()
    return int(row[0] or 0), int(row[1] or 0)


async def last_id(session: AsyncSession | AsyncConnection, flt: EventFilter) -> int:
    """The largest stored event id that matches the filter, 0 if none does."""
    stmt = _filtered(select(func.max(StoredEvent.event_id)), flt)
    return int(await session.scalar(stmt) or 0)
