"""The serial workflow specification: parsed into typed, immutable steps.

The template package expands ``$[[name]]`` references before the ``workflow`` section
reaches the engine, so an actor step's action arrives as a dict (or ``None`` when the
optional actor was not given, and the step is skipped)::

    files: {inputs: [..], outputs: [..]}          # optional
    parameters: {var: value}                       # optional, the step context
    steps:
      - name: str
        files: {inputs: [..], outputs: [..]}      # optional
        timeout: seconds                           # optional
        action: {environment: str, commands: [str]}                     # container step
              | {func: "pkg.mod.fn", arg: str, variables: [{arg, var}]} # code step
              | {notebook: path, output?: path, params?: [str],        # notebook step
                 variables?: [{arg, var}], requirements?: [str]}
"""

from __future__ import annotations

import posixpath
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from flowserv_async._paths import relative_path
from flowserv_async.errors import InvalidTemplateError


@dataclass(frozen=True, slots=True)
class ContainerAction:
    """Shell-like commands run one after another (``${var}`` placeholders allowed)."""

    commands: tuple[str, ...]
    environment: str | None = None


@dataclass(frozen=True, slots=True)
class CodeAction:
    """A Python function called with arguments from the context.

    Attributes:
        func: Dotted name ``package.module.function``.
        arg: Context variable that receives the result (``None``: discarded).
        variables: Function argument name -> context variable name.

    """

    func: str
    arg: str | None = None
    variables: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class NotebookAction:
    """A Jupyter notebook executed with papermill (the ``notebooks`` extra).

    Attributes:
        notebook: Path of the notebook in the run folder.
        output: Path of the executed notebook (``x.ipynb`` -> ``x.out.ipynb`` by default).
        params: Notebook parameters given values from the context.
        variables: Notebook parameter name -> context variable name.

    """

    notebook: str
    output: str
    params: tuple[str, ...] = ()
    variables: Mapping[str, str] = field(default_factory=dict)


StepAction = ContainerAction | CodeAction | NotebookAction


@dataclass(frozen=True, slots=True)
class WorkflowStep:
    """One step of a serial workflow.

    Attributes:
        name: Unique name of the step.
        action: What the step runs; ``None`` for an absent optional actor (skipped).
        inputs: Files and folders the step reads (relative to the run folder).
        outputs: Files and folders the step writes.
        declares_files: Whether the step has ``files`` with inputs or outputs; a step
            that declares nothing is ordered after every earlier step and before
            every later one.
        timeout: Time limit in seconds, ``None`` for the engine default.
        output_folders: Folders created before the step runs, as flowserv does: the
            parent of each output file, and each output ending in ``/``.

    """

    name: str
    action: StepAction | None
    inputs: tuple[str, ...] = ()
    outputs: tuple[str, ...] = ()
    declares_files: bool = False
    timeout: float | None = None
    output_folders: tuple[str, ...] = ()

    @property
    def skipped(self) -> bool:
        """True when the step has no action and is not run."""
        return self.action is None


@dataclass(frozen=True, slots=True)
class WorkflowSpec:
    """A parsed serial workflow (``output_folders``: as for a step, made before any step)."""

    steps: tuple[WorkflowStep, ...]
    parameters: Mapping[str, Any] = field(default_factory=dict)
    inputs: tuple[str, ...] = ()
    outputs: tuple[str, ...] = ()
    output_folders: tuple[str, ...] = ()


def parse_workflow(doc: Mapping[str, Any]) -> WorkflowSpec:
    """Parse the ``workflow`` section of a template.

    Raises:
        InvalidTemplateError: the section is malformed; the message names the step and key.

    """
    if not isinstance(doc, Mapping):
        raise InvalidTemplateError(f"workflow must be a mapping, got {_kind(doc)}")
    _reject_unknown(doc, {"files", "parameters", "steps"}, "workflow")
    inputs, outputs, _ = _parse_files(doc.get("files"), "workflow")
    parameters = doc.get("parameters", {})
    if parameters is None:
        parameters = {}
    if not isinstance(parameters, Mapping) or not all(isinstance(k, str) for k in parameters):
        raise InvalidTemplateError("workflow 'parameters' must map names to values")
    steps_doc = doc.get("steps")
    if not isinstance(steps_doc, list) or not steps_doc:
        raise InvalidTemplateError("workflow 'steps' must be a non-empty list")
    steps: list[WorkflowStep] = []
    names: set[str] = set()
    for index, step_doc in enumerate(steps_doc):
        step = _parse_step(step_doc, index)
        if step.name in names:
            raise InvalidTemplateError(f"duplicate step name '{step.name}'")
        names.add(step.name)
        steps.append(step)
    return WorkflowSpec(
        steps=tuple(steps),
        parameters=dict(parameters),
        inputs=inputs,
        outputs=outputs,
        output_folders=_output_folders(doc.get("files")),
    )


def _parse_step(doc: Any, index: int) -> WorkflowStep:
    if not isinstance(doc, Mapping):
        raise InvalidTemplateError(f"step {index} must be a mapping, got {_kind(doc)}")
    name = doc.get("name")
    if not isinstance(name, str) or not name:
        raise InvalidTemplateError(f"step {index} needs a non-empty string 'name'")
    where = f"step '{name}'"
    _reject_unknown(doc, {"name", "files", "action", "timeout"}, where)
    if "action" not in doc:
        raise InvalidTemplateError(f"{where} has no 'action'")
    inputs, outputs, declares_files = _parse_files(doc.get("files"), where)
    return WorkflowStep(
        name=name,
        action=_parse_action(doc["action"], where),
        inputs=inputs,
        outputs=outputs,
        declares_files=declares_files,
        timeout=_parse_timeout(doc.get("timeout"), where),
        output_folders=_output_folders(doc.get("files")),
    )


