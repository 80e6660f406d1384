"""What the engine needs to execute one run, prepared and validated by the runs service."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from flowserv_async.engine.config import EngineConfig
from flowserv_async.engine.spec import WorkflowSpec
from flowserv_async.template import ResultSchema


@dataclass(frozen=True)
class RunJob:
    """A run, ready to execute.

    Attributes:
        run_id: the run.
        workflow_id: its workflow (file store prefix of static files and results).
        group_id: its group, or None for a post-processing run.
        workflow: the parsed workflow section, references expanded.
        context: values for command placeholders besides the workflow parameters.
        static_prefix: file store folder whose files are copied into the run folder.
        input_files: ``(file store key, target path)`` of uploaded files and other
            inputs copied into the run folder.
        generated_files: ``(target path, content)`` of files written into the folder.
        result_files: run folder paths kept as results on success; a missing one is
            an error.
        config: the merged engine configuration (workers).

    """

    run_id: str
    workflow_id: str
    group_id: str | None
    workflow: WorkflowSpec
    context: dict[str, Any]
    static_prefix: str
    input_files: tuple[tuple[str, str], ...] = ()
    generated_files: tuple[tuple[str, bytes], ...] = ()
    result_files: tuple[str, ...] = ()
    config: EngineConfig = field(default_factory=EngineConfig)
    result_schema: ResultSchema | None = None
    has_postproc: bool = False
