"""The database's :class:`~flowserv_async.engine.store.RunStore`.

:class:`SessionRunStore` applies the engine's reports inside a caller's session (the
``RunService.update_run`` callback); :class:`DatabaseRunStore` writes the reports of
all runs of the asyncio engine in batched transactions (group commit). Both write through
:mod:`flowserv_async.db.runstate`; a run state is persisted nowhere else.
"""

from __future__ import annotations

import asyncio
import functools
import logging
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import anyio
from sqlalchemy.ext.asyncio import AsyncSession

from flowserv_async.db import DB, runstate
from flowserv_async.db._statements import CompiledStatements, Statements, on_session
from flowserv_async.engine.job import ResultSpec, RunJob
from flowserv_async.engine.log import LogEntry
from flowserv_async.engine.store import RunOutcome, SavedResults
from flowserv_async.errors import FlowservError
from flowserv_async.events.store import DEFAULT_KEEP, KEEP_KEY, NOTIFY_KEY, write_events
from flowserv_async.services.postproc import start_postproc
from flowserv_async.states import RunState

logger = logging.getLogger(__name__)


class SessionRunStore:
    """A run store on one session whose transaction the caller commits.

    The session must be in a write transaction (``DB.begin_write``).

    Args:
        session: the session.
        engine_config: the service-wide engine configuration
            (``FLOWSERV_SERIAL_ENGINECONFIG``) for post-processing runs.

    """

    def __init__(self, session: AsyncSession, engine_config: str | None = None) -> None:
        self.session = session
        self.engine_config = engine_config

    async def mark_running(self, run_id: str, processes: Mapping[str, str] | None = None) -> bool:
        """Move a PENDING run to RUNNING, with the record of its processes."""
        return await on_session(
            self.session, runstate.set_state, run_id, RunState.RUNNING, None, processes
        )

    async def finish(self, run_id: str, state: RunState, messages: Sequence[str] = ()) -> bool:
        """Move an active run to a final state with messages."""
        return await on_session(self.session, runstate.set_state, run_id, state, messages)

    async def save_results(
        self, spec: ResultSpec, outcome: RunOutcome, engine_id: str
    ) -> SavedResults:
        """Record the success and create the post-processing run it makes due."""
        return (await self.save_many([(spec, outcome, engine_id)]))[0]

    async def save_many(
        self, results: Sequence[tuple[ResultSpec, RunOutcome, str]]
    ) -> list[SavedResults]:
        """:meth:`save_results` for many runs, with one statement per table."""
        recorded = await on_session(
            self.session,
            runstate.record_successes,
            [(spec, outcome) for spec, outcome, _ in results],
        )
        return [
            await self.start_due_postproc(spec, outcome, engine_id, spec.run_id in recorded)
            for spec, outcome, engine_id in results
        ]

    async def start_due_postproc(
        self, spec: ResultSpec, outcome: RunOutcome, engine_id: str, recorded: bool
    ) -> SavedResults:
        """What recording a success did, with the post-processing run it made due."""
        if not recorded:
            return SavedResults(recorded=False)
        postproc = None
        if _makes_postproc_due(spec, outcome):
            postproc = await self._start_postproc(spec.workflow_id, engine_id)
        return SavedResults(recorded=True, postproc=postproc)

    async def _start_postproc(self, workflow_id: str, engine_id: str) -> RunJob | None:
        """Create a post-processing run if the ranking changed (SPEC 7).

        Inside a savepoint: a failure here is logged and never undoes the success.
        """
        try:
            async with self.session.begin_nested():
                return await start_postproc(
                    self.session, workflow_id, engine_id, self.engine_config
                )
        except Exception:
            logger.exception("cannot start post-processing of workflow %s", workflow_id)
            return None

    async def append_log(
        self, run_id: str, entries: Sequence[LogEntry], keep_from: int = 0
    ) -> None:
        """Store log lines of a run; drop its stored lines before ``keep_from``."""
        await on_session(self.session, runstate.append_log, run_id, entries, keep_from)

    async def heartbeat(self, engine_id: str, run_ids: Sequence[str]) -> None:
        """Refresh the heartbeat of the engine's runs."""
        await on_session(self.session, runstate.heartbeat, engine_id, run_ids)

    async def fail_stale_runs(
        self, engine_id: str, lease: float, tracked: Collection[str] | None = None
    ) -> list[str]:
        """Fail active runs of engines that stopped reporting."""
        return await on_session(self.session, runstate.fail_stale_runs, engine_id, lease, tracked)

    async def leftovers(self, run_ids: Collection[str]) -> dict[str, Any]:
        """The ``processes`` records of these runs."""
        return await on_session(self.session, runstate.run_processes, run_ids)


