"""Run a serial workflow as a DAG of steps in one anyio task group.

Step B depends on an earlier step A when their declared files overlap in a way that
orders them: one of B's inputs equals or lies under one of A's outputs (or contains
it), or B writes where A reads or writes. A step that declares no files depends on
every earlier step and every later step depends on it, so templates that declare
nothing run exactly as in flowserv: one step after another.

Independent steps run concurrently. When a step fails (non-zero exit, exception, time
limit), the other steps are cancelled, their processes killed, and the run fails.
Cancelling the task that awaits :func:`run_workflow` cancels every step the same way
and propagates; the caller records the run as CANCELED.
"""

from __future__ import annotations

import posixpath
import time
import uuid
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum
from pathlib import Path
from typing import Any

import anyio

from flowserv_async._threads import run_blocking
from flowserv_async.engine.config import EngineConfig
from flowserv_async.engine.containment import RunProcesses, contain_run
from flowserv_async.engine.log import RunLog
from flowserv_async.engine.spec import (
    CodeAction,
    WorkflowSpec,
    WorkflowStep,
    normalize_path,
    parse_workflow,
)
from flowserv_async.engine.workers import (
    CodeWorker,
    StepOutcome,
    StepRun,
    Worker,
    bind_workers,
    import_function,
)

#: Default seconds between SIGTERM and SIGKILL (``FLOWSERV_CANCEL_GRACE``).
DEFAULT_GRACE = 5.0


class StepState(StrEnum):
    """Where a step ended up."""

    PENDING = "pending"
    RUNNING = "running"
    SUCCESS = "success"
    ERROR = "error"
    CANCELED = "canceled"
    SKIPPED = "skipped"


