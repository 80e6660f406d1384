"""The workflow engine core: serial workflow specs, workers, processes, the step DAG.

Database-independent: a controller stages the run folder, calls :func:`run_workflow`
inside the run's cancel scope, persists :class:`RunLog` lines and records the state.
"""

from __future__ import annotations

from flowserv_async.engine.config import (
    EngineConfig,
    WorkerSpec,
    WorkerType,
    load_engine_config,
    parse_engine_config,
)
from flowserv_async.engine.log import LogBatch, LogEntry, LogPage, RunLog
from flowserv_async.engine.process import (
    CommandResult,
    expand_command,
    needs_shell,
    process_group_alive,
    run_command,
    terminate_process_group,
)
from flowserv_async.engine.runner import (
    DEFAULT_GRACE,
    StepResult,
    StepState,
    WorkflowResult,
    dependencies,
    find_missing_files,
    run_workflow,
)
from flowserv_async.engine.spec import (
    CodeAction,
    ContainerAction,
    NotebookAction,
    StepAction,
    WorkflowSpec,
    WorkflowStep,
    parse_workflow,
)
from flowserv_async.engine.workers import (
    CodeWorker,
    NotebookWorker,
    StepOutcome,
    StepRun,
    SubprocessWorker,
    Worker,
    bind_workers,
    import_function,
)

__all__ = [
    "DEFAULT_GRACE",
    "CodeAction",
    "CodeWorker",
    "CommandResult",
    "ContainerAction",
    "EngineConfig",
    "LogBatch",
    "LogEntry",
    "LogPage",
    "NotebookAction",
    "NotebookWorker",
    "RunLog",
    "StepAction",
    "StepOutcome",
    "StepResult",
    "StepRun",
    "StepState",
    "SubprocessWorker",
    "Worker",
    "WorkerSpec",
    "WorkerType",
    "WorkflowResult",
    "WorkflowSpec",
    "WorkflowStep",
    "bind_workers",
    "dependencies",
    "expand_command",
    "find_missing_files",
    "import_function",
    "load_engine_config",
    "needs_shell",
    "parse_engine_config",
    "parse_workflow",
    "process_group_alive",
    "run_command",
    "run_workflow",
    "terminate_process_group",
]