def _makes_postproc_due(spec: ResultSpec, outcome: RunOutcome) -> bool:
    """True when recording this success may start a post-processing run."""
    return spec.has_postproc and outcome.results is not None


@dataclass(eq=False)
class _Report:
    """One report waiting for the writer: what to write, then its outcome."""

    kind: str
    args: tuple[Any, ...]
    # asyncio's own event (anyio cancels by cancelling the task, so it still applies):
    # anyio's finds its backend on every creation, and a run makes several reports.
    done: asyncio.Event = field(default_factory=asyncio.Event)
    result: Any = None
    error: Exception | None = None
    awaited: bool = True


class DatabaseRunStore:
    """A run store on the database, with group commit.

    While open (:meth:`open` ... :meth:`aclose`), one writer task writes the reports of
    all runs: every report queued while a transaction runs goes into the next one, state
    changes to the same target as one ``UPDATE ... RETURNING`` (which only moves runs
    along allowed transitions), log lines as one ``INSERT``. On SQLite the whole
    transaction is one call in the database's writer thread (:meth:`DB.write_in_thread`),
    off the event loop; the event hub is told on the loop after the commit. Waiters are
    woken one per loop iteration.
    A batch that fails is written again report by report, so that one bad report fails
    alone. Before :meth:`open` and after :meth:`aclose` each report is its own
    transaction.

    Args:
        db: the database.
        engine_config: see :class:`SessionRunStore`.

    """

    def __init__(self, db: DB, engine_config: str | None = None) -> None:
        self.db = db
        self.engine_config = engine_config
        self._queue: list[_Report] = []
        self._wakeup = anyio.Event()
        self._writer: asyncio.Task[None] | None = None
        self._stopping = False

    async def open(self) -> None:
        """Start the writer task."""
        if self._writer is not None:
            raise FlowservError("the run store is already open")
        self._stopping = False
        # Held outside any task group, like the engine's supervisor: aclose awaits it.
        self._writer = asyncio.get_running_loop().create_task(self._write_loop())

    async def aclose(self) -> None:
        """Write what is queued, then stop the writer task."""
        writer, self._writer = self._writer, None
        if writer is None:
            return
        self._stopping = True
        self._wakeup.set()
        with anyio.CancelScope(shield=True):
            await writer

    async def create_run(self, run: runstate.NewRun) -> None:
        """Create a PENDING run (committed when this returns), with its event.

        Runs created while a transaction runs are inserted together in the next one.
        """
        await self._submit("create", run)

    async def mark_running(self, run_id: str, processes: Mapping[str, str] | None = None) -> bool:
        """Move a PENDING run to RUNNING, with the record of its processes."""
        return bool(await self._submit("state", run_id, RunState.RUNNING, (), processes))

    async def finish(self, run_id: str, state: RunState, messages: Sequence[str] = ()) -> bool:
        """Move an active run to a final state with messages."""
        return bool(await self._submit("state", run_id, state, tuple(messages), None))

    async def save_results(
        self, spec: ResultSpec, outcome: RunOutcome, engine_id: str
    ) -> SavedResults:
        """Record the success and create the post-processing run it makes due."""
        saved: SavedResults = await self._submit("results", spec, outcome, engine_id)
        return saved

    async def append_log(
        self, run_id: str, entries: Sequence[LogEntry], keep_from: int = 0
    ) -> None:
        """Store log lines of a run; drop its stored lines before ``keep_from``.

        While the writer runs, the lines are queued and this returns at once: they are
        written with the next batch, so before any state change reported after them. A
        failure to store them is logged.
        """
        if not entries:
            return
        if self._writer is None:
            await self._submit("log", run_id, list(entries), keep_from)
        else:
            self._queue.append(_Report("log", (run_id, list(entries), keep_from), awaited=False))
            self._wakeup.set()

    async def heartbeat(self, engine_id: str, run_ids: Sequence[str]) -> None:
        """Refresh the heartbeat of the engine's runs."""
        if run_ids:
            await self._submit("heartbeat", engine_id, list(run_ids))

    async def fail_stale_runs(
        self, engine_id: str, lease: float, tracked: Collection[str] | None = None
    ) -> list[str]:
        """Fail active runs of engines that stopped reporting."""
        failed: list[str] = await self._submit("stale", engine_id, lease, tracked)
        return failed

    async def leftovers(self, run_ids: Collection[str]) -> dict[str, Any]:
        """The ``processes`` records of these runs (read outside the writer)."""
        async with self.db.session() as session:
            return await on_session(session, runstate.run_processes, run_ids)

    async def _submit(self, kind: str, *args: Any) -> Any:
        report = _Report(kind, args)
        if self._writer is None:
            await self._write([report])
        else:
            self._queue.append(report)
            self._wakeup.set()
            await report.done.wait()
        if report.error is not None:
            raise report.error
        return report.result

    async def _write_loop(self) -> None:
        while True:
            await self._wakeup.wait()
            self._wakeup = anyio.Event()
            while self._queue:
                batch, self._queue = self._queue, []
                await self._write(batch)
            if self._stopping:
                return

    async def _write(self, batch: list[_Report]) -> None:
        """Write a batch in one transaction and wake its waiters; never raises."""
        try:
            await self._write_batch(batch)
        except Exception as exc:
            if len(batch) > 1:
                for report in batch:
                    await self._write([report])
                return
            batch[0].error = exc
            if not batch[0].awaited:
                logger.exception("cannot store a %s report of the engine", batch[0].kind)
        try:
            # One waiter per loop iteration: a batch of hundreds of runs must not make
            # them all ready at once, each to spawn its step (measured: 64 runs, woken 32
            # at a time, lagged the loop 130-210 ms at p99; one at a time, 10-30 ms).
            for report in batch:
                report.done.set()
                await asyncio.sleep(0)  # what anyio's checkpoint does on asyncio
        finally:
            # Cancelled meanwhile: the batch is written, none of its waiters may hang.
            for report in batch:
                report.done.set()

    async def _write_batch(self, batch: list[_Report]) -> None:
        """Write a batch in one transaction, in the writer thread if the database has one.

        A batch whose successes may start post-processing is written on the event loop:
        post-processing is an async service.
        """
        due = any(
            report.kind == "results" and _makes_postproc_due(report.args[0], report.args[1])
            for report in batch
        )
        if self.db.writes_in_thread and not due:
            keep = int((self.db.session_factory.kw.get("info") or {}).get(KEEP_KEY, DEFAULT_KEEP))
            # Shielded: once in the thread the batch is written, and the hub is told.
            with anyio.CancelScope(shield=True):
                last = await self.db.write_in_thread(
                    functools.partial(_apply_in_thread, batch, keep)
                )
                # The event hub is told on the event loop, after the commit.
                notify = (self.db.session_factory.kw.get("info") or {}).get(NOTIFY_KEY)
                if last is not None and notify is not None:
                    notify(last)
            return
        async with self.db.write_session() as session:
            successes = await on_session(session, _apply, batch)
            store = SessionRunStore(session, self.engine_config)
            for report in successes:
                spec, outcome, engine_id = report.args
                report.result = await store.start_due_postproc(
                    spec, outcome, engine_id, report.result.recorded
                )