@dataclass(slots=True)
class StepResult:
    """State, error message and timings of one step.

    ``started_at``/``ended_at`` are ``time.monotonic()`` values for comparing steps;
    ``started``/``ended`` are UTC wall-clock times. Steps that never started have none.
    """

    name: str
    state: StepState = StepState.PENDING
    returncode: int | None = None
    message: str | None = None
    started_at: float | None = None
    ended_at: float | None = None
    started: datetime | None = None
    ended: datetime | None = None

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form; times as ISO strings."""
        return {
            "name": self.name,
            "state": str(self.state),
            "returncode": self.returncode,
            "message": self.message,
            "started": self.started.isoformat() if self.started else None,
            "ended": self.ended.isoformat() if self.ended else None,
        }

    def _start(self) -> None:
        self.state = StepState.RUNNING
        self.started_at = time.monotonic()
        self.started = datetime.now(UTC)

    def _end(self, state: StepState, outcome: StepOutcome | None = None) -> None:
        self.state = state
        self.ended_at = time.monotonic()
        self.ended = datetime.now(UTC)
        if outcome is not None:
            self.returncode = outcome.returncode
            self.message = outcome.error


@dataclass(slots=True)
class WorkflowResult:
    """Outcome of a run that was not cancelled.

    Attributes:
        success: True when every step succeeded and the declared outputs exist.
        messages: Why the run failed (empty on success).
        steps: Result of every step, in workflow order.
        context: The final context, including results of code steps.

    """

    success: bool
    messages: list[str]
    steps: dict[str, StepResult]
    context: dict[str, Any] = field(default_factory=dict)


def dependencies(spec: WorkflowSpec) -> dict[str, frozenset[str]]:
    """The earlier steps each step waits for (steps that are skipped are left out)."""
    steps = [step for step in spec.steps if not step.skipped]
    deps: dict[str, frozenset[str]] = {}
    for index, step in enumerate(steps):
        deps[step.name] = frozenset(
            earlier.name for earlier in steps[:index] if _ordered(earlier, step)
        )
    return deps


async def run_workflow(
    workflow: WorkflowSpec | Mapping[str, Any],
    *,
    rundir: Path,
    log: RunLog,
    config: EngineConfig | None = None,
    context: Mapping[str, Any] | None = None,
    step_timeout: float | None = None,
    grace: float = DEFAULT_GRACE,
    processes: RunProcesses | None = None,
) -> WorkflowResult:
    """Execute the workflow's steps in ``rundir`` and check its declared outputs.

    When it returns or is cancelled, no process that the run started is left: those
    that left their step's process group are killed with the run's containment, which
    is closed then.

    Args:
        workflow: A parsed spec, or the ``workflow`` section with references expanded.
        rundir: The staged run folder: working directory of commands, ``rundir``
            context variable.
        log: Receives the steps' output lines.
        config: Engine configuration (workers); default workers when ``None``.
        context: Extra context values, layered over the workflow ``parameters``.
        step_timeout: Time limit of steps without their own ``timeout``
            (``None`` or 0: none).
        grace: Seconds between SIGTERM and SIGKILL when processes are ended.
        processes: The containment the run's commands start in, closed when the run
            ends. Default: one of the run's own.

    Returns:
        The result; failed steps make ``success`` False with their messages.

    Raises:
        InvalidTemplateError: the workflow section is malformed.
        InvalidConfigurationError: a step is mapped to a worker of the wrong kind.

    """
    spec = workflow if isinstance(workflow, WorkflowSpec) else parse_workflow(workflow)
    workers = bind_workers(spec, config if config is not None else EngineConfig())
    contained = processes if processes is not None else await contain_run(uuid.uuid4().hex)
    run = StepRun(
        # The template's own names win: the run folder is ``rundir`` only when the
        # template does not define ``rundir`` (ROB post-processing sets it to 'runs/').
        context={"rundir": rundir, **spec.parameters, **(context or {})},
        rundir=rundir,
        log=log,
        grace=grace,
        processes=contained,
    )
    try:
        return await _execute(spec, workers, run, step_timeout)
    finally:
        # The steps' process groups are gone; this kills what left them (setsid). Closed
        # rather than only killed: one trip to a file thread instead of two, when the
        # caller closes it too (to clean up after a run that never got here).
        with anyio.CancelScope(shield=True):
            await contained.close()


async def _execute(
    spec: WorkflowSpec,
    workers: dict[str, Worker],
    run: StepRun,
    step_timeout: float | None,
) -> WorkflowResult:
    rundir = run.rundir
    results = {step.name: StepResult(step.name) for step in spec.steps}
    for step in spec.steps:
        if step.skipped:
            results[step.name].state = StepState.SKIPPED
    funcs: dict[str, Callable[..., Any]] = {}
    for step in spec.steps:
        if isinstance(step.action, CodeAction):
            try:
                funcs[step.name] = await anyio.to_thread.run_sync(import_function, step.action.func)
            except Exception as exc:
                message = (
                    f"step '{step.name}': cannot import function '{step.action.func}': "
                    f"{type(exc).__name__}: {exc}"
                )
                results[step.name].state = StepState.ERROR
                results[step.name].message = message
                return WorkflowResult(False, [message], results, run.context)
    limit = step_timeout if step_timeout else None
    error = await make_folders(rundir, spec.output_folders)
    if error is not None:
        return WorkflowResult(False, [f"workflow outputs: {error}"], results, run.context)
    await _StepGraph(spec, workers, funcs, run, results, limit).run()
    for result in results.values():
        if result.message:
            result.message = run_relative(result.message, rundir)
    messages = [r.message for r in results.values() if r.state is StepState.ERROR and r.message]
    if not messages:
        missing = await find_missing_files(rundir, spec.outputs)
        messages = [f"declared output '{path}' is missing" for path in missing]
    return WorkflowResult(not messages, messages, results, run.context)


def run_relative(message: str, rundir: Path) -> str:
    """The message with paths in the run folder written relative to it.

    Run messages are shown to the run's users; where the server keeps run folders is
    none of their business (and the folder is gone once the run ends).
    """
    folder = str(rundir)
    return message.replace(folder + "/", "").replace(folder, ".")


async def make_folders(rundir: Path, folders: Iterable[str]) -> str | None:
    """Create ``folders`` (normalised relative paths) in ``rundir``; the error, if one fails."""
    folders = list(folders)
    return await run_blocking(_make_folders, rundir, folders) if folders else None


def _make_folders(rundir: Path, folders: list[str]) -> str | None:
    for folder in folders:
        try:
            Path(rundir, folder).mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            return f"cannot create the output folder '{folder}': {exc.strerror or exc}"
    return None


async def find_missing_files(rundir: Path, paths: Iterable[str]) -> list[str]:
    """The paths (relative to ``rundir``) that do not exist, in the given order.

    Raises:
        InvalidTemplateError: a path is absolute or leaves ``rundir``.

    """
    checked = [(path, Path(rundir, normalize_path(path, "output"))) for path in paths]
    return await run_blocking(_missing, checked) if checked else []


def _missing(checked: list[tuple[str, Path]]) -> list[str]:
    return [path for path, local in checked if not local.exists()]


class _StepGraph:
    """One execution of the step DAG."""

    def __init__(
        self,
        spec: WorkflowSpec,
        workers: Mapping[str, Worker],
        funcs: Mapping[str, Callable[..., Any]],
        run: StepRun,
        results: dict[str, StepResult],
        default_timeout: float | None,
    ) -> None:
        self.spec = spec
        self.workers = workers
        self.funcs = funcs
        self.run_state = run
        self.results = results
        self.default_timeout = default_timeout
        self.deps = dependencies(spec)
        # Only the steps that others wait for need an event.
        awaited = set().union(*self.deps.values())
        self.done = {name: anyio.Event() for name in self.deps if name in awaited}

    async def run(self) -> None:
        steps = [step for step in self.spec.steps if not step.skipped]
        if len(steps) == 1:
            # Nothing runs beside it, nothing to cancel: no task group (most runs).
            await self.run_step(steps[0], None)
            return
        async with anyio.create_task_group() as tg:
            for step in steps:
                tg.start_soon(self.run_step, step, tg.cancel_scope, name=step.name)

    async def run_step(self, step: WorkflowStep, run_scope: anyio.CancelScope | None) -> None:
        for dep in sorted(self.deps[step.name]):
            await self.done[dep].wait()
        result = self.results[step.name]
        result._start()
        try:
            outcome = await self.execute(step)
        except anyio.get_cancelled_exc_class():
            result._end(StepState.CANCELED)
            raise
        if outcome.ok:
            result._end(StepState.SUCCESS, outcome)
            if step.name in self.done:
                self.done[step.name].set()
        else:
            result._end(StepState.ERROR, outcome)
            if run_scope is not None:
                run_scope.cancel()

    async def execute(self, step: WorkflowStep) -> StepOutcome:
        limit = step.timeout if step.timeout is not None else self.default_timeout
        worker = self.workers[step.name]
        error = await make_folders(self.run_state.rundir, step.output_folders)
        if error is not None:
            return StepOutcome(None, f"step '{step.name}': {error}")
        if limit is None:  # no cancel scope to make for a limit that never comes
            return await self._run_worker(step, worker)
        with anyio.move_on_after(limit):
            return await self._run_worker(step, worker)
        # Only reached when the time limit cancelled the step (its processes are gone).
        return StepOutcome(None, f"step '{step.name}' exceeded its time limit of {limit:g} s")

    async def _run_worker(self, step: WorkflowStep, worker: Worker) -> StepOutcome:
        if isinstance(worker, CodeWorker):
            return await worker.run(step, self.funcs[step.name], self.run_state)
        return await worker.run(step, self.run_state)


def _ordered(earlier: WorkflowStep, later: WorkflowStep) -> bool:
    """True when ``later`` must wait for ``earlier``."""
    if not earlier.declares_files or not later.declares_files:
        return True
    return any(
        _overlap(a, b)
        for a, b in (
            *((out, inp) for out in earlier.outputs for inp in later.inputs),
            *((out, out2) for out in earlier.outputs for out2 in later.outputs),
            *((inp, out) for inp in earlier.inputs for out in later.outputs),
        )
    )


def _overlap(a: str, b: str) -> bool:
    """True when one path equals the other or lies under it."""
    if a == "." or b == ".":
        return True
    return a == b or posixpath.commonpath([a, b]) in (a, b)
