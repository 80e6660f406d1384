"""Workflow templates: documents, parameters, references, result schema, run arguments.

Everything here is pure and synchronous. Loading a template reads files, so async code
calls :func:`load_template` / :func:`load_document` through ``anyio.to_thread.run_sync``.
"""

from __future__ import annotations

from flowserv_async.template.arguments import input_files, parse_arguments
from flowserv_async.template.legacy import convert_legacy_template, convert_legacy_workflow
from flowserv_async.template.loader import load_document
from flowserv_async.template.parameters import (
    PARAMETER_TYPES,
    ActorParameter,
    BoolParameter,
    FileParameter,
    FloatParameter,
    InputFile,
    IntParameter,
    ListParameter,
    NumberRange,
    NumericParameter,
    Parameter,
    ParameterIndex,
    RecordParameter,
    SelectOption,
    SelectParameter,
    StringParameter,
    parameter_from_dict,
)
from flowserv_async.template.references import (
    Reference,
    find_references,
    parse_reference,
    replace_references,
)
from flowserv_async.template.schema import ResultColumn, ResultSchema, ResultValue, SortColumn
from flowserv_async.template.template import (
    DEFAULT_RUNS_DIR,
    OutputFile,
    ParameterGroup,
    PostprocSpec,
    WorkflowTemplate,
    load_template,
)

__all__ = [
    "DEFAULT_RUNS_DIR",
    "PARAMETER_TYPES",
    "ActorParameter",
    "BoolParameter",
    "FileParameter",
    "FloatParameter",
    "InputFile",
    "IntParameter",
    "ListParameter",
    "NumberRange",
    "NumericParameter",
    "OutputFile",
    "Parameter",
    "ParameterGroup",
    "ParameterIndex",
    "PostprocSpec",
    "RecordParameter",
    "Reference",
    "ResultColumn",
    "ResultSchema",
    "ResultValue",
    "SelectOption",
    "SelectParameter",
    "SortColumn",
    "StringParameter",
    "WorkflowTemplate",
    "convert_legacy_template",
    "convert_legacy_workflow",
    "find_references",
    "input_files",
    "load_document",
    "load_template",
    "parameter_from_dict",
    "parse_arguments",
    "parse_reference",
    "replace_references",
]
