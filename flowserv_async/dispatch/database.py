"""The durable run queue in PostgreSQL: any service process executes any PENDING run.

A new run is committed PENDING with no engine, together with a ``run_queue`` row that
holds its prepared job (:mod:`flowserv_async.dispatch.jobs`), and a notification on
:data:`CHANNEL`. Every process of the service listens there and claims runs when its
engine has free slots (``FLOWSERV_MAX_CONCURRENT_RUNS`` per process; without a limit,
:data:`CLAIM_BATCH` at a time): one transaction deletes the oldest queue rows with
``FOR UPDATE SKIP LOCKED`` and records the claiming engine on the runs, so each run is
claimed exactly once and concurrent claimers never wait for each other. Missed
notifications (a lost listening connection) are covered by a look at the queue every
``FLOWSERV_HEARTBEAT`` seconds.

What survives a process that dies: a run still in the queue is claimed by another
process; a run that the dead process had claimed (it starts claimed runs at once) is
failed after ``FLOWSERV_RUN_LEASE`` by the engines' sweep, as every run of a dead engine.

Cancelling a run that another process executes records a ``run_cancels`` row addressed
to that process's engine and notifies; the executing process deletes the request and
cancels the run in its engine (its processes are killed), which records CANCELED. The
caller waits for that state through the run's events.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from datetime import timedelta

import anyio
from sqlalchemy import delete, func, select, update
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession

from flowserv_async._util import utc_now
from flowserv_async.controller import EngineLimits, WorkflowController
from flowserv_async.db import DB
from flowserv_async.db._statements import on_session
from flowserv_async.db.listen import listen_forever
from flowserv_async.db.models import CancelRequest, QueuedRun, Run
from flowserv_async.db.runstate import NewRun, insert_runs, set_state
from flowserv_async.dispatch import RunDispatch, until_final
from flowserv_async.dispatch.jobs import decode_job, encode_job
from flowserv_async.engine.job import RunJob
from flowserv_async.errors import FlowservError, InvalidConfigurationError
from flowserv_async.events import EventFilter, EventHub, EventType
from flowserv_async.services.runstore import DatabaseRunStore
from flowserv_async.states import ACTIVE_STATES, FINAL_STATES, RunState

logger = logging.getLogger(__name__)

#: PostgreSQL channel that tells the service's processes about queued runs and cancels.
CHANNEL = "flowserv_runs"
#: Runs claimed in one transaction when the engine has no concurrency limit.
CLAIM_BATCH = 32

_QUEUED = "queued"
_CANCEL = "cancel"
# Seconds beyond the cancel grace that a canceller waits for the executing process.
_STOP_MARGIN = 5.0

_ACTIVE = [str(s) for s in ACTIVE_STATES]


class DatabaseQueue(RunDispatch):
    """Runs wait in the database until a process of the service claims them.

    Args:
        engine: the open workflow controller of this process; it must track its runs
            (:meth:`~flowserv_async.controller.WorkflowController.wait`), as the
            asyncio and Dask engines do.
        store: the run store of this process's engine (a queued run itself is created
            with its queue entry, in one transaction: see :meth:`create`).
        db: the database (PostgreSQL).
        hub: the events hub, through which a canceller sees the run end.
        limits: the engine's limits: slots, cancel grace, heartbeat (the look at the
            queue without a notification) and lease (how long cancel requests to a
            silent engine are kept).
        claim: False for a process that only queues and cancels runs (it executes
            none: a one-off session, whose engine closes right after it).

    """

    def __init__(
        self,
        engine: WorkflowController,
        store: DatabaseRunStore,
        db: DB,
        hub: EventHub,
        limits: EngineLimits,
        claim: bool = True,
    ) -> None:
        super().__init__(engine, store)
        if db.is_sqlite:
            raise InvalidConfigurationError(
                "FLOWSERV_RUN_QUEUE=database needs PostgreSQL (FLOWSERV_DATABASE)"
            )
        self._db = db
        self._hub = hub
        self._limits = limits
        self._claims = claim
        self._running: set[str] = set()
        self._claim_due = True
        self._cancels_due = True
        self._wake = anyio.Event()
        self._stop: anyio.Event | None = None
        self._supervisor: asyncio.Task[None] | None = None

    @property
    def owner(self) -> None:
        """A queued run has no engine until a process claims it."""
        return None

    @property
    def running(self) -> frozenset[str]:
        """The runs this process claimed that have not ended yet."""
        return frozenset(self._running)

    async def open(self) -> None:
        """Start listening and claiming (a process that claims nothing needs neither)."""
        if self._supervisor is not None:
            raise FlowservError("the run queue is already open")
        if not self._claims:
            return
        self._stop = anyio.Event()
        ready = anyio.Event()
        # Like the engine's: the one task outside a task group; aclose() awaits it.
        self._supervisor = asyncio.get_running_loop().create_task(self._supervise(ready))
        await ready.wait()

    async def aclose(self) -> None:
        """Stop claiming (runs already claimed are the engine's to stop)."""
        if self._stop is not None:
            self._stop.set()
        if self._supervisor is not None:
            with anyio.CancelScope(shield=True):
                await self._supervisor
        self._supervisor = self._stop = None

    async def create(self, run: NewRun, job: RunJob) -> None:
        """Create the run and its queue entry in one transaction; tell every process.

        Then this process looks at the queue at once: it claims the run if it has a
        free slot.
        """
        async with self._db.write_session() as session:
            await on_session(session, insert_runs, [run])
            session.add(QueuedRun(run_id=job.run_id, job=encode_job(job)))
            await session.flush()
            await _notify(session, _QUEUED)
        self._due(claim=True)

    async def cancel(self, run_id: str, reason: str) -> None:
        """Cancel a run wherever it is: queued, here, or in another process.

        A queued run is taken from the queue and recorded CANCELED. A run of another
        process gets a cancel request; this returns once that process recorded the end
        (its processes are gone), or after the cancel grace plus a margin.
        """
        async with self._hub.stream(EventFilter(run_id=run_id)) as stream:
            owner = await self._request_cancel(run_id, reason)
            if owner is None:
                return
            if owner == self.engine.engine_id:
                await self.engine.cancel_run(run_id, reason=reason)
                return
            # Subscribed before the request: the end that it causes is seen.
            with anyio.move_on_after(self._limits.cancel_grace + _STOP_MARGIN):
                async for event in stream:
                    if event.type == EventType.RUN_STATE and event.data["state"] in FINAL_STATES:
                        return

    async def _request_cancel(self, run_id: str, reason: str) -> str | None:
        """Take a queued run off the queue (CANCELED), or ask its engine; the engine."""
        async with self._db.write_session() as session:
            queued = await session.scalar(
                delete(QueuedRun).where(QueuedRun.run_id == run_id).returning(QueuedRun.run_id)
            )
            if queued is not None:
                await on_session(session, set_state, run_id, RunState.CANCELED, [reason])
                return None
            # A claimer that held the queue row has committed by now: its engine shows.
            owner = await session.scalar(
                select(Run.engine_id).where(Run.run_id == run_id, Run.state.in_(_ACTIVE))
            )
            if owner is not None and owner != self.engine.engine_id:
                request = insert(CancelRequest).values(
                    run_id=run_id, engine_id=owner, reason=reason, requested_at=utc_now()
                )
                await session.execute(
                    request.on_conflict_do_update(
                        index_elements=[CancelRequest.run_id],
                        set_={
                            "engine_id": request.excluded.engine_id,
                            "reason": request.excluded.reason,
                            "requested_at": request.excluded.requested_at,
                        },
                    )
                )
                await _notify(session, _CANCEL)
            return owner

    async def forward_cancels(self, session: AsyncSession, run_ids: Sequence[str]) -> None:
        """Address a cancel request to the engine of each run that another process executes."""
        if not run_ids:
            return
        owners = await session.execute(
            select(Run.run_id, Run.engine_id).where(
                Run.run_id.in_(list(run_ids)),
                Run.state.in_(_ACTIVE),
                Run.engine_id.is_not(None),
                Run.engine_id != self.engine.engine_id,
            )
        )
        rows = [{"run_id": r, "engine_id": e, "reason": None} for r, e in owners.all()]
        if rows:
            await session.execute(insert(CancelRequest).values(rows).on_conflict_do_nothing())
            await _notify(session, _CANCEL)

    async def wait(self, run_id: str) -> None:
        """Wait until the run has ended, in whichever process executes it."""
        await until_final(self._hub, self._db, run_id)
        await self.engine.wait(run_id)

    # -- the process's side: listen, claim, take cancel requests ------------------------

    def _due(self, *, claim: bool = False, cancels: bool = False) -> None:
        self._claim_due = self._claim_due or claim
        self._cancels_due = self._cancels_due or cancels
        self._wake.set()

    async def _supervise(self, ready: anyio.Event) -> None:
        assert self._stop is not None
        async with anyio.create_task_group() as tg:
            tg.start_soon(
                listen_forever,
                self._db.engine,
                CHANNEL,
                self._notified,
                self._look_for_missed,
                "queued runs",
            )
            tg.start_soon(self._work, tg)
            ready.set()
            await self._stop.wait()
            tg.cancel_scope.cancel()

    async def _work(self, tg: anyio.abc.TaskGroup) -> None:
        while True:
            self._wake = anyio.Event()
            claim, cancels = self._claim_due, self._cancels_due
            self._claim_due = self._cancels_due = False
            try:
                if cancels:
                    await self._take_cancels(tg)
                if claim:
                    await self._claim(tg)
            except Exception:
                logger.exception("cannot read the run queue; trying again")
                self._claim_due, self._cancels_due = claim, cancels
            if self._claim_due or self._cancels_due:
                continue
            with anyio.move_on_after(self._limits.heartbeat) as waited:
                await self._wake.wait()
            if waited.cancelled_caught:
                # No notification for a while: look anyway (one may have been lost).
                self._due(claim=True, cancels=True)

    def _free_slots(self) -> int:
        limit = self._limits.max_concurrent_runs
        return limit - len(self._running) if limit else CLAIM_BATCH

    async def _claim(self, tg: anyio.abc.TaskGroup) -> None:
        free = self._free_slots()
        if free <= 0:
            return
        # Shielded: a claim that commits must reach the engine (closing waits for it).
        with anyio.CancelScope(shield=True):
            jobs = await self._claim_jobs(free)
            for job in jobs:
                self._running.add(job.run_id)
                try:
                    await self.engine.start(job)
                except BaseException:
                    self._running.discard(job.run_id)
                    raise
                tg.start_soon(self._track, job.run_id, name=f"queued run {job.run_id}")
        if len(jobs) == free:
            self._due(claim=True)  # the queue may hold more

    async def _claim_jobs(self, count: int) -> list[RunJob]:
        """Take up to ``count`` of the oldest queued runs for this process's engine."""
        oldest = (
            select(QueuedRun.queue_id)
            .order_by(QueuedRun.queue_id)
            .limit(count)
            .with_for_update(skip_locked=True)
        )
        taken = delete(QueuedRun).where(QueuedRun.queue_id.in_(oldest.scalar_subquery()))
        jobs: list[RunJob] = []
        async with self._db.write_session() as session:
            rows = await session.execute(
                taken.returning(QueuedRun.queue_id, QueuedRun.run_id, QueuedRun.job)
            )
            ordered = sorted(rows.all(), key=lambda row: int(row.queue_id))
            if not ordered:
                return []
            await session.execute(
                update(Run)
                .where(Run.run_id.in_([row.run_id for row in ordered]))
                .values(engine_id=self.engine.engine_id, heartbeat_at=utc_now())
                .execution_options(synchronize_session=False)
            )
            for row in ordered:
                try:
                    jobs.append(decode_job(row.job))
                except FlowservError as exc:
                    await on_session(session, set_state, row.run_id, RunState.ERROR, [exc.message])
        return jobs

    async def _track(self, run_id: str) -> None:
        try:
            await self.engine.wait(run_id)
        finally:
            self._running.discard(run_id)
            self._due(claim=True)

    async def _take_cancels(self, tg: anyio.abc.TaskGroup) -> None:
        """Cancel the runs that other processes asked this engine to cancel."""
        expired = utc_now() - timedelta(seconds=self._limits.run_lease)
        async with self._db.write_session() as session:
            taken = await session.execute(
                delete(CancelRequest)
                .where(CancelRequest.engine_id == self.engine.engine_id)
                .returning(CancelRequest.run_id, CancelRequest.reason)
            )
            requests = taken.all()
            # Requests to engines that stopped reporting: their runs fail by the lease.
            await session.execute(delete(CancelRequest).where(CancelRequest.requested_at < expired))
        for run_id, reason in requests:
            tg.start_soon(self._cancel_here, run_id, reason, name=f"cancel run {run_id}")

    async def _cancel_here(self, run_id: str, reason: str | None) -> None:
        await self.engine.cancel_run(run_id, reason=reason)

    @asynccontextmanager
    async def _look_for_missed(self, conn: AsyncConnection) -> AsyncIterator[None]:
        # What was queued or requested while nobody listened.
        self._due(claim=True, cancels=True)
        yield

    def _notified(self, payload: str) -> None:
        self._due(claim=payload == _QUEUED, cancels=payload == _CANCEL)


async def _notify(session: AsyncSession, payload: str) -> None:
    """Tell every listening process, when the session's transaction commits."""
    await session.execute(select(func.pg_notify(CHANNEL, payload)))
