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
called with ``Client.run``) and kills its steps' process groups; a run whose engine
process vanished is stopped on its worker when the scheduler drops its task
(:class:`~flowserv_async.engine.dask.worker.RunCanceller`). A worker that dies fails
its run, and its reaper kills the steps it left. The engine's own cluster gives no
task a second worker (``distributed.scheduler.allowed-failures = 0``); set the same on
a scheduler of your own, or Dask runs the task again elsewhere.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Mapping
from pathlib import Path
from typing import Any, TypeVar

import anyio
import dask
from distributed import Client, Future, KilledWorker, LocalCluster
from distributed.utils import sync

from flowserv_async.config import Settings
from flowserv_async.controller import EngineContext
from flowserv_async.engine.controller import AsyncioEngine, _ActiveRun
from flowserv_async.engine.dask.worker import (
    TASK_PREFIX,
    RunCanceller,
    RunReport,
    RunTask,
    cancel_on_worker,
    execute_run,
    forget_on_worker,
)
from flowserv_async.engine.store import record_results
from flowserv_async.errors import FlowservError, InvalidConfigurationError
from flowserv_async.states import RunState

logger = logging.getLogger(__name__)

WORKER_DIED = "the Dask worker that executed the run died"
"""The message of a run whose worker died."""

_STOP_MARGIN = 5.0
# The longest one call to the cluster (a broadcast to the workers, a cancel, closing
# the client) may take.
_CALL_LIMIT = 5.0
# The longest stopping the engine's own LocalCluster (its worker processes) may take.
_CLUSTER_CLOSE_LIMIT = 30.0

_T = TypeVar("_T")

__all__ = ["DaskEngine"]


