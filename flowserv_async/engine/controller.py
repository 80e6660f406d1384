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
import logging
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import anyio
import anyio.to_thread
from sqlalchemy.ext.asyncio import AsyncSession

from flowserv_async.controller import WorkflowController
from flowserv_async.engine.job import RunJob
from flowserv_async.engine.log import RunLog
from flowserv_async.engine.runner import find_missing_files, run_workflow
from flowserv_async.errors import FlowservError
from flowserv_async.services.postproc import start_postproc
from flowserv_async.services.runs import (
    CANCELED_BY_USER,
    append_log,
    collect_outcome,
    fail_stale_runs,
    heartbeat,
    record_success,
    set_state,
)
from flowserv_async.services.stored import run_prefix
from flowserv_async.states import RunState

if TYPE_CHECKING:
    from flowserv_async.db import DB
    from flowserv_async.local import LocalAPIFactory
    from flowserv_async.volume import StorageVolume

logger = logging.getLogger(__name__)

SHUTDOWN_REASON = "the service shut down"
_LOG_FLUSH_INTERVAL = 0.2
_STOP_MARGIN = 5.0


@dataclass
class _ActiveRun:
    job: RunJob
    scope: anyio.CancelScope = field(default_factory=anyio.CancelScope)
    log: RunLog = field(default_factory=RunLog)
    done: anyio.Event = field(default_factory=anyio.Event)
    reason: str | None = None


