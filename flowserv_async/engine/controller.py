"""The default workflow controller: runs execute as tasks in the engine's task group.

Each run is a task with its own cancel scope, kept by run id; cancelling a run is
cancelling that scope, and the runner then kills the process groups of its steps. The
engine owns one anyio task group, held open by a supervisor task that the engine starts
when the factory opens and awaits when it closes (so the factory may be opened and closed
from different tasks, and a failing run can never cancel the caller's task).

Durability (SPEC 6.5): every run row carries this engine's id; a heartbeat task
refreshes ``heartbeat_at`` of the engine's runs and fails runs of engines that stopped
reporting for longer than the lease (also once when the engine opens).
"""

from __future__ import annotations

import asyncio
import functools
import logging
import shutil
from collections.abc import Awaitable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import anyio

from flowserv_async._threads import run_blocking, start_pools
from flowserv_async.controller import EngineContext, WorkflowController
from flowserv_async.engine.containment import (
    TAG,
    RunProcesses,
    contain_run,
    kill_leftovers,
    remove_stale_cgroups,
)
from flowserv_async.engine.job import RunJob
from flowserv_async.engine.log import RunLog
from flowserv_async.engine.runner import run_relative, run_workflow
from flowserv_async.engine.store import CANCELED_BY_USER, save_results, stage_run
from flowserv_async.errors import FlowservError
from flowserv_async.states import RunState

logger = logging.getLogger(__name__)

SHUTDOWN_REASON = "the service shut down"
_LOG_FLUSH_INTERVAL = 0.2
_STOP_MARGIN = 5.0
# Waits between attempts to record a final state that failed: doubling, up to the max.
_RETRY_FIRST_DELAY = 0.05
_RETRY_MAX_DELAY = 5.0


@dataclass(eq=False)
class _ActiveRun:
    job: RunJob
    scope: anyio.CancelScope = field(default_factory=anyio.CancelScope)
    # Made by start(): it reports to the engine about this run.
    log: RunLog = field(init=False)
    # asyncio's own event (anyio cancels by cancelling the task, so it still applies):
    # anyio's finds its backend on every creation.
    done: asyncio.Event = field(default_factory=asyncio.Event)
    reason: str | None = None
    # Set while a batch of its log lines is being stored.
    flushing: anyio.Event | None = None


