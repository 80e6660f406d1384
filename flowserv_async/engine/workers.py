"""Workers: what executes a step's action.

- :class:`SubprocessWorker` runs a container step's commands as local processes
  (the default for container steps).
- :class:`CodeWorker` calls a code step's Python function in this process: an
  ``async def`` is awaited in the event loop, a plain function runs in a worker thread.
- :class:`NotebookWorker` runs a notebook step with papermill (the ``notebooks`` extra)
  as a step process (:mod:`flowserv_async.engine._notebook`), so cancellation, time
  limits and live logs work as for commands.

A worker reports a step failure as a :class:`StepOutcome` with an error message; it
never swallows cancellation.
"""

from __future__ import annotations

import functools
import importlib
import inspect
import json
import os
import shlex
import signal
import sys
import traceback
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import anyio

from flowserv_async.engine.config import EngineConfig, WorkerSpec, WorkerType
from flowserv_async.engine.containment import RunProcesses
from flowserv_async.engine.log import RunLog
from flowserv_async.engine.process import CommandResult, expand_command, run_command
from flowserv_async.engine.spec import (
    CodeAction,
    ContainerAction,
    NotebookAction,
    WorkflowSpec,
    WorkflowStep,
)
from flowserv_async.errors import InvalidConfigurationError


@dataclass(frozen=True, slots=True)
class StepRun:
    """What a worker needs besides the step: the shared run state.

    Attributes:
        context: Variables of the run; code steps add their results to it.
        rundir: The run folder (working directory of commands).
        log: Receives the output lines.
        grace: Seconds between SIGTERM and SIGKILL when processes are ended.
        processes: The containment that commands of the run start in.

    """

    context: dict[str, Any]
    rundir: Path
    log: RunLog
    grace: float
    processes: RunProcesses | None = None


@dataclass(frozen=True, slots=True)
class StepOutcome:
    """Result of executing a step: success, or an error message (and exit code)."""

    returncode: int | None = 0
    error: str | None = None

    @property
    def ok(self) -> bool:
        """True when the step succeeded."""
        return self.error is None


@dataclass(frozen=True, slots=True)
class SubprocessWorker:
    """Runs container step commands as local processes, one after another.

    Attributes:
        env: Added to (and overriding) the OS environment of every command.
        variables: Placeholder values that win over the context; ``python`` defaults
            to the current interpreter.

    """

    env: Mapping[str, str] = field(default_factory=dict)
    variables: Mapping[str, str] = field(default_factory=dict)

    async def run(self, step: WorkflowStep, run: StepRun) -> StepOutcome:
        """Run the step's commands; the first non-zero exit fails the step."""
        action = step.action
        if not isinstance(action, ContainerAction):
            raise TypeError(f"step '{step.name}' is not a container step")
        env = {**os.environ, **self.env}
        for template in action.commands:
            variables = {**run.context, "python": sys.executable, **self.variables}
            command = expand_command(template, variables)
            if not command:
                continue
            result = await run_command(
                command,
                cwd=run.rundir,
                env=env,
                log=run.log,
                step=step.name,
                grace=run.grace,
                processes=run.processes,
            )
            if result.returncode != 0:
                return StepOutcome(result.returncode, _command_error(step.name, command, result))
        return StepOutcome(0)


@dataclass(frozen=True, slots=True)
class CodeWorker:
    """Calls code step functions in this process; never changes the working directory."""

    async def run(self, step: WorkflowStep, func: Callable[..., Any], run: StepRun) -> StepOutcome:
        """Call the step's imported ``func`` with context arguments; store the result."""
        action = step.action
        if not isinstance(action, CodeAction):
            raise TypeError(f"step '{step.name}' is not a code step")
        kwargs = _arguments(func, action, run.context)
        try:
            if inspect.iscoroutinefunction(func):
                result = await func(**kwargs)
            else:
                # A thread cannot be interrupted: on cancellation it is left to finish.
                call = functools.partial(func, **kwargs)
                result = await anyio.to_thread.run_sync(call, abandon_on_cancel=True)
        except Exception as exc:
            for block in traceback.format_exception(exc):
                for line in block.rstrip("\n").split("\n"):
                    run.log.append(step.name, "stderr", line)
            return StepOutcome(
                None,
                f"step '{step.name}': function '{action.func}' raised {type(exc).__name__}: {exc}",
            )
        if action.arg is not None:
            run.context[action.arg] = result
        return StepOutcome(None)


