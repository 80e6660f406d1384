"""The event table: events exist exactly when the change they describe commits."""

from __future__ import annotations

import pytest
from sqlalchemy import func, select

from flowserv_async import DB
from flowserv_async.db.models import StoredEvent
from flowserv_async.events import EventFilter, EventType
from flowserv_async.events.changes import ranking_changed
from flowserv_async.events.store import KEEP_KEY, id_range, read_events


class Boom(Exception):
    pass


async def stored(database: DB) -> list[tuple[str, str]]:
    async with database.session() as session:
        events = await read_events(session, 0, EventFilter(), 100)
    return [(e.data["runId"], e.data["reason"]) for e in events]


async def test_events_commit_and_roll_back_with_their_transaction(database: DB) -> None:
    async with database.write_session() as session:
        ranking_changed(session.sync_session, "wf", "kept", "ranked")
        with pytest.raises(Boom):
            async with session.begin_nested():
                ranking_changed(session.sync_session, "wf", "savepoint", "ranked")
                raise Boom
        async with session.begin_nested():
            ranking_changed(session.sync_session, "wf", "released", "ranked")
    with pytest.raises(Boom):
        async with database.write_session() as session:
            ranking_changed(session.sync_session, "wf", "rolled back", "ranked")
            raise Boom
    assert await stored(database) == [("kept", "ranked"), ("released", "ranked")]


async def test_ids_increase_and_filters_select(database: DB) -> None:
    for run_id in ("a", "b", "c"):
        async with database.write_session() as session:
            ranking_changed(session.sync_session, f"wf-{run_id}", run_id, "ranked")
    async with database.session() as session:
        everything = await read_events(session, 0, EventFilter(), 100)
        only_b = await read_events(session, 0, EventFilter(workflow_id="wf-b"), 100)
        after_first = await read_events(session, everything[0].id, EventFilter(), 1)
        first, last = await id_range(session)
    ids = [e.id for e in everything]
    assert ids == sorted(ids) and len(set(ids)) == 3
    assert (first, last) == (ids[0], ids[-1])
    assert [e.workflow_id for e in only_b] == ["wf-b"]
    assert after_first == everything[1:2]
    assert {e.type for e in everything} == {EventType.RANKING_CHANGED}


async def test_retention_keeps_the_newest_events(database: DB) -> None:
    database.session_factory.configure(info={KEEP_KEY: 2})
    for i in range(7):
        async with database.write_session() as session:
            ranking_changed(session.sync_session, "wf", str(i), "ranked")
    async with database.session() as session:
        count = await session.scalar(select(func.count()).select_from(StoredEvent))
    kept = [run_id for run_id, _ in await stored(database)]
    # Pruned whenever the largest id passes a multiple of the number kept.
    assert kept[-2:] == ["5", "6"] and count is not None and 2 <= count <= 3
