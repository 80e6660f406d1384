"""The workflow controller interface that every engine implements (SPEC 6.1)."""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import TYPE_CHECKING, Any

from flowserv_async._util import new_id

if TYPE_CHECKING:
    from flowserv_async.local import LocalAPIFactory


class WorkflowController(ABC):
    """Executes workflow runs on behalf of a :class:`~flowserv_async.LocalAPIFactory`.

    The factory opens the controller when it opens and closes it when it closes; a
    controller that owns tasks or processes must end all of them in :meth:`aclose`.
    """

    def __init__(self, service: LocalAPIFactory | None = None) -> None:
        self.service = service
        # Recorded on the runs this controller executes (SPEC 6.5).
        self.engine_id = new_id()

    async def open(self) -> None:  # noqa: B027 - a controller without resources keeps this
        """Acquire the controller's resources (called once by the factory)."""

    async def aclose(self) -> None:  # noqa: B027
        """Stop every run and release the controller's resources."""

    @abstractmethod
    async def exec_workflow(
        self,
        run: Any,
        template: Any,
        arguments: dict[str, Any],
        staticfs: Any,
        config: dict[str, Any] | None = None,
    ) -> tuple[str, Any]:
        """Start executing a run; return its state and the volume with its files."""

    @abstractmethod
    async def cancel_run(self, run_id: str, reason: str | None = None) -> None:
        """Cancel a run that the controller executes (no-op for an unknown run)."""

    async def wait(self, run_id: str) -> bool:
        """Wait for a run of this controller to end; False when it does not track it.

        Without notifications of its own a controller keeps this default, and callers
        fall back to watching the database.
        """
        return False
