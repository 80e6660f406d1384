"""What the engine needs to execute one run, prepared and validated by the runs service."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from flowserv_async.engine.config import EngineConfig
from flowserv_async.engine.spec import WorkflowSpec
from flowserv_async.template import OutputFile, ResultSchema


def result_files(outputs: Sequence[OutputFile] | None, declared: Sequence[str]) -> tuple[str, ...]:
    """The run folder paths that a successful run keeps as its result files.

    The template's ``outputs`` when it lists them, else the workflow's declared output
    files (``files.outputs``).
    """
    if outputs is not None:
        return tuple(output.source for output in outputs)
    return tuple(declared)


@dataclass(frozen=True)
class ResultSpec:
    """What a run keeps when it succeeds, and where.

    Attributes:
        run_id: the run.
        workflow_id: its workflow.
        group_id: its group, or None for a post-processing run.
        prefix: the file store folder of the run's result files.
        files: run folder paths kept as results; a missing one makes the run ERROR.
        schema: the result schema when the run is ranked, else None.
        has_postproc: True when a ranked success may start post-processing.

    """

    run_id: str
    workflow_id: str
    group_id: str | None
    prefix: str
    files: tuple[str, ...] = ()
    schema: ResultSchema | None = None
    has_postproc: bool = False


@dataclass(frozen=True)
class RunJob:
    """A run, ready to execute.

    Attributes:
        run_id: the run.
        workflow_id: its workflow.
        group_id: its group, or None for a post-processing run.
        workflow: the parsed workflow section, references expanded.
        context: values for command placeholders besides the workflow parameters.
        static_prefix: file store folder whose files are copied into the run folder.
        result_prefix: file store folder that receives the result files.
        input_files: ``(file store key, target path)`` of uploaded files and other
            inputs copied into the run folder.
        generated_files: ``(target path, content)`` of files written into the folder.
        result_files: run folder paths kept as results on success; a missing one is
            an error.
        config: the merged engine configuration (workers).
        result_schema: the schema of the ranked results (group runs of ranked
            workflows), else None.
        has_postproc: True when a ranked success may start post-processing.

    """

    run_id: str
    workflow_id: str
    group_id: str | None
    workflow: WorkflowSpec
    context: dict[str, Any]
    static_prefix: str
    result_prefix: str
    input_files: tuple[tuple[str, str], ...] = ()
    generated_files: tuple[tuple[str, bytes], ...] = ()
    result_files: tuple[str, ...] = ()
    config: EngineConfig = field(default_factory=EngineConfig)
    result_schema: ResultSchema | None = None
    has_postproc: bool = False

    @property
    def results(self) -> ResultSpec:
        """What the run keeps when it succeeds."""
        return ResultSpec(
            run_id=self.run_id,
            workflow_id=self.workflow_id,
            group_id=self.group_id,
            prefix=self.result_prefix,
            files=self.result_files,
            schema=self.result_schema,
            has_postproc=self.has_postproc,
        )