class AsyncioEngine(WorkflowController):
    """Executes runs concurrently in this process, each step as a subprocess or code.

    Settings: ``FLOWSERV_MAX_CONCURRENT_RUNS`` (FIFO queue beyond it),
    ``FLOWSERV_STEP_TIMEOUT``, ``FLOWSERV_CANCEL_GRACE``, ``FLOWSERV_HEARTBEAT`` and
    ``FLOWSERV_RUN_LEASE``.
    """

    def __init__(self, service: LocalAPIFactory | None = None) -> None:
        super().__init__(service)
        self._runs: dict[str, _ActiveRun] = {}
        self._tg: anyio.abc.TaskGroup | None = None
        self._supervisor: asyncio.Task[None] | None = None
        self._closing: anyio.Event | None = None
        self._slots: anyio.Semaphore | None = None
        self._closed = False

    @property
    def _factory(self) -> LocalAPIFactory:
        if self.service is None:
            raise FlowservError("the asyncio engine needs the factory as its service")
        return self.service

    async def open(self) -> None:
        """Start the supervisor task and fail runs left behind by dead engines."""
        factory = self._factory
        self._db: DB = factory.db
        self._volume: StorageVolume = factory.volume
        settings = factory.settings
        self._runsdir = Path(settings.api_dir, "tmp", "runs")
        if settings.max_concurrent_runs:
            self._slots = anyio.Semaphore(settings.max_concurrent_runs)
        await self._sweep()
        self._closing = anyio.Event()
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
            ready.set()
            await self._closing.wait()
            tg.cancel_scope.cancel()

    async def aclose(self) -> None:
        """Cancel every run (recorded CANCELED: the service shut down), then stop."""
        if self._closed:
            return
        self._closed = True
        active = list(self._runs.values())
        for run in active:
            run.reason = run.reason or SHUTDOWN_REASON
            run.scope.cancel()
        grace = self._factory.settings.cancel_grace
        with anyio.CancelScope(shield=True):
            with anyio.move_on_after(grace + _STOP_MARGIN):
                for run in active:
                    await run.done.wait()
            if self._closing is not None:
                self._closing.set()
            if self._supervisor is not None:
                await self._supervisor

    async def exec_workflow(
        self,
        run: Any,
        template: Any,
        arguments: dict[str, Any],
        staticfs: Any,
        config: dict[str, Any] | None = None,
    ) -> tuple[str, Any]:
        """Queue a run (a :class:`RunJob`); it starts when a slot is free."""
        if not isinstance(run, RunJob):
            raise TypeError(f"the asyncio engine executes RunJob objects, not {run!r}")
        if self._closed or self._tg is None:
            raise FlowservError("the workflow engine is closed")
        active = _ActiveRun(job=run, log=RunLog(max_bytes=self._factory.settings.max_log_size))
        self._runs[run.run_id] = active
        self._tg.start_soon(self._execute, active, name=f"run {run.run_id}")
        return str(RunState.PENDING), self._volume

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
        grace = self._factory.settings.cancel_grace
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
        rundir = self._runsdir / run_id
        try:
            with active.scope:
                if self._slots is not None:
                    async with self._slots:
                        await self._run(active, rundir)
                else:
                    await self._run(active, rundir)
        except Exception as exc:
            logger.exception("run %s failed in the engine", run_id)
            with anyio.CancelScope(shield=True):
                await self._record(run_id, RunState.ERROR, [f"engine failure: {exc}"])
        finally:
            with anyio.CancelScope(shield=True):
                if active.scope.cancel_called:
                    message = active.reason or CANCELED_BY_USER
                    await self._record(run_id, RunState.CANCELED, [message])
                await self._flush_log(active)
                await anyio.to_thread.run_sync(_remove_tree, rundir)
                active.log.close()
                del self._runs[run_id]
                active.done.set()

    async def _run(self, active: _ActiveRun, rundir: Path) -> None:
        job = active.job
        with anyio.CancelScope(shield=True):
            moved = await self._record(job.run_id, RunState.RUNNING)
        if not moved:
            return  # cancelled or failed while it waited
        settings = self._factory.settings
        await anyio.Path(rundir).mkdir(parents=True, exist_ok=True)
        await self._volume.copy_to_local(rundir, job.static_prefix)
        if job.input_files:
            await self._volume.copy_to_local(rundir, "", job.input_files)
        for target, content in job.generated_files:
            path = anyio.Path(rundir, target)
            await path.parent.mkdir(parents=True, exist_ok=True)
            await path.write_bytes(content)
        async with anyio.create_task_group() as tg:
            tg.start_soon(self._log_writer, active)
            result = await run_workflow(
                job.workflow,
                rundir=rundir,
                log=active.log,
                config=job.config,
                context=job.context,
                step_timeout=settings.step_timeout or None,
                grace=settings.cancel_grace,
            )
            tg.cancel_scope.cancel()
        if not result.success:
            with anyio.CancelScope(shield=True):
                await self._record(job.run_id, RunState.ERROR, result.messages)
            return
        missing = await find_missing_files(rundir, job.result_files)
        if missing:
            with anyio.CancelScope(shield=True):
                await self._record(
                    job.run_id,
                    RunState.ERROR,
                    [f"output file '{path}' is missing" for path in missing],
                )
            return
        prefix = run_prefix(job.workflow_id, job.run_id)
        with anyio.CancelScope(shield=True):
            outcome = await collect_outcome(rundir, job.result_files, job.result_schema)
            await self._volume.copy_from_local(
                rundir, prefix, [(f, None) for f in job.result_files]
            )
            async with self._db.write_session() as session:
                done = await record_success(
                    session, job.run_id, job.workflow_id, job.group_id, outcome
                )
                postproc = None
                if done and job.has_postproc and outcome.results is not None:
                    postproc = await self._prepare_postproc(session, job.workflow_id)
            if not done:
                await self._volume.delete(prefix)
            elif postproc is not None:
                if self._closed:
                    await self._record(postproc.run_id, RunState.CANCELED, [SHUTDOWN_REASON])
                else:
                    await self.exec_workflow(postproc, None, {}, self._volume)

    async def _prepare_postproc(self, session: AsyncSession, workflow_id: str) -> RunJob | None:
        """Create a post-processing run if the ranking changed (SPEC 7).

        Runs in the transaction that records the ranked run, inside a savepoint: a
        failure here is logged and never undoes the run's success.
        """
        try:
            async with session.begin_nested():
                return await start_postproc(
                    session, workflow_id, self.engine_id, self._factory.settings.engine_config
                )
        except Exception:
            logger.exception("cannot start post-processing of workflow %s", workflow_id)
            return None

    async def _record(
        self, run_id: str, state: RunState, messages: list[str] | None = None
    ) -> bool:
        try:
            async with self._db.write_session() as session:
                return await set_state(session, run_id, state, messages)
        except Exception:
            logger.exception("cannot record state %s of run %s", state, run_id)
            return False

    async def _log_writer(self, active: _ActiveRun) -> None:
        while True:
            await active.log.wait(active.log.next)
            await anyio.sleep(_LOG_FLUSH_INTERVAL)
            with anyio.CancelScope(shield=True):
                await self._flush_log(active)

    async def _flush_log(self, active: _ActiveRun) -> None:
        batch = active.log.drain()
        if not batch.lines:
            return
        try:
            async with self._db.write_session() as session:
                await append_log(session, active.job.run_id, batch.lines, batch.first)
        except Exception:
            logger.exception("cannot store the log of run %s", active.job.run_id)

    # -- durability ------------------------------------------------------------------

    async def _heartbeat_loop(self) -> None:
        interval = self._factory.settings.heartbeat
        while True:
            await anyio.sleep(interval)
            with anyio.CancelScope(shield=True):
                try:
                    async with self._db.write_session() as session:
                        await heartbeat(session, self.engine_id, list(self._runs))
                except Exception:
                    logger.exception("cannot record the engine heartbeat")
                await self._sweep()

    async def _sweep(self) -> None:
        try:
            async with self._db.write_session() as session:
                failed = await fail_stale_runs(
                    session, self.engine_id, self._factory.settings.run_lease
                )
        except Exception:
            logger.exception("cannot check for interrupted runs")
            return
        for run_id in failed:
            logger.warning("run %s was interrupted (no heartbeat) and is now ERROR", run_id)


def _remove_tree(path: Path) -> None:
    shutil.rmtree(path, ignore_errors=True)