def _parse_action(doc: Any, where: str) -> StepAction | None:
    if doc is None:
        return None
    if isinstance(doc, str):
        raise InvalidTemplateError(f"{where}: action reference '{doc}' was not expanded")
    if not isinstance(doc, Mapping):
        raise InvalidTemplateError(f"{where}: 'action' must be a mapping, got {_kind(doc)}")
    if "commands" in doc:
        _reject_unknown(doc, {"environment", "commands"}, f"{where} action")
        commands = doc["commands"]
        if not isinstance(commands, list) or not all(isinstance(c, str) for c in commands):
            raise InvalidTemplateError(f"{where}: 'commands' must be a list of strings")
        environment = doc.get("environment")
        if environment is not None and not isinstance(environment, str):
            raise InvalidTemplateError(f"{where}: 'environment' must be a string")
        return ContainerAction(commands=tuple(commands), environment=environment)
    if "func" in doc:
        _reject_unknown(doc, {"func", "arg", "variables"}, f"{where} action")
        return _parse_code_action(doc, where)
    if "notebook" in doc:
        known = {"notebook", "output", "params", "variables", "requirements"}
        _reject_unknown(doc, known, f"{where} action")
        return _parse_notebook_action(doc, where)
    raise InvalidTemplateError(
        f"{where}: unknown action with keys {sorted(doc)}; expected 'commands', 'func' or "
        "'notebook'"
    )


def _parse_notebook_action(doc: Mapping[str, Any], where: str) -> NotebookAction:
    notebook = normalize_path(doc["notebook"], f"{where} notebook")
    output = doc.get("output")
    if output is None:
        # flowserv's default name for the executed notebook.
        stem = notebook[: -len(".ipynb")] if notebook.endswith(".ipynb") else notebook
        output = f"{stem}.out.ipynb"
    params = doc.get("params") or []
    if not isinstance(params, list) or not all(isinstance(p, str) and p for p in params):
        raise InvalidTemplateError(f"{where}: 'params' must be a list of names")
    # ``requirements`` only matters for flowserv's Docker notebook worker.
    return NotebookAction(
        notebook=notebook,
        output=normalize_path(output, f"{where} output"),
        params=tuple(params),
        variables=_parse_variables(doc, where),
    )


def _parse_code_action(doc: Mapping[str, Any], where: str) -> CodeAction:
    func = doc["func"]
    if not isinstance(func, str) or "." not in func.strip(".") or " " in func:
        raise InvalidTemplateError(f"{where}: 'func' must be a dotted name, got {func!r}")
    arg = doc.get("arg")
    if arg is not None and (not isinstance(arg, str) or not arg):
        raise InvalidTemplateError(f"{where}: 'arg' must be a non-empty string")
    return CodeAction(func=func, arg=arg, variables=_parse_variables(doc, where))


def _parse_variables(doc: Mapping[str, Any], where: str) -> dict[str, str]:
    variables: dict[str, str] = {}
    items = doc.get("variables") or []
    if not isinstance(items, list):
        raise InvalidTemplateError(f"{where}: 'variables' must be a list of {{arg, var}}")
    for item in items:
        if (
            not isinstance(item, Mapping)
            or set(item) != {"arg", "var"}
            or not all(isinstance(v, str) and v for v in item.values())
        ):
            raise InvalidTemplateError(f"{where}: malformed variable mapping {item!r}")
        variables[item["arg"]] = item["var"]
    return variables


def _parse_files(doc: Any, where: str) -> tuple[tuple[str, ...], tuple[str, ...], bool]:
    if doc is None:
        return (), (), False
    if not isinstance(doc, Mapping):
        raise InvalidTemplateError(f"{where}: 'files' must be a mapping, got {_kind(doc)}")
    _reject_unknown(doc, {"inputs", "outputs"}, f"{where} files")
    inputs = _parse_paths(doc.get("inputs"), f"{where} files.inputs")
    outputs = _parse_paths(doc.get("outputs"), f"{where} files.outputs")
    return inputs, outputs, doc.get("inputs") is not None or doc.get("outputs") is not None


def _parse_paths(doc: Any, where: str) -> tuple[str, ...]:
    if doc is None:
        return ()
    if not isinstance(doc, list):
        raise InvalidTemplateError(f"{where} must be a list of paths, got {_kind(doc)}")
    return tuple(normalize_path(path, where) for path in doc)


def _output_folders(files: Mapping[str, Any] | None) -> tuple[str, ...]:
    """The folders of the declared outputs (``files`` was checked by ``_parse_files``)."""
    folders: list[str] = []
    for path in (files or {}).get("outputs") or ():
        folder = path if path.strip().endswith("/") else posixpath.dirname(path.strip())
        if folder.strip("/"):
            folder = normalize_path(folder)
            if folder not in folders:
                folders.append(folder)
    return tuple(folders)


def normalize_path(path: Any, where: str = "path") -> str:
    """Normalise a relative POSIX path in the run folder (see :mod:`flowserv_async._paths`)."""
    try:
        return relative_path(path)
    except (TypeError, ValueError) as exc:
        raise InvalidTemplateError(f"{where}: {exc}") from None


def _parse_timeout(value: Any, where: str) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or not value > 0:
        raise InvalidTemplateError(f"{where}: 'timeout' must be a positive number, got {value!r}")
    if value == float("inf"):
        raise InvalidTemplateError(f"{where}: 'timeout' must be finite")
    return float(value)


def _reject_unknown(doc: Mapping[str, Any], known: set[str], where: str) -> None:
    unknown = sorted(str(key) for key in doc if key not in known)
    if unknown:
        raise InvalidTemplateError(f"{where}: unknown key(s) {unknown}")


def _kind(value: Any) -> str:
    return type(value).__name__
