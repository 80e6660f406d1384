"""The worker side of the Dask engine: one run as one Dask task, and its cancellation.

:func:`execute_run` runs in a thread of a Dask worker. It starts an event loop of its
own and executes the run exactly as the asyncio engine does: it copies the run's files
from the file store into a local run folder, runs the steps through the same runner
(each command in its own process group, killed as a whole), and copies the result files
back to the store. It never touches the database: it returns a :class:`RunReport`, and
the engine process records it. Log lines go to the engine while the steps run, as Dask
events on the engine's topic.

``Future.cancel()`` cannot stop a task that runs. Each worker process keeps a registry
of the runs it executes; :func:`cancel_on_worker`, called on the workers with
``Client.run``, cancels the run's scope in its loop, and the runner then ends the
process groups of its steps. A cancel that arrives before the task starts is remembered,
so the task ends at once when it does start.
"""

from __future__ import annotations

import asyncio
import dataclasses
import os
import shutil
import subprocess
import sys
import tempfile
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anyio
from distributed import WorkerPlugin, get_worker

from flowserv_async.engine.containment import contain_run
from flowserv_async.engine.job import RunJob
from flowserv_async.engine.log import LogBatch, RunLog
from flowserv_async.engine.runner import run_workflow
from flowserv_async.engine.store import RunOutcome, keep_results, stage_run
from flowserv_async.volume import StorageVolume, volume_from_spec

LOG_INTERVAL = 0.2
"""Seconds between two batches of log lines sent to the engine."""

LogLine = tuple[str, str, str]
"""``(step, stream, text)`` of one log line, as sent to the engine."""


@dataclass(frozen=True)
class RunTask:
    """What a worker needs to execute one run.

    Attributes:
        job: the run.
        volume: the spec of the file store (``StorageVolume.to_dict()``); every worker
            must reach it (S3, or a folder that all machines share).
        topic: the Dask event topic that receives the run's log lines.
        step_timeout: seconds one step may take, or None.
        grace: seconds between SIGTERM and SIGKILL of a cancelled step.
        containment: how the run's processes are contained on the worker (see
            :mod:`flowserv_async.engine.containment`).

    """

    job: RunJob
    volume: dict[str, Any]
    topic: str
    step_timeout: float | None
    grace: float
    containment: str = "auto"


@dataclass(frozen=True)
class RunReport:
    """How a run ended on its worker.

    Attributes:
        canceled: True when the run was cancelled (its processes are gone).
        messages: why the run failed; empty for a success.
        outcome: for a success, what it produced; its files are in the store.
        log: the log lines not yet sent as events.

    """

    canceled: bool = False
    messages: tuple[str, ...] = ()
    outcome: RunOutcome | None = None
    log: tuple[LogLine, ...] = ()

    @property
    def success(self) -> bool:
        """True when the steps succeeded and the results are in the store."""
        return self.outcome is not None


class _Registry:
    """The runs that this worker process executes, by run id, for cancel_on_worker."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._active: dict[str, tuple[asyncio.AbstractEventLoop, anyio.CancelScope]] = {}
        self._canceled: set[str] = set()

    @contextmanager
    def register(self, run_id: str, scope: anyio.CancelScope) -> Iterator[None]:
        """Make ``scope`` cancellable by run id while the block runs."""
        loop = asyncio.get_running_loop()
        with self._lock:
            if run_id in self._canceled:
                self._canceled.discard(run_id)
                scope.cancel()
            self._active[run_id] = (loop, scope)
        try:
            yield
        finally:
            with self._lock:
                del self._active[run_id]

    def cancel(self, run_id: str) -> bool:
        """Cancel a run of this worker; True when it runs here, else remember it."""
        with self._lock:
            entry = self._active.get(run_id)
            if entry is None:
                self._canceled.add(run_id)
                return False
        loop, scope = entry
        loop.call_soon_threadsafe(scope.cancel)
        return True

    def forget(self, run_id: str) -> None:
        """Drop a remembered cancel of a run that will not start here."""
        with self._lock:
            self._canceled.discard(run_id)

    def running(self) -> list[str]:
        """The ids of the runs executing in this worker process."""
        with self._lock:
            return sorted(self._active)


REGISTRY = _Registry()
"""The registry of this worker process."""


def cancel_on_worker(run_id: str) -> bool:
    """Cancel a run on this worker (called through ``Client.run``); True if it ran here."""
    return REGISTRY.cancel(run_id)


def forget_on_worker(run_id: str) -> None:
    """Forget a cancel sent to this worker for a run that ran elsewhere (``Client.run``)."""
    REGISTRY.forget(run_id)


def running_on_worker() -> list[str]:
    """The runs executing on this worker (called through ``Client.run``)."""
    return REGISTRY.running()


_reaper_lock = threading.Lock()
_reaper: subprocess.Popen[bytes] | None = None


def _start_reaper() -> None:
    """Start this worker process's reaper once (see :mod:`.reaper`)."""
    global _reaper
    with _reaper_lock:
        if _reaper is None or _reaper.poll() is not None:
            # Its stdin is a pipe that only this process holds open: it closes when this
            # process ends, however it ends. Its own session: no signal to the worker's
            # group reaches it.
            reaper = subprocess.Popen(  # noqa: S603 - our own module, no shell
                [sys.executable, "-m", "flowserv_async.engine.dask.reaper", str(os.getpid())],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                start_new_session=True,
            )
            # No step starts before the reaper watches (this is a worker thread, no loop).
            assert reaper.stdout is not None
            reaper.stdout.readline()
            reaper.stdout.close()
            _reaper = reaper


