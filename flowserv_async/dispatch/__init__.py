"""Who executes a new run: the process that created it, or any process of the service.

``FLOWSERV_RUN_QUEUE=memory`` (the default, :class:`RunDispatch`): the runs service hands
each new run to the engine of its own process, which keeps its queue in memory. A run
whose process dies becomes ERROR after ``FLOWSERV_RUN_LEASE``.

``FLOWSERV_RUN_QUEUE=database`` (PostgreSQL, :class:`~flowserv_async.dispatch.database.
DatabaseQueue`): a new run waits in the ``run_queue`` table with its prepared job, and
every service process on the database claims runs from it, first in first out, as its
engine has free slots. Cancel requests travel through the database to the process that
executes the run. Several API processes then share one database as one service.

The runs service hands a new run over with :meth:`RunDispatch.create` (after its own
session committed), and later calls :meth:`RunDispatch.cancel` / :meth:`RunDispatch.wait`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from flowserv_async.controller import WorkflowController
from flowserv_async.db import DB
from flowserv_async.db.models import Run
from flowserv_async.engine.job import RunJob
from flowserv_async.errors import FlowservError
from flowserv_async.events import EventFilter, EventHub, EventType
from flowserv_async.states import FINAL_STATES

if TYPE_CHECKING:
    from flowserv_async.db.runstate import NewRun
    from flowserv_async.services.runstore import DatabaseRunStore


class RunDispatch:
    """Hands new runs to the engine of this process (``FLOWSERV_RUN_QUEUE=memory``).

    Args:
        engine: the open workflow controller of this process.
        store: the run store, whose writer creates the runs (batched with the runs
            created meanwhile).

    """

    def __init__(self, engine: WorkflowController, store: DatabaseRunStore) -> None:
        self.engine = engine
        self.store = store

    @property
    def owner(self) -> str | None:
        """The engine recorded on a new run: this process's (None: not yet known)."""
        return self.engine.engine_id

    async def open(self) -> None:
        """Start what the dispatch needs (called by the factory after the engine)."""

    async def aclose(self) -> None:
        """Stop taking runs (called by the factory before the engine closes)."""

    async def create(self, run: NewRun, job: RunJob) -> None:
        """Create the PENDING run (committed when this returns) and set it going."""
        await self.store.create_run(run)
        await self.engine.start(job)

    async def cancel(self, run_id: str, reason: str) -> None:
        """Cancel a run; its processes are gone when this returns (bounded by the grace)."""
        await self.engine.cancel_run(run_id, reason=reason)

    async def forward_cancels(self, session: AsyncSession, run_ids: Sequence[str]) -> None:
        """Ask other processes to stop these runs, which the session is about to delete."""

    async def wait(self, run_id: str) -> None:
        """Wait until a run has ended and its engine is done with it."""
        await self.engine.wait(run_id)


async def until_final(hub: EventHub, db: DB, run_id: str) -> bool:
    """Wait until a run is in a final state, whichever process ends it; False if unknown.

    Waits on the run's events, so a run of another process that shares the database is
    seen as soon as its end is committed (PostgreSQL) or polled (SQLite).
    """
    # Subscribed before the state is read: an end committed in between is seen.
    async with hub.stream(EventFilter(run_id=run_id)) as stream:
        async with db.session() as session:
            state = await session.scalar(select(Run.state).where(Run.run_id == run_id))
        if state is None:
            return False
        if state in FINAL_STATES:
            return True
        async for event in stream:
            if event.type == EventType.RUN_STATE and event.data["state"] in FINAL_STATES:
                return True
    raise FlowservError(f"the event stream closed before run '{run_id}' ended")


__all__ = ["RunDispatch", "until_final"]