def _apply_in_thread(batch: list[_Report], keep: int, statements: CompiledStatements) -> int | None:
    """:func:`_apply` in the writer thread, then its events; the largest new event id."""
    _apply(statements, batch)
    if not statements.events:
        return None
    return write_events(statements, "sqlite", statements.events, keep)


def _apply(statements: Statements, batch: list[_Report]) -> list[_Report]:
    """Apply a batch of reports; returns its ``results`` reports."""
    moves: dict[tuple[RunState, tuple[str, ...]], list[_Report]] = {}
    logs: list[tuple[str, Sequence[LogEntry], int]] = []
    beats: dict[str, list[str]] = {}
    for report in batch:
        report.result, report.error = None, None
        if report.kind == "state":
            _, state, messages, _ = report.args
            moves.setdefault((state, messages), []).append(report)
        elif report.kind == "log":
            logs.append(report.args)
        elif report.kind == "heartbeat":
            engine_id, run_ids = report.args
            beats.setdefault(engine_id, []).extend(run_ids)
    # Log lines first: they were reported before the state changes of this batch,
    # and their events must come before them (a follower stops at the final state).
    runstate.append_logs(statements, logs)
    runstate.insert_runs(statements, [r.args[0] for r in batch if r.kind == "create"])
    for (state, messages), reports in moves.items():
        run_ids = [r.args[0] for r in reports]
        records = {r.args[0]: r.args[3] for r in reports if r.args[3] is not None}
        moved = runstate.set_states(statements, run_ids, state, messages, records)
        for report in reports:
            report.result = report.args[0] in moved
    # No savepoints: when a report fails, the batch is written again report by
    # report, and the failing one fails alone.
    successes = [report for report in batch if report.kind == "results"]
    if successes:
        recorded = runstate.record_successes(statements, [r.args[:2] for r in successes])
        for report in successes:
            report.result = SavedResults(recorded=report.args[0].run_id in recorded)
    for report in batch:
        if report.kind == "stale":
            report.result = runstate.fail_stale_runs(statements, *report.args)
    for engine_id, run_ids in beats.items():
        runstate.heartbeat(statements, engine_id, run_ids)
    return successes