def execute_run(task: RunTask) -> RunReport:
    """Execute one run on this worker (the Dask task; it runs in a worker thread)."""
    _start_reaper()
    return anyio.run(_execute, task)


async def _execute(task: RunTask) -> RunReport:
    scope = anyio.CancelScope()
    log = RunLog()
    sender = _LogSender(task.topic, task.job.run_id, log)
    rundir = Path(await anyio.to_thread.run_sync(tempfile.mkdtemp, None, "flowserv-run-"))
    try:
        with REGISTRY.register(task.job.run_id, scope), scope:
            volume = await volume_from_spec(task.volume)
            async with volume, anyio.create_task_group() as tg:
                tg.start_soon(sender.run)
                report = await _run(task, volume, rundir, log)
                tg.cancel_scope.cancel()
            return dataclasses.replace(report, log=sender.rest())
        return RunReport(canceled=True, log=sender.rest())
    finally:
        with anyio.CancelScope(shield=True):
            await anyio.to_thread.run_sync(shutil.rmtree, rundir, True)


async def _run(task: RunTask, volume: StorageVolume, rundir: Path, log: RunLog) -> RunReport:
    """Stage the run folder, run the steps, keep the results (the asyncio engine's path)."""
    job = task.job
    await stage_run(volume, rundir, job)
    processes = await contain_run(job.run_id, task.containment)
    try:
        result = await run_workflow(
            job.workflow,
            rundir=rundir,
            log=log,
            config=job.config,
            context=job.context,
            step_timeout=task.step_timeout,
            grace=task.grace,
            processes=processes,
        )
    finally:
        # Whatever the run started and left (setsid, double forks) dies with it.
        with anyio.CancelScope(shield=True):
            await processes.close()
    if not result.success:
        return RunReport(messages=tuple(result.messages))
    with anyio.CancelScope(shield=True):
        kept = await keep_results(volume, rundir, job.results)
    if isinstance(kept, RunOutcome):
        return RunReport(outcome=kept)
    return RunReport(messages=tuple(kept))


class _LogSender:
    """Sends the run's new log lines to the engine as Dask events, in batches."""

    def __init__(self, topic: str, run_id: str, log: RunLog) -> None:
        self._topic = topic
        self._run_id = run_id
        self._log = log
        self._worker = get_worker()

    async def run(self) -> None:
        while True:
            await self._log.wait(self._log.next)
            await anyio.sleep(LOG_INTERVAL)
            lines = _lines(self._log.drain())
            if lines:
                self._worker.log_event(self._topic, {"run": self._run_id, "lines": lines})

    def rest(self) -> tuple[LogLine, ...]:
        """The lines not sent yet (they travel with the report)."""
        return tuple(_lines(self._log.drain()))


def _lines(batch: LogBatch) -> list[LogLine]:
    # The worker's log keeps the same budget as the engine's: what it dropped, the
    # engine's log would have dropped too.
    return [(entry.step, entry.stream, entry.text) for entry in batch.lines]


TASK_PREFIX = "flowserv-run-"
"""The key of a run's task is this prefix and the run id."""


class RunCanceller(WorkerPlugin):
    """Cancels a run whose running task the scheduler dropped: its engine is gone.

    When the engine's client disconnects (its process died), the scheduler releases its
    tasks, and a worker marks a running one cancelled but cannot stop its thread: this
    plugin cancels the run through the registry, so its steps do not run on for nobody.
    """

    name = "flowserv-run-canceller"
    idempotent = True

    def transition(self, key: Any, start: str, finish: str, **kwargs: Any) -> None:
        """Cancel the run of a task that leaves ``executing`` for ``cancelled``/``released``."""
        if (
            start == "executing"
            and finish in ("cancelled", "released")
            and isinstance(key, str)
            and key.startswith(TASK_PREFIX)
        ):
            run_id = key.removeprefix(TASK_PREFIX)
            if not REGISTRY.cancel(run_id):
                REGISTRY.forget(run_id)
