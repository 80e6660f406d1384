"""The workflow template: a parameterised workflow specification and its benchmark parts.

Top-level keys: ``workflow`` (required), ``parameters``, ``parameterGroups``,
``outputs``, ``results`` and ``postproc``. Templates in the pre-0.9 format are converted
first (:mod:`flowserv_async.template.legacy`).
"""

from __future__ import annotations

import copy
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from flowserv_async.errors import InvalidTemplateError, UnknownParameterError
from flowserv_async.template._checks import checked_mapping, relative_path, sorted_keys
from flowserv_async.template.legacy import convert_legacy_template
from flowserv_async.template.loader import load_document
from flowserv_async.template.parameters import ParameterIndex
from flowserv_async.template.references import find_references
from flowserv_async.template.schema import ResultSchema

TEMPLATE_KEYS = frozenset(
    {"workflow", "parameters", "parameterGroups", "outputs", "results", "postproc"}
)
DEFAULT_RUNS_DIR = "runs"


def _path(value: Any, what: str) -> str:
    try:
        return relative_path(value)
    except (TypeError, ValueError) as err:
        raise InvalidTemplateError(f"{what}: {err}") from None


def _list(value: Any, what: str) -> list[Any]:
    if not isinstance(value, list):
        raise InvalidTemplateError(f"{what} must be a list, got {value!r}")
    return value


@dataclass(frozen=True)
class ParameterGroup:
    """A titled group of parameters, for display."""

    name: str
    title: str
    index: int

    @classmethod
    def from_dict(cls, doc: Any, index: int) -> ParameterGroup:
        """Validate ``{name, title, index?}`` (index default: list position).

        Raises:
            InvalidTemplateError: for a malformed group.

        """
        doc = checked_mapping(doc, "parameter group", {"name", "title"}, {"index"})
        name, title, position = doc["name"], doc["title"], doc.get("index", index)
        if (
            not isinstance(name, str)
            or not isinstance(title, str)
            or not isinstance(position, int)
            or isinstance(position, bool)
        ):
            raise InvalidTemplateError(f"parameter group {dict(doc)!r}: malformed")
        return cls(name, title, position)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready ``{name, title, index}``."""
        return {"name": self.name, "title": self.title, "index": self.index}


@dataclass(frozen=True)
class OutputFile:
    """Display metadata of a result file of a run (``key`` defaults to ``source``)."""

    source: str
    key: str
    title: str | None = None
    caption: str | None = None
    format: dict[str, Any] | None = None
    widget: dict[str, Any] | str | None = None

    @classmethod
    def from_dict(cls, doc: Any) -> OutputFile:
        """Validate ``{source, key?, title?, caption?, format?, widget?}``.

        ``widget`` is a mapping or, as flowserv accepts, a widget name (``'TextView'``).

        Raises:
            InvalidTemplateError: for a malformed entry.

        """
        doc = checked_mapping(
            doc, "output file", {"source"}, {"key", "title", "caption", "format", "widget"}
        )
        source = _path(doc["source"], "output file source")
        key = doc.get("key", source)
        title, caption = doc.get("title"), doc.get("caption")
        fmt, widget = doc.get("format"), doc.get("widget")
        if (
            not isinstance(key, str)
            or not isinstance(title, str | None)
            or not isinstance(caption, str | None)
            or not isinstance(fmt, dict | None)
            or not isinstance(widget, dict | str | None)
        ):
            raise InvalidTemplateError(f"output file {dict(doc)!r}: malformed")
        return cls(source, key, title, caption, fmt, widget)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready entry (optional keys only when set)."""
        doc: dict[str, Any] = {"source": self.source, "key": self.key}
        optional = {
            "title": self.title,
            "caption": self.caption,
            "format": self.format,
            "widget": self.widget,
        }
        doc.update(
            {key: copy.deepcopy(value) for key, value in optional.items() if value is not None}
        )
        return doc


def _outputs(value: Any, what: str) -> tuple[OutputFile, ...]:
    outputs = tuple(OutputFile.from_dict(item) for item in _list(value, what))
    keys = [output.key for output in outputs]
    for key in keys:
        if keys.count(key) > 1:
            raise InvalidTemplateError(f"{what}: duplicate key '{key}'")
    return outputs