class DaskEngine(AsyncioEngine):
    """Executes each run as a Dask task on the workers of a Dask cluster.

    Args:
        service: the factory; its settings give the defaults of the other arguments.
        scheduler: the scheduler address (``FLOWSERV_DASK_SCHEDULER``); without one, a
            ``LocalCluster`` of this engine's own.
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
        settings: Settings = service.settings if service is not None else Settings.from_env({})
        self.scheduler = scheduler if scheduler is not None else settings.dask_scheduler
        self.workers = workers if workers is not None else settings.dask_workers
        self.slots = slots if slots is not None else settings.dask_slots
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

    async def open(self, context: EngineContext) -> None:
        """Connect to the scheduler (or start a LocalCluster), then open the engine."""
        self._loop = asyncio.get_running_loop()
        # Connecting and starting worker processes block: off the event loop.
        self._client, self._cluster = await anyio.to_thread.run_sync(self._connect)
        try:
            self.client.subscribe_topic(self._topic, self._on_log_event)
            await super().open(context)
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
        client, cluster = self._connect_client()
        try:
            client.register_plugin(RunCanceller())
        except BaseException:
            client.close()
            if cluster is not None:
                cluster.close()
            raise
        return client, cluster

    def _connect_client(self) -> tuple[Client, LocalCluster | None]:
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
                dashboard_address=":0",
            )
        try:
            return Client(cluster, set_as_default=False), cluster
        except BaseException:
            cluster.close()
            raise

    def _disconnect(self) -> None:
        client, cluster = self._client, self._cluster
        self._client = self._cluster = None
        try:
            if client is not None:
                # A client that is already closed (or broken) returns at once.
                client.close(timeout=_CALL_LIMIT)
        except Exception:
            logger.warning("cannot close the Dask client", exc_info=True)
        finally:
            if cluster is not None:
                cluster.close(timeout=_CLUSTER_CLOSE_LIMIT)

    # -- one run -------------------------------------------------------------------------

    async def _run(self, active: _ActiveRun, rundir: Path) -> None:
        """Execute a run as a task on a worker (``rundir`` is the worker's) and record it."""
        job, ctx = active.job, self._context
        with anyio.CancelScope(shield=True):
            moved = await self._guarded(ctx.store.mark_running(job.run_id), job.run_id)
        if not moved:
            return  # cancelled or failed while it waited
        task = RunTask(
            job=job,
            volume=ctx.volume.to_dict(),
            topic=self._topic,
            step_timeout=ctx.limits.step_timeout or None,
            grace=ctx.limits.cancel_grace,
            containment=ctx.limits.containment,
        )
        self._logs[job.run_id] = active
        try:
            future = self.client.submit(
                execute_run, task, pure=False, key=f"{TASK_PREFIX}{job.run_id}"
            )
            try:
                # The lines that come meanwhile are stored by the engine's log flusher.
                report = await self._report(future)
            except BaseException:
                with anyio.CancelScope(shield=True):
                    await self._cancel_task(job.run_id, future)
                raise
        finally:
            self._logs.pop(job.run_id, None)
        for step, stream, text in report.log:
            active.log.append(step, stream, text)
        with anyio.CancelScope(shield=True):
            await self._flush_log(active)  # before the final state, as the local engine
            if report.canceled:
                # Cancelled on the worker by someone else than this engine (our own
                # cancel arrives here as a cancellation of this task).
                await self._finish(job.run_id, RunState.CANCELED, ["canceled on the worker"])
            elif report.outcome is None:
                await self._finish(job.run_id, RunState.ERROR, report.messages)
            else:
                postproc = await record_results(
                    ctx.store, ctx.volume, job.results, report.outcome, self.engine_id
                )
                if postproc is not None:
                    await self._start_postproc(postproc)

    async def _report(self, future: Future[RunReport]) -> RunReport:
        """Wait for the task of a run; a dead worker becomes a failed report."""
        await self._done(future)
        try:
            report: RunReport = await anyio.to_thread.run_sync(
                lambda: future.result(timeout=_CALL_LIMIT)
            )
        except KilledWorker as exc:
            logger.warning("the worker of %s died: %s", future.key, exc)
            return RunReport(messages=(WORKER_DIED,))
        return report

    async def _done(self, future: Future[RunReport]) -> None:
        """Wait until a task has ended (without blocking the loop on the client)."""
        loop = self._loop
        assert loop is not None
        done = anyio.Event()
        future.add_done_callback(lambda _: loop.call_soon_threadsafe(done.set))
        await done.wait()

    async def _cancel_task(self, run_id: str, future: Future[RunReport]) -> None:
        """Stop the task of a run wherever it is: running on a worker, or queued.

        A running task is cancelled on its worker, and waited for: it ends once its
        processes are gone. Only a task that no worker runs yet is cancelled in Dask
        (which would forget a running task without stopping it); should it start on a
        worker meanwhile, the cancel remembered there ends it before any step starts.
        """
        client = self.client
        if client.status != "running":
            # Closed or broken: the scheduler drops the tasks of a client that left, and
            # the RunCanceller of the worker stops the run.
            return
        try:
            with anyio.move_on_after(self._context.limits.cancel_grace + _STOP_MARGIN):
                found = await _call(client, lambda: client.run(cancel_on_worker, run_id))
                if not any(found.values()):
                    await _call(client, lambda: client.cancel([future]))
                await self._done(future)
            # Workers that did not run it remember the cancel: make them forget it.
            await _call(client, lambda: client.run(forget_on_worker, run_id))
        except Exception:
            # The client broke meanwhile: as above, the workers stop the run.
            logger.warning("cannot reach the Dask cluster to stop %s", run_id, exc_info=True)

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


async def _call(client: Client, call: Callable[[], Awaitable[_T]]) -> _T:
    """Await a coroutine of the client (``call`` makes it) on the client's IO loop.

    A blocking call of the client (``client.run``, ``client.cancel``) hands its
    coroutine to the client's loop and waits for it without a limit: when that loop
    stops meanwhile (the client is closed by someone else, or broke), the coroutine
    never runs and the call waits forever, in a worker thread that cannot be cancelled.
    Here the wait is bounded by :data:`_CALL_LIMIT` (``TimeoutError``).
    """
    loop = client.loop
    if loop is None:
        raise FlowservError("the Dask client is closed")
    result: _T = await anyio.to_thread.run_sync(
        lambda: sync(loop, call, callback_timeout=_CALL_LIMIT)
    )
    return result