class AsyncioEngine(WorkflowController):
    """Executes runs concurrently in this process, each step as a subprocess or code.

    Its :class:`~flowserv_async.controller.EngineLimits` come from the settings
    ``FLOWSERV_MAX_CONCURRENT_RUNS`` (FIFO queue beyond it), ``FLOWSERV_STEP_TIMEOUT``,
    ``FLOWSERV_CANCEL_GRACE``, ``FLOWSERV_HEARTBEAT`` and ``FLOWSERV_RUN_LEASE``.
    """

    def __init__(self, service: Any = None) -> None:
        super().__init__(service)
        self._runs: dict[str, _ActiveRun] = {}
        self._ctx: EngineContext | None = None
        self._tg: anyio.abc.TaskGroup | None = None
        self._supervisor: asyncio.Task[None] | None = None
        self._closing: anyio.Event | None = None
        self._slots: anyio.Semaphore | None = None
        self._closed = False
        # Runs with log lines to store, and an event set when the first one came.
        self._unflushed: dict[str, _ActiveRun] = {}
        self._logs_pending: anyio.Event | None = None

    @property
    def _context(self) -> EngineContext:
        if self._ctx is None:
            raise FlowservError("the workflow engine is not open")
        return self._ctx

    async def open(self, context: EngineContext) -> None:
        """Start the supervisor task and fail runs left behind by dead engines.

        An engine can be opened again after :meth:`aclose`, not while it is open.
        """
        if self._ctx is not None:
            raise FlowservError("the workflow engine is already open")
        self._ctx, self._closed = context, False
        if context.limits.max_concurrent_runs:
            self._slots = anyio.Semaphore(context.limits.max_concurrent_runs)
        # Now rather than in the middle of the first burst of runs, and not from the
        # event loop's thread: a thread start waits until the new thread runs.
        await anyio.to_thread.run_sync(start_pools)
        await self._sweep()
        if context.limits.containment != TAG:
            await remove_stale_cgroups()
        self._closing = anyio.Event()
        self._logs_pending = anyio.Event()
        ready = anyio.Event()
        # The one task the engine starts outside a task group: it holds the task group,
        # and aclose() awaits it.
        self._supervisor = asyncio.get_running_loop().create_task(self._supervise(ready))
        await ready.wait()

    async def _supervise(self, ready: anyio.Event) -> None:
        assert self._closing is not None
        async with anyio.create_task_group() as tg:
            self._tg = tg
            tg.start_soon(self._heartbeat_loop)
            tg.start_soon(self._log_flusher)
            ready.set()
            await self._closing.wait()
            tg.cancel_scope.cancel()

    async def aclose(self) -> None:
        """Cancel every run (recorded CANCELED: the service shut down), then stop."""
        if self._closed or self._ctx is None:
            return
        self._closed = True
        active = list(self._runs.values())
        for run in active:
            run.reason = run.reason or SHUTDOWN_REASON
            run.scope.cancel()
        with anyio.CancelScope(shield=True):
            with anyio.move_on_after(self._ctx.limits.cancel_grace + _STOP_MARGIN):
                for run in active:
                    await run.done.wait()
            if self._closing is not None:
                self._closing.set()
            if self._supervisor is not None:
                await self._supervisor
        self._ctx = self._tg = self._supervisor = self._slots = self._logs_pending = None
        self._unflushed.clear()

    async def start(self, job: RunJob) -> None:
        """Queue a run; it starts when a slot is free."""
        if self._closed or self._tg is None:
            raise FlowservError("the workflow engine is closed")
        active = _ActiveRun(job=job)
        active.log = RunLog(
            max_bytes=self._context.limits.max_log_size,
            on_pending=functools.partial(self._log_pending, active),
        )
        self._runs[job.run_id] = active
        self._tg.start_soon(self._execute, active, name=f"run {job.run_id}")

    async def cancel_run(self, run_id: str, reason: str | None = None) -> None:
        """Cancel a run; return once its processes are gone and it is recorded CANCELED.

        A no-op for runs that this engine does not execute. Waits at most the cancel
        grace period plus a margin.
        """
        active = self._runs.get(run_id)
        if active is None:
            return
        active.reason = active.reason or reason
        active.scope.cancel()
        grace = self._context.limits.cancel_grace
        with anyio.CancelScope(shield=True), anyio.move_on_after(grace + _STOP_MARGIN):
            await active.done.wait()

    async def wait(self, run_id: str) -> bool:
        """Wait until a run of this engine has ended and is recorded; False if unknown."""
        active = self._runs.get(run_id)
        if active is None:
            return False
        await active.done.wait()
        return True

    def is_active(self, run_id: str) -> bool:
        """True while this engine executes (or queues) the run."""
        return run_id in self._runs

    # -- one run ---------------------------------------------------------------------

    async def _execute(self, active: _ActiveRun) -> None:
        run_id = active.job.run_id
        rundir = self._context.runsdir / run_id
        failure = None
        try:
            with active.scope:
                if self._slots is not None:
                    async with self._slots:
                        await self._run(active, rundir)
                else:
                    await self._run(active, rundir)
        except Exception as exc:
            logger.exception("run %s failed in the engine", run_id)
            failure = run_relative(f"engine failure: {exc}", rundir)
        finally:
            with anyio.CancelScope(shield=True):
                # The log before the final state: whoever sees the state sees the lines.
                await self._flush_log(active)
                if failure is not None:
                    await self._finish(run_id, RunState.ERROR, [failure])
                if active.scope.cancel_called:
                    message = active.reason or CANCELED_BY_USER
                    await self._finish(run_id, RunState.CANCELED, [message])
                await run_blocking(_remove_tree, rundir)
                active.log.close()
                self._unflushed.pop(run_id, None)
                del self._runs[run_id]
                active.done.set()

    async def _run(self, active: _ActiveRun, rundir: Path) -> None:
        processes = await contain_run(active.job.run_id, self._context.limits.containment)
        try:
            await self._run_contained(active, rundir, processes)
        finally:
            # Whatever the run started and left (setsid, double forks) dies with it.
            with anyio.CancelScope(shield=True):
                await processes.close()

    async def _run_contained(
        self, active: _ActiveRun, rundir: Path, processes: RunProcesses
    ) -> None:
        job, ctx = active.job, self._context
        # Recorded with RUNNING: another engine kills what an interrupted run left.
        record = {**processes.record(), "rundir": str(rundir)}
        with anyio.CancelScope(shield=True):
            moved = await self._guarded(ctx.store.mark_running(job.run_id, record), job.run_id)
        if not moved:
            return  # cancelled or failed while it waited
        await stage_run(ctx.volume, rundir, job)
        result = await run_workflow(
            job.workflow,
            rundir=rundir,
            log=active.log,
            config=job.config,
            context=job.context,
            step_timeout=ctx.limits.step_timeout or None,
            grace=ctx.limits.cancel_grace,
            processes=processes,
        )
        with anyio.CancelScope(shield=True):
            await self._flush_log(active)  # before the final state, see _execute
        if not result.success:
            with anyio.CancelScope(shield=True):
                await self._finish(job.run_id, RunState.ERROR, result.messages)
            return
        with anyio.CancelScope(shield=True):
            postproc = await save_results(
                ctx.store, ctx.volume, rundir, job.results, self.engine_id
            )
            if postproc is not None:
                await self._start_postproc(postproc)

    async def _start_postproc(self, job: RunJob) -> None:
        """Start the post-processing run that a success made due (CANCELED when closing)."""
        if self._closed:
            await self._finish(job.run_id, RunState.CANCELED, [SHUTDOWN_REASON])
        else:
            await self.start(job)

    async def _guarded(self, call: Awaitable[bool], run_id: str) -> bool:
        """Await a store call that changes a state; log (never raise) a failure."""
        try:
            return await call
        except Exception:
            logger.exception("cannot record a state change of run %s", run_id)
            return False

    async def _finish(self, run_id: str, state: RunState, messages: Sequence[str]) -> bool:
        """Record a final state; a failed write is tried again until it lands.

        The run's processes are gone by now: a run left active here would stay RUNNING
        with nothing behind it. The waits grow to :data:`_RETRY_MAX_DELAY`; once the
        engine closes, the next engine's sweep fails the run ("interrupted").
        """
        delay = _RETRY_FIRST_DELAY
        while True:
            try:
                return await self._context.store.finish(run_id, state, messages)
            except Exception:
                if self._closed:
                    logger.exception("cannot record state %s of run %s; giving up", state, run_id)
                    return False
                logger.exception(
                    "cannot record state %s of run %s; trying again in %g s", state, run_id, delay
                )
            await anyio.sleep(delay)
            delay = min(delay * 2, _RETRY_MAX_DELAY)

    def _log_pending(self, active: _ActiveRun) -> None:
        self._unflushed[active.job.run_id] = active
        if self._logs_pending is not None:
            self._logs_pending.set()

    async def _log_flusher(self) -> None:
        """Store the new log lines of every run, at most every flush interval.

        One task for all runs rather than one per run: most runs write little or
        nothing, and a burst of runs would pay for a task and a task group each.
        """
        while True:
            assert self._logs_pending is not None, "made when the engine opens"
            await self._logs_pending.wait()
            await anyio.sleep(_LOG_FLUSH_INTERVAL)
            self._logs_pending = anyio.Event()
            pending, self._unflushed = self._unflushed, {}
            with anyio.CancelScope(shield=True):
                for active in pending.values():
                    await self._flush_log(active)

    async def _flush_log(self, active: _ActiveRun) -> None:
        # One batch of a run at a time: a batch drained later is stored later.
        while active.flushing is not None:
            await active.flushing.wait()
        batch = active.log.drain()
        if not batch.lines:
            return
        active.flushing = flushed = anyio.Event()
        try:
            await self._context.store.append_log(active.job.run_id, batch.lines, batch.first)
        except Exception:
            logger.exception("cannot store the log of run %s", active.job.run_id)
        finally:
            active.flushing = None
            flushed.set()

    # -- durability ------------------------------------------------------------------

    async def _heartbeat_loop(self) -> None:
        ctx = self._context
        while True:
            await anyio.sleep(ctx.limits.heartbeat)
            with anyio.CancelScope(shield=True):
                try:
                    await ctx.store.heartbeat(self.engine_id, list(self._runs))
                except Exception:
                    logger.exception("cannot record the engine heartbeat")
                await self._sweep()

    async def _sweep(self) -> None:
        """Fail runs that no engine reports, and clean up after them.

        Own runs count too once this engine no longer tracks them. What an interrupted
        run left behind (processes, its run folder) is removed from its record.
        """
        ctx = self._context
        try:
            failed = await ctx.store.fail_stale_runs(
                self.engine_id, ctx.limits.run_lease, tracked=set(self._runs)
            )
            records = await ctx.store.leftovers(failed)
        except Exception:
            logger.exception("cannot check for interrupted runs")
            return
        for run_id in failed:
            logger.warning("run %s was interrupted (no heartbeat) and is now ERROR", run_id)
            record = records.get(run_id)
            if isinstance(record, dict):
                await kill_leftovers(record)
                rundir = record.get("rundir")
                # Only a run folder of this run: the record names it by the run id.
                if isinstance(rundir, str) and Path(rundir).name == run_id:
                    await run_blocking(_remove_tree, Path(rundir))


def _remove_tree(path: Path) -> None:
    shutil.rmtree(path, ignore_errors=True)