@dataclass(frozen=True)
class PostprocSpec:
    """The post-processing workflow and which files of the ranked runs it reads.

    The ranked runs' ``files`` are placed under ``runs`` (a folder in the run folder)
    as ``{runs}/{run_id}/{file}``, with ``{runs}/runs.json`` listing the runs.
    """

    workflow: dict[str, Any]
    files: tuple[str, ...] = ()
    runs: str = DEFAULT_RUNS_DIR
    outputs: tuple[OutputFile, ...] | None = None

    @classmethod
    def from_dict(cls, doc: Any) -> PostprocSpec:
        """Validate ``{workflow, inputs?: {files, runs?}, outputs?}``.

        Raises:
            InvalidTemplateError: for a malformed section.

        """
        doc = checked_mapping(doc, "postproc", {"workflow"}, {"inputs", "outputs"})
        if not isinstance(doc["workflow"], Mapping):
            raise InvalidTemplateError("postproc: workflow must be a mapping")
        inputs = checked_mapping(
            doc.get("inputs", {"files": []}), "postproc inputs", {"files"}, {"runs"}
        )
        files = tuple(
            _path(item, "postproc input file") for item in _list(inputs["files"], "postproc files")
        )
        runs = _path(inputs.get("runs", DEFAULT_RUNS_DIR), "postproc runs folder")
        outputs = _outputs(doc["outputs"], "postproc outputs") if "outputs" in doc else None
        return cls(copy.deepcopy(dict(doc["workflow"])), files, runs, outputs)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready section."""
        doc: dict[str, Any] = {
            "workflow": copy.deepcopy(self.workflow),
            "inputs": {"files": list(self.files), "runs": self.runs},
        }
        if self.outputs is not None:
            doc["outputs"] = [output.to_dict() for output in self.outputs]
        return doc


@dataclass(frozen=True)
class WorkflowTemplate:
    """A validated workflow template."""

    workflow: dict[str, Any]
    parameters: ParameterIndex = field(default_factory=ParameterIndex)
    parameter_groups: tuple[ParameterGroup, ...] = ()
    outputs: tuple[OutputFile, ...] | None = None
    result_schema: ResultSchema | None = None
    postproc: PostprocSpec | None = None

    @classmethod
    def from_dict(cls, doc: Any) -> WorkflowTemplate:
        """Validate a template document (converting the pre-0.9 format).

        Raises:
            InvalidTemplateError: for a malformed template.
            InvalidParameterError: for a malformed parameter declaration.
            UnknownParameterError: when the workflow references an undeclared parameter.

        """
        if not isinstance(doc, Mapping):
            raise InvalidTemplateError(f"template must be a mapping, got {doc!r}")
        doc = convert_legacy_template(doc)
        unknown = set(doc) - TEMPLATE_KEYS
        if unknown:
            raise InvalidTemplateError(f"template: unknown key(s) {sorted_keys(unknown)}")
        workflow = doc.get("workflow")
        if not isinstance(workflow, Mapping):
            raise InvalidTemplateError(f"template: workflow must be a mapping, got {workflow!r}")
        parameters = ParameterIndex.from_list(doc.get("parameters"))
        groups = tuple(
            ParameterGroup.from_dict(item, pos)
            for pos, item in enumerate(_list(doc.get("parameterGroups", []), "parameterGroups"))
        )
        names = [group.name for group in groups]
        for name in names:
            if names.count(name) > 1:
                raise InvalidTemplateError(f"parameterGroups: duplicate group '{name}'")
        template = cls(
            workflow=copy.deepcopy(dict(workflow)),
            parameters=parameters,
            parameter_groups=groups,
            outputs=_outputs(doc["outputs"], "outputs") if "outputs" in doc else None,
            result_schema=(
                ResultSchema.from_dict(doc["results"]) if doc.get("results") is not None else None
            ),
            postproc=(
                PostprocSpec.from_dict(doc["postproc"]) if doc.get("postproc") is not None else None
            ),
        )
        template._check_groups(parameters)
        for name in sorted(find_references(template.workflow)):
            if name not in parameters:
                raise UnknownParameterError(name)
        return template

    def merge_parameters(self, overrides: Any) -> ParameterIndex:
        """The template's parameters extended or overridden by name (for a group).

        Raises:
            InvalidTemplateError: for repeated names or an unknown parameter group.
            InvalidParameterError: for a malformed declaration.

        """
        parameters = self.parameters.merge(overrides)
        self._check_groups(parameters)
        return parameters

    def _check_groups(self, parameters: ParameterIndex) -> None:
        groups = {group.name for group in self.parameter_groups}
        for para in parameters.values():
            if para.group is not None and para.group not in groups:
                raise InvalidTemplateError(
                    f"parameter '{para.name}': group '{para.group}' is no parameterGroup"
                )

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready template; ``from_dict(to_dict())`` gives an equal template.

        Its ``parameters`` (in display order), ``parameterGroups`` and ``outputs`` are
        the shapes of a WorkflowHandle.
        """
        doc: dict[str, Any] = {
            "workflow": copy.deepcopy(self.workflow),
            "parameters": self.parameters.to_list(),
        }
        if self.parameter_groups:
            doc["parameterGroups"] = [group.to_dict() for group in self.parameter_groups]
        if self.outputs is not None:
            doc["outputs"] = [output.to_dict() for output in self.outputs]
        if self.result_schema is not None:
            doc["results"] = self.result_schema.to_dict()
        if self.postproc is not None:
            doc["postproc"] = self.postproc.to_dict()
        return doc


def load_template(
    path: str | os.PathLike[str], base_dir: str | os.PathLike[str] | None = None
) -> WorkflowTemplate:
    """Load and validate the template in ``path`` (see :func:`load_document`).

    Reads files: call it in a worker thread from async code.
    """
    return WorkflowTemplate.from_dict(load_document(path, base_dir))
