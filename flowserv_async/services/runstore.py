"""The database's :class:`~flowserv_async.engine.store.RunStore`.

:class:`SessionRunStore` applies the engine's reports inside a caller's session (the
``RunService.update_run`` callback); :class:`DatabaseRunStore` gives each report a write
transaction of its own (the asyncio engine). Both write through
:mod:`flowserv_async.db.runstate`; a run state is persisted nowhere else.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

from sqlalchemy.ext.asyncio import AsyncSession

from flowserv_async.db import DB, runstate
from flowserv_async.engine.job import ResultSpec, RunJob
from flowserv_async.engine.log import LogEntry
from flowserv_async.engine.store import RunOutcome, SavedResults
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

    async def mark_running(self, run_id: str) -> bool:
        """Move a PENDING run to RUNNING."""
        return await runstate.set_state(self.session, run_id, RunState.RUNNING)

    async def finish(self, run_id: str, state: RunState, messages: Sequence[str] = ()) -> bool:
        """Move an active run to a final state with messages."""
        return await runstate.set_state(self.session, run_id, state, messages)

    async def save_results(
        self, spec: ResultSpec, outcome: RunOutcome, engine_id: str
    ) -> SavedResults:
        """Record the success and create the post-processing run it makes due."""
        if not await runstate.record_success(self.session, spec, outcome):
            return SavedResults(recorded=False)
        postproc = None
        if spec.has_postproc and outcome.results is not None:
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

    async def append_log(self, run_id: str, entries: Sequence[LogEntry]) -> None:
        """Store log lines of a run."""
        await runstate.append_log(self.session, run_id, entries)

    async def heartbeat(self, engine_id: str, run_ids: Sequence[str]) -> None:
        """Refresh the heartbeat of the engine's runs."""
        await runstate.heartbeat(self.session, engine_id, run_ids)

    async def fail_stale_runs(self, engine_id: str, lease: float) -> list[str]:
        """Fail active runs of engines that stopped reporting."""
        return await runstate.fail_stale_runs(self.session, engine_id, lease)


class DatabaseRunStore:
    """A run store that commits every report in a write transaction of its own.

    Args:
        db: the database.
        engine_config: see :class:`SessionRunStore`.

    """

    def __init__(self, db: DB, engine_config: str | None = None) -> None:
        self.db = db
        self.engine_config = engine_config

    async def mark_running(self, run_id: str) -> bool:
        """Move a PENDING run to RUNNING."""
        async with self.db.write_session() as session:
            return await SessionRunStore(session).mark_running(run_id)

    async def finish(self, run_id: str, state: RunState, messages: Sequence[str] = ()) -> bool:
        """Move an active run to a final state with messages."""
        async with self.db.write_session() as session:
            return await SessionRunStore(session).finish(run_id, state, messages)

    async def save_results(
        self, spec: ResultSpec, outcome: RunOutcome, engine_id: str
    ) -> SavedResults:
        """Record the success and create the post-processing run it makes due."""
        async with self.db.write_session() as session:
            store = SessionRunStore(session, self.engine_config)
            return await store.save_results(spec, outcome, engine_id)

    async def append_log(self, run_id: str, entries: Sequence[LogEntry]) -> None:
        """Store log lines of a run."""
        if entries:
            async with self.db.write_session() as session:
                await runstate.append_log(session, run_id, entries)

    async def heartbeat(self, engine_id: str, run_ids: Sequence[str]) -> None:
        """Refresh the heartbeat of the engine's runs."""
        if run_ids:
            async with self.db.write_session() as session:
                await runstate.heartbeat(session, engine_id, run_ids)

    async def fail_stale_runs(self, engine_id: str, lease: float) -> list[str]:
        """Fail active runs of engines that stopped reporting."""
        async with self.db.write_session() as session:
            return await runstate.fail_stale_runs(session, engine_id, lease)
