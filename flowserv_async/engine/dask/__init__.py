"""The Dask engine: runs execute as tasks on the workers of a Dask cluster.

Select it with ``FLOWSERV_BACKEND_MODULE=flowserv_async.engine.dask`` and
``FLOWSERV_BACKEND_CLASS=DaskEngine`` (extra ``dask``). ``FLOWSERV_DASK_SCHEDULER`` is
the address of the scheduler; without one, the engine starts a ``LocalCluster`` of
``FLOWSERV_DASK_WORKERS`` worker processes with ``FLOWSERV_DASK_SLOTS`` runs each, and
stops it when it closes.

Everything but the execution is the asyncio engine's: the FIFO queue and the
concurrency limit, the states it records, the heartbeat of its runs. Each run is one
``pure=False`` task (:func:`~flowserv_async.engine.dask.worker.execute_run`) that stages
the run folder on the worker from the file store, runs the steps through the same
runner and copies the result files back; so the workers must reach the file store (an
S3 volume, or a folder that all machines share). The engine process alone writes the
database. Cancelling a run reaches the worker that executes it (a per-worker registry,
called with ``Client.run``) and kills its steps' process groups. A worker that dies
fails its run: the engine's own cluster allows no task a second worker
(``distributed.scheduler.allowed-failures = 0``); set the same on a scheduler of your
own, or Dask runs the task again elsewhere.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping
from typing import Any

import anyio
import dask
from distributed import Client, Future, KilledWorker, LocalCluster

from flowserv_async.engine.controller import SHUTDOWN_REASON, AsyncioEngine, _ActiveRun
from flowserv_async.engine.dask.worker import (
    RunReport,
    RunTask,
    cancel_on_worker,
    execute_run,
    forget_on_worker,
)
from flowserv_async.errors import FlowservError, InvalidConfigurationError
from flowserv_async.services.runs import record_success
from flowserv_async.services.stored import run_prefix
from flowserv_async.states import RunState

logger = logging.getLogger(__name__)

FLOWSERV_DASK_SCHEDULER = "FLOWSERV_DASK_SCHEDULER"
FLOWSERV_DASK_WORKERS = "FLOWSERV_DASK_WORKERS"
FLOWSERV_DASK_SLOTS = "FLOWSERV_DASK_SLOTS"

DEFAULT_WORKERS = 2
"""Worker processes of the engine's own ``LocalCluster``."""

DEFAULT_SLOTS = 4
"""Runs that one worker of the engine's own ``LocalCluster`` executes at once."""

WORKER_DIED = "the Dask worker that executed the run died"
"""The message of a run whose worker died."""

_STOP_MARGIN = 5.0

__all__ = ["DaskEngine"]


