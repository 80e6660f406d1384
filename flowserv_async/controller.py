"""The workflow controller interface that every engine implements (SPEC 6.1).

A controller is given what it works with when it opens (:class:`EngineContext`: the
run store, the file store, the folder for run folders and the limits); it never
reaches into the factory or the database. The factory keeps flowserv's
``exec_workflow`` and ``cancel_run`` as thin wrappers around :meth:`start` and
:meth:`cancel_run`.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from flowserv_async._util import new_id
from flowserv_async.engine.log import DEFAULT_MAX_BYTES

if TYPE_CHECKING:
    from flowserv_async.config import Settings
    from flowserv_async.engine.job import RunJob
    from flowserv_async.engine.store import RunStore
    from flowserv_async.volume import StorageVolume


@dataclass(frozen=True)
class EngineLimits:
    """How an engine treats its runs (see SPEC 1.4 for the settings).

    Attributes:
        max_concurrent_runs: runs executing at once, 0 for no limit (FIFO beyond it).
        step_timeout: seconds a step may take, 0 for no limit.
        cancel_grace: seconds between SIGTERM and SIGKILL of a cancelled step.
        heartbeat: seconds between heartbeats of the engine's runs.
        run_lease: seconds after which an unreported run of another engine fails.
        max_log_size: bytes of a run's log that are kept (its tail).
        containment: how a run's processes are contained (``auto`` or ``tag``, see
            :mod:`flowserv_async.engine.containment`).

    """

    max_concurrent_runs: int = 0
    step_timeout: float = 0.0
    cancel_grace: float = 5.0
    heartbeat: float = 5.0
    run_lease: float = 30.0
    max_log_size: int = DEFAULT_MAX_BYTES
    containment: str = "auto"

    @classmethod
    def from_settings(cls, settings: Settings) -> EngineLimits:
        """The limits configured in ``settings``."""
        return cls(
            max_concurrent_runs=settings.max_concurrent_runs,
            step_timeout=settings.step_timeout,
            cancel_grace=settings.cancel_grace,
            heartbeat=settings.heartbeat,
            run_lease=settings.run_lease,
            max_log_size=settings.max_log_size,
            containment=settings.containment,
        )


@dataclass(frozen=True)
class EngineContext:
    """What a controller is given when it opens.

    Attributes:
        store: where the controller records its runs.
        volume: the file store (static files, uploads, results).
        runsdir: the local folder under which run folders are created.
        limits: concurrency, timeouts and durability settings.

    """

    store: RunStore
    volume: StorageVolume
    runsdir: Path
    limits: EngineLimits


class WorkflowController(ABC):
    """Executes workflow runs.

    The factory opens the controller when it opens and closes it when it closes; a
    controller that owns tasks or processes must end all of them in :meth:`aclose`.
    Custom controllers (``FLOWSERV_BACKEND_MODULE``/``FLOWSERV_BACKEND_CLASS``) are
    created as ``cls(service=factory)``; one that reports through the factory's
    ``RunService.update_run`` may keep ``service`` for that.
    """

    def __init__(self, service: Any = None) -> None:
        self.service = service
        # Recorded on the runs this controller executes (SPEC 6.5).
        self.engine_id = new_id()

    async def open(self, context: EngineContext) -> None:  # noqa: B027 - optional
        """Acquire the controller's resources (called once by the factory)."""

    async def aclose(self) -> None:  # noqa: B027
        """Stop every run and release the controller's resources."""

    @abstractmethod
    async def start(self, job: RunJob) -> None:
        """Start executing a PENDING run (queue it); return without waiting for it."""

    @abstractmethod
    async def cancel_run(self, run_id: str, reason: str | None = None) -> None:
        """Cancel a run that the controller executes (no-op for an unknown run)."""

    async def wait(self, run_id: str) -> bool:
        """Wait for a run of this controller to end; False when it does not track it.

        Without notifications of its own a controller keeps this default, and callers
        fall back to watching the database.
        """
        return False