@dataclass(frozen=True, slots=True)
class NotebookWorker:
    """Runs notebook steps with papermill in a step process.

    Attributes:
        env: Added to (and overriding) the OS environment of the process.

    """

    env: Mapping[str, str] = field(default_factory=dict)

    async def run(self, step: WorkflowStep, run: StepRun) -> StepOutcome:
        """Execute the notebook with its ``params`` taken from the context."""
        action = step.action
        if not isinstance(action, NotebookAction):
            raise TypeError(f"step '{step.name}' is not a notebook step")
        parameters = {
            name: run.context[source]
            for name in action.params
            if (source := action.variables.get(name, name)) in run.context
        }
        argv = [
            sys.executable,
            *("-u", "-m", "flowserv_async.engine._notebook"),
            action.notebook,
            action.output,
            # Values papermill cannot pass on (e.g. the run folder's Path) as strings.
            json.dumps(parameters, default=str),
        ]
        command = shlex.join(argv)
        result = await run_command(
            command,
            cwd=run.rundir,
            env={**os.environ, **self.env},
            log=run.log,
            step=step.name,
            grace=run.grace,
        )
        if result.returncode != 0:
            return StepOutcome(result.returncode, _command_error(step.name, command, result))
        return StepOutcome(0)


Worker = SubprocessWorker | CodeWorker | NotebookWorker


def bind_workers(spec: WorkflowSpec, config: EngineConfig) -> dict[str, Worker]:
    """Choose the worker of every step that is not skipped.

    Raises:
        InvalidConfigurationError: a step is mapped to a worker of the wrong kind.

    """
    workers: dict[str, Worker] = {}
    for step in spec.steps:
        if step.action is None:
            continue
        worker_spec = config.worker_for(step.name)
        if isinstance(step.action, ContainerAction):
            _check_type(step, worker_spec, WorkerType.SUBPROCESS)
            workers[step.name] = (
                SubprocessWorker()
                if worker_spec is None
                else SubprocessWorker(env=worker_spec.env, variables=worker_spec.variables)
            )
        elif isinstance(step.action, NotebookAction):
            # A notebook step is a step process: a subprocess worker gives its env.
            _check_type(step, worker_spec, WorkerType.SUBPROCESS)
            workers[step.name] = NotebookWorker(
                env=worker_spec.env if worker_spec is not None else {}
            )
        else:
            _check_type(step, worker_spec, WorkerType.CODE)
            workers[step.name] = CodeWorker()
    return workers


def import_function(name: str) -> Callable[..., Any]:
    """Import ``package.module.function``; blocking (imports read files).

    Raises:
        ImportError: the module or the attribute does not exist.
        TypeError: the attribute is not callable.

    """
    module_name, _, attr = name.rpartition(".")
    module = importlib.import_module(module_name)
    func = getattr(module, attr, None)
    if func is None:
        raise ImportError(f"module '{module_name}' has no attribute '{attr}'")
    if not callable(func):
        raise TypeError(f"'{name}' is not callable")
    return func  # type: ignore[no-any-return]


def _check_type(step: WorkflowStep, worker: WorkerSpec | None, expected: WorkerType) -> None:
    if worker is not None and worker.type is not expected:
        kinds = {CodeAction: "code", NotebookAction: "notebook"}
        kind = kinds.get(type(step.action), "container")
        raise InvalidConfigurationError(
            f"{kind} step '{step.name}' cannot run on {worker.type} worker '{worker.name}'"
        )


def _arguments(
    func: Callable[..., Any], action: CodeAction, context: Mapping[str, Any]
) -> dict[str, Any]:
    """Keyword arguments for ``func`` taken from the context by parameter name."""
    try:
        parameters = inspect.signature(func).parameters.values()
    except (TypeError, ValueError):
        return {}
    kwargs: dict[str, Any] = {}
    for param in parameters:
        if param.kind not in (param.POSITIONAL_OR_KEYWORD, param.KEYWORD_ONLY):
            continue
        source = action.variables.get(param.name, param.name)
        if source in context:
            kwargs[param.name] = context[source]
    return kwargs


def _command_error(step: str, command: str, result: CommandResult) -> str:
    code = result.returncode
    if code < 0:
        status = f"was killed by signal {_signal_name(-code)}"
    else:
        status = f"failed with exit code {code}"
    message = f"step '{step}': command '{command}' {status}"
    if result.stderr_tail:
        message += "\nstderr (last lines):\n" + "\n".join(result.stderr_tail)
    return message


def _signal_name(number: int) -> str:
    try:
        return signal.Signals(number).name
    except ValueError:
        return str(number)