class DaskEngine(AsyncioEngine):
    """Executes each run as a Dask task on the workers of a Dask cluster.

    Args:
        service: the factory (settings, database and file store).
        scheduler: the scheduler address; default ``FLOWSERV_DASK_SCHEDULER``, and
            without either a ``LocalCluster`` of this engine's own.
        workers: worker processes of the own cluster (``FLOWSERV_DASK_WORKERS``).
        slots: runs per worker of the own cluster (``FLOWSERV_DASK_SLOTS``).

    """

    def __init__(
        self,
        service: Any = None,
        *,
        scheduler: str | None = None,
        workers: int | None = None,
        slots: int | None = None,
    ) -> None:
        super().__init__(service)
        env: Mapping[str, Any] = getattr(service, "env", {}) if service is not None else {}
        self.scheduler = scheduler or (str(env.get(FLOWSERV_DASK_SCHEDULER, "")).strip() or None)
        self.workers = workers if workers is not None else _count(env, FLOWSERV_DASK_WORKERS)
        self.slots = slots if slots is not None else _count(env, FLOWSERV_DASK_SLOTS)
        self._client: Client | None = None
        self._cluster: LocalCluster | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._topic = f"flowserv-log-{self.engine_id}"
        self._logs: dict[str, _ActiveRun] = {}

    @property
    def client(self) -> Client:
        """The Dask client of the open engine."""
        if self._client is None:
            raise FlowservError("the Dask engine is not open")
        return self._client

    async def open(self) -> None:
        """Connect to the scheduler (or start a LocalCluster), then open the engine."""
        self._loop = asyncio.get_running_loop()
        # Connecting and starting worker processes block: off the event loop.
        self._client, self._cluster = await anyio.to_thread.run_sync(self._connect)
        try:
            self.client.subscribe_topic(self._topic, self._on_log_event)
            await super().open()
        except BaseException:
            with anyio.CancelScope(shield=True):
                await anyio.to_thread.run_sync(self._disconnect)
            raise

    async def aclose(self) -> None:
        """Cancel every run (on its worker too), then disconnect and stop the own cluster."""
        try:
            await super().aclose()
        finally:
            with anyio.CancelScope(shield=True):
                await anyio.to_thread.run_sync(self._disconnect)

    def _connect(self) -> tuple[Client, LocalCluster | None]:
        if self.scheduler is not None:
            try:
                return Client(self.scheduler, set_as_default=False), None
            except OSError as exc:
                raise InvalidConfigurationError(
                    f"cannot reach the Dask scheduler {self.scheduler!r}: {exc}"
                ) from exc
        with dask.config.set({"distributed.scheduler.allowed-failures": 0}):
            cluster = LocalCluster(
                n_workers=self.workers,
                threads_per_worker=self.slots,
                processes=True,
                dashboard_address=None,
            )
        try:
            return Client(cluster, set_as_default=False), cluster
        except BaseException:
            cluster.close()
            raise

    def _disconnect(self) -> None:
        client, cluster = self._client, self._cluster
        self._client = self._cluster = None
        if client is not None:
            client.close()
        if cluster is not None:
            cluster.close()

    # -- one run -------------------------------------------------------------------------

    async def _run(self, active: _ActiveRun, rundir: Any) -> None:
        """Execute a run as a task on a worker and record how it ended."""
        job = active.job
        with anyio.CancelScope(shield=True):
            moved = await self._record(job.run_id, RunState.RUNNING)
        if not moved:
            return  # cancelled or failed while it waited
        settings = self._factory.settings
        prefix = run_prefix(job.workflow_id, job.run_id)
        task = RunTask(
            job=job,
            volume=self._volume.to_dict(),
            topic=self._topic,
            result_prefix=prefix,
            step_timeout=settings.step_timeout or None,
            grace=settings.cancel_grace,
        )
        self._logs[job.run_id] = active
        try:
            future = self.client.submit(
                execute_run, task, pure=False, key=f"flowserv-run-{job.run_id}"
            )
            try:
                async with anyio.create_task_group() as tg:
                    tg.start_soon(self._log_writer, active)
                    report = await self._report(future)
                    tg.cancel_scope.cancel()
            except BaseException:
                with anyio.CancelScope(shield=True):
                    await self._cancel_task(job.run_id, future)
                raise
        finally:
            self._logs.pop(job.run_id, None)
        for step, stream, text in report.log:
            active.log.append(step, stream, text)
        await self._record_report(active, report, prefix)

    async def _report(self, future: Future[RunReport]) -> RunReport:
        """Wait for the task of a run; a dead worker becomes a failed report."""
        loop = self._loop
        assert loop is not None
        done = anyio.Event()
        future.add_done_callback(lambda _: loop.call_soon_threadsafe(done.set))
        await done.wait()
        try:
            report: RunReport = await anyio.to_thread.run_sync(future.result)
        except KilledWorker as exc:
            logger.warning("the worker of %s died: %s", future.key, exc)
            return RunReport(messages=(WORKER_DIED,))
        return report

    async def _cancel_task(self, run_id: str, future: Future[RunReport]) -> None:
        """Stop the task of a run wherever it is: running on a worker, or queued.

        A running task is cancelled on its worker, and waited for: it ends once its
        processes are gone. Only a task that no worker runs yet is cancelled in Dask
        (which would forget a running task without stopping it); should it start on a
        worker meanwhile, the cancel remembered there ends it before any step starts.
        """
        grace = self._factory.settings.cancel_grace
        client = self.client
        loop = self._loop
        assert loop is not None
        done = anyio.Event()
        future.add_done_callback(lambda _: loop.call_soon_threadsafe(done.set))
        with anyio.move_on_after(grace + _STOP_MARGIN):
            found = await anyio.to_thread.run_sync(lambda: client.run(cancel_on_worker, run_id))
            if not any(found.values()):
                await anyio.to_thread.run_sync(future.cancel)
            await done.wait()
        # Workers that did not run it remember the cancel: make them forget it.
        await anyio.to_thread.run_sync(lambda: client.run(forget_on_worker, run_id))

    async def _record_report(self, active: _ActiveRun, report: RunReport, prefix: str) -> None:
        job = active.job
        with anyio.CancelScope(shield=True):
            if report.canceled:
                # Cancelled on the worker by someone else than this engine (never by us:
                # our own cancel arrives here as a cancellation of this task).
                await self._record(job.run_id, RunState.CANCELED, ["canceled on the worker"])
                return
            if report.outcome is None:
                await self._record(job.run_id, RunState.ERROR, list(report.messages))
                return
            async with self._db.write_session() as session:
                done = await record_success(
                    session, job.run_id, job.workflow_id, job.group_id, report.outcome
                )
                postproc = None
                if done and job.has_postproc and report.outcome.results is not None:
                    postproc = await self._prepare_postproc(session, job.workflow_id)
            if not done:
                await self._volume.delete(prefix)
            elif postproc is not None:
                if self._closed:
                    await self._record(postproc.run_id, RunState.CANCELED, [SHUTDOWN_REASON])
                else:
                    await self.exec_workflow(postproc, None, {}, self._volume)

    def _on_log_event(self, event: tuple[float, Any]) -> None:
        """Receive log lines from a worker (in the client's thread): hand them to the loop."""
        _, message = event
        loop = self._loop
        if loop is not None and not loop.is_closed():
            loop.call_soon_threadsafe(self._append_lines, message)

    def _append_lines(self, message: Mapping[str, Any]) -> None:
        active = self._logs.get(str(message.get("run")))
        if active is None:
            return  # the run has ended; its last lines came with its report
        for step, stream, text in message.get("lines", ()):
            active.log.append(step, stream, text)


def _count(env: Mapping[str, Any], name: str) -> int:
    default = DEFAULT_WORKERS if name == FLOWSERV_DASK_WORKERS else DEFAULT_SLOTS
    value = env.get(name)
    if value is None or str(value).strip() == "":
        return default
    try:
        number = int(str(value).strip())
    except ValueError:
        number = 0
    if number < 1:
        raise InvalidConfigurationError(
            f"invalid value {value!r} for {name}: expected a positive integer"
        )
    return number
