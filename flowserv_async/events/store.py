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

from typing import Any
from typing import cast as typed

from sqlalchemy import String, Table, cast, delete, event, func, insert, select, text
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import Session, SessionTransaction

from flowserv_async._util import utc_now
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
KEEP_KEY = "flowserv_events_keep"
DEFAULT_KEEP = 100_000

_TABLE = typed(Table, StoredEvent.__table__)


def emit(
    session: AsyncSession,
    type: EventType,
    *,
    workflow_id: str,
    group_id: str | None,
    run_id: str | None,
    data: dict[str, Any],
) -> None:
    """Record an event in the session; it is written if and when the change commits."""
    sync = session.sync_session
    transaction = sync.get_nested_transaction() or sync.get_transaction()
    row = {
        "type": str(type),
        "workflow_id": workflow_id,
        "group_id": group_id,
        "run_id": run_id,
        "created_at": utc_now(),
        "data": data,
    }
    sync.info.setdefault(_PENDING, []).append((transaction, row))


@event.listens_for(Session, "before_commit")
def _write_pending(session: Session) -> None:
    if session.in_nested_transaction():
        return
    pending: list[tuple[SessionTransaction | None, dict[str, Any]]] = session.info.pop(_PENDING, [])
    if not pending:
        return
    postgres = session.get_bind().dialect.name == "postgresql"
    if postgres:
        # Held until the commit ends: the next writer's ids are larger and commit later.
        session.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": LOCK_KEY})
    table = _TABLE
    inserted = insert(table).values([row for _, row in pending]).returning(table.c.event_id)
    if postgres:
        # One round trip while the lock is held: insert, and notify the largest new id
        # (delivered when the transaction commits).
        rows = inserted.cte("inserted")
        largest = func.max(rows.c.event_id)
        stmt = select(
            func.min(rows.c.event_id), largest, func.pg_notify(CHANNEL, cast(largest, String))
        )
        first, last, _ = session.execute(stmt).one()
    else:
        ids = list(session.execute(inserted).scalars())
        first, last = min(ids), max(ids)
    keep = int(session.info.get(KEEP_KEY, DEFAULT_KEEP))
    every = min(keep, PRUNE_EVERY)
    if keep and (first - 1) // every != last // every and last > keep:
        session.execute(delete(table).where(table.c.event_id <= last - keep))
    session.info[_WRITTEN] = last


@event.listens_for(Session, "after_commit")
def _wake_consumers(session: Session) -> None:
    if session.info.pop(_WRITTEN, None) is not None:
        notify = session.info.get(NOTIFY_KEY)
        if notify is not None:
            notify()


@event.listens_for(Session, "after_soft_rollback")
def _drop_rolled_back(session: Session, previous_transaction: SessionTransaction) -> None:
    if previous_transaction.parent is None:
        session.info.pop(_PENDING, None)
        session.info.pop(_WRITTEN, None)
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
    session: AsyncSession, after: int, flt: EventFilter, limit: int
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


async def id_range(session: AsyncSession) -> tuple[int, int]:
    """The smallest and largest stored event id, ``(0, 0)`` for an empty store."""
    row = (
        await session.execute(
            select(func.min(StoredEvent.event_id), func.max(StoredEvent.event_id))
        )
    ).one()
    return int(row[0] or 0), int(row[1] or 0)
