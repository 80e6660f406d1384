"""Where an engine records its runs: the :class:`RunStore` protocol, and the success path.

The engine never talks to the database. It reports every change of a run to a
:class:`RunStore`, which the database layer implements
(:class:`flowserv_async.services.runstore.DatabaseRunStore`); engine tests use
:class:`flowserv_async.engine.memory.MemoryRunStore`. A store only moves a run along
an allowed transition (SPEC 4), so a run never leaves a final state.

:func:`save_results` is the one path by which a run becomes SUCCESS, shared by the
engine and by engines that report through ``RunService.update_run``;
:func:`stage_run` fills a run folder from the file store.
"""

from __future__ import annotations

import json
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import anyio

from flowserv_async._threads import run_blocking
from flowserv_async.engine.job import ResultSpec, RunJob
from flowserv_async.engine.log import LogEntry
from flowserv_async.engine.runner import find_missing_files
from flowserv_async.errors import ConstraintViolationError, UnknownFileError
from flowserv_async.states import RunState
from flowserv_async.template import ResultSchema
from flowserv_async.volume import StorageVolume

CANCELED_BY_USER = "canceled at user request"
"""The message of a run cancelled without a reason."""


@dataclass(frozen=True)
class RunOutcome:
    """What a successful run produced, read from its folder before any transaction.

    Attributes:
        files: ``(name, size)`` of the result files.
        results: the typed result values for the leaderboard, or None.
        error: why the results are invalid (the run then becomes ERROR), or None.

    """

    files: tuple[tuple[str, int], ...]
    results: dict[str, Any] | None = None
    error: str | None = None


@dataclass(frozen=True)
class SavedResults:
    """What :meth:`RunStore.save_results` did.

    Attributes:
        recorded: True when the run is now SUCCESS with its files.
        postproc: the post-processing run that the success made due, to be started
            by the caller, or None.

    """

    recorded: bool
    postproc: RunJob | None = None


class RunStore(Protocol):
    """Persists what an engine does to its runs.

    Every method that changes a state returns False (and changes nothing) when the
    transition is not allowed: a run in a final state stays there.
    """

    async def mark_running(self, run_id: str, processes: Mapping[str, str] | None = None) -> bool:
        """Move a PENDING run to RUNNING; True when it moved.

        ``processes`` records how the run's processes are contained (see
        :mod:`flowserv_async.engine.containment`), for :meth:`leftovers`.
        """
        ...

    async def finish(self, run_id: str, state: RunState, messages: Sequence[str] = ()) -> bool:
        """Move an active run to ERROR or CANCELED with messages; True when it moved."""
        ...

    async def save_results(
        self, spec: ResultSpec, outcome: RunOutcome, engine_id: str
    ) -> SavedResults:
        """Record a success: SUCCESS, result files, ranking; or ERROR for bad results.

        The files are already in the file store under ``spec.prefix``. A post-processing
        run that this makes due is created for ``engine_id`` and returned.
        """
        ...

    async def append_log(
        self, run_id: str, entries: Sequence[LogEntry], keep_from: int = 0
    ) -> None:
        """Store log lines of a run; drop its stored lines before position ``keep_from``."""
        ...

    async def heartbeat(self, engine_id: str, run_ids: Sequence[str]) -> None:
        """Tell that ``engine_id`` still executes these runs."""
        ...

    async def fail_stale_runs(
        self, engine_id: str, lease: float, tracked: Collection[str] | None = None
    ) -> list[str]:
        """Set active runs of engines silent for ``lease`` seconds to ERROR; their ids.

        Runs of ``engine_id`` are spared: all of them, or only those in ``tracked``.
        """
        ...

    async def leftovers(self, run_ids: Collection[str]) -> dict[str, Any]:
        """The ``processes`` records of these runs (given to :meth:`mark_running`)."""
        ...


