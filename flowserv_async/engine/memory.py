"""A :class:`~flowserv_async.engine.store.RunStore` in memory, for engines without a database.

It applies the same transitions as the database (SPEC 4) and keeps what the engine
reports in plain objects, so that engine tests can watch a run without SQL. It never
starts post-processing: that needs the leaderboard of a database.
"""

from __future__ import annotations

import time
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from flowserv_async.engine.job import ResultSpec
from flowserv_async.engine.log import LogEntry
from flowserv_async.engine.store import RunOutcome, SavedResults
from flowserv_async.errors import UnknownRunError
from flowserv_async.states import ACTIVE_STATES, FINAL_STATES, RunState, allowed_sources


@dataclass
class StoredRun:
    """A run as the memory store keeps it."""

    run_id: str
    engine_id: str | None
    state: RunState = RunState.PENDING
    messages: list[str] = field(default_factory=list)
    files: tuple[tuple[str, int], ...] = ()
    results: dict[str, Any] | None = None
    log: list[LogEntry] = field(default_factory=list)
    heartbeat_at: float = field(default_factory=time.monotonic)
    history: list[RunState] = field(default_factory=lambda: [RunState.PENDING])
    processes: dict[str, str] | None = None


class MemoryRunStore:
    """Runs in a dict; see the module docstring."""

    def __init__(self) -> None:
        self.runs: dict[str, StoredRun] = {}

    def add_run(self, run_id: str, engine_id: str | None = None) -> StoredRun:
        """Create a PENDING run (what ``start_run`` inserts before it hands a job over)."""
        run = StoredRun(run_id=run_id, engine_id=engine_id)
        self.runs[run_id] = run
        return run

    def _move(self, run_id: str, state: RunState, messages: Sequence[str] = ()) -> bool:
        run = self.runs.get(run_id)
        if run is None:
            raise UnknownRunError(run_id)
        if run.state not in allowed_sources(state):
            return False
        run.state = state
        run.history.append(state)
        run.heartbeat_at = time.monotonic()
        if state in FINAL_STATES:
            run.messages = list(messages)
        return True

    async def mark_running(self, run_id: str, processes: Mapping[str, str] | None = None) -> bool:
        """Move a PENDING run to RUNNING, keeping the record of its processes."""
        moved = self._move(run_id, RunState.RUNNING)
        if moved and processes is not None:
            self.runs[run_id].processes = dict(processes)
        return moved

    async def finish(self, run_id: str, state: RunState, messages: Sequence[str] = ()) -> bool:
        """Move an active run to ERROR or CANCELED."""
        return self._move(run_id, state, messages)

    async def save_results(
        self, spec: ResultSpec, outcome: RunOutcome, engine_id: str
    ) -> SavedResults:
        """Record SUCCESS with the files and results (ERROR for invalid results)."""
        if outcome.error is not None:
            self._move(spec.run_id, RunState.ERROR, [outcome.error])
            return SavedResults(recorded=False)
        if not self._move(spec.run_id, RunState.SUCCESS):
            return SavedResults(recorded=False)
        run = self.runs[spec.run_id]
        run.files, run.results = outcome.files, outcome.results
        return SavedResults(recorded=True)

    async def append_log(
        self, run_id: str, entries: Sequence[LogEntry], keep_from: int = 0
    ) -> None:
        """Keep the lines from position ``keep_from`` on."""
        run = self.runs[run_id]
        run.log = [entry for entry in [*run.log, *entries] if entry.pos >= keep_from]

    async def heartbeat(self, engine_id: str, run_ids: Sequence[str]) -> None:
        """Refresh the heartbeat of the engine's runs."""
        now = time.monotonic()
        for run_id in run_ids:
            run = self.runs.get(run_id)
            if run is not None and run.engine_id == engine_id:
                run.heartbeat_at = now

    async def fail_stale_runs(
        self, engine_id: str, lease: float, tracked: Collection[str] | None = None
    ) -> list[str]:
        """Fail active runs not reported for ``lease`` seconds (see :class:`RunStore`)."""
        limit = time.monotonic() - lease
        message = f"the run was interrupted: its engine stopped reporting for over {lease:g} s"
        spared = set(tracked or ())
        stale = [
            run.run_id
            for run in self.runs.values()
            if run.state in ACTIVE_STATES
            and (run.engine_id != engine_id or (tracked is not None and run.run_id not in spared))
            and run.heartbeat_at < limit
        ]
        return [run_id for run_id in stale if self._move(run_id, RunState.ERROR, [message])]

    async def leftovers(self, run_ids: Collection[str]) -> dict[str, Any]:
        """The ``processes`` records of these runs."""
        return {
            run_id: run.processes
            for run_id in run_ids
            if (run := self.runs.get(run_id)) is not None and run.processes is not None
        }