async def collect_outcome(
    rundir: Path, files: Sequence[str], schema: ResultSchema | None
) -> RunOutcome:
    """Read the result file (when ranked) and the sizes of the result files."""
    if not files and schema is None:
        return RunOutcome(())
    return await run_blocking(_collect_outcome, rundir, files, schema)


def _collect_outcome(rundir: Path, files: Sequence[str], schema: ResultSchema | None) -> RunOutcome:
    sizes = tuple([(name, Path(rundir, name).stat().st_size) for name in files])
    if schema is None:
        return RunOutcome(sizes)
    try:
        doc = _read_json(rundir / schema.result_file)
        return RunOutcome(sizes, results=schema.extract(doc))
    except ConstraintViolationError as exc:
        return RunOutcome(sizes, error=exc.message)


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConstraintViolationError(f"result file {path.name} is missing") from None
    except (OSError, ValueError) as exc:
        raise ConstraintViolationError(f"result file {path.name} is not valid JSON: {exc}") from exc


async def stage_run(volume: StorageVolume, rundir: Path, job: RunJob) -> None:
    """Fill a run folder: the workflow's static files, the run's inputs, generated files."""
    # Creates the run folder, also when the workflow has no static files.
    await volume.copy_to_local(rundir, job.static_prefix)
    if job.input_files:
        try:
            await volume.copy_to_local(rundir, "", job.input_files)
        except UnknownFileError:
            # Named by their paths in the run folder: the run's messages are shown to
            # its group, which must not see the file store's keys.
            missing = [t for key, t in job.input_files if not await volume.exists(key)]
            raise UnknownFileError(", ".join(missing) or "an input file") from None
    if job.generated_files:
        await run_blocking(_write_files, rundir, job.generated_files)


def _write_files(rundir: Path, files: Sequence[tuple[str, bytes]]) -> None:
    for target, content in files:
        path = Path(rundir, target)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(content)


async def save_results(
    store: RunStore, volume: StorageVolume, rundir: Path, spec: ResultSpec, engine_id: str
) -> RunJob | None:
    """Finish a run whose steps succeeded: keep its result files and record it.

    A missing result file makes the run ERROR. Otherwise the files are copied to the
    file store and the store records the run (SUCCESS, or ERROR for results that do not
    fit the schema); the copies are removed again when nothing was recorded. Returns the
    post-processing run to start, if the success made one due.

    The two halves, :func:`keep_results` and :func:`record_results`, run on different
    machines under the Dask engine: where the run folder is, and where the store is.
    """
    kept = await keep_results(volume, rundir, spec)
    if not isinstance(kept, RunOutcome):
        await store.finish(spec.run_id, RunState.ERROR, kept)
        return None
    return await record_results(store, volume, spec, kept, engine_id)


async def keep_results(
    volume: StorageVolume, rundir: Path, spec: ResultSpec
) -> RunOutcome | list[str]:
    """Copy the result files of a run folder to the file store, and read the results.

    Returns:
        What the run produced, or the messages that make it ERROR (missing files).

    """
    missing = await find_missing_files(rundir, spec.files)
    if missing:
        return [f"output file '{path}' is missing" for path in missing]
    outcome = await collect_outcome(rundir, spec.files, spec.schema)
    if spec.files:
        await volume.copy_from_local(rundir, spec.prefix, [(f, None) for f in spec.files])
    return outcome


async def record_results(
    store: RunStore, volume: StorageVolume, spec: ResultSpec, outcome: RunOutcome, engine_id: str
) -> RunJob | None:
    """Record a run whose result files :func:`keep_results` copied to the store.

    The copies are removed again when nothing was recorded. Returns the
    post-processing run to start, if the success made one due.
    """
    try:
        saved = await store.save_results(spec, outcome, engine_id)
    except BaseException:
        with anyio.CancelScope(shield=True):
            await volume.delete(spec.prefix)
        raise
    if not saved.recorded:
        await volume.delete(spec.prefix)
    return saved.postproc
