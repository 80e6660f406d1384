"""Engine configuration: named workers and the step -> worker mapping.

The configuration comes from the file named by ``FLOWSERV_SERIAL_ENGINECONFIG``
(JSON or YAML), overridden by the workflow's, group's and run's ``config``::

    workers:
      - name: str
        type: subprocess | code
        env: {NAME: value} | [{key, value}]         # subprocess only
        variables: {name: value} | [{key, value}]   # subprocess only
    workflow:
      - {step: str, worker: str}

Later documents override earlier ones per worker name and per step. Top-level keys
other than ``workers`` and ``workflow`` belong to other parts of the system and are
ignored here.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any

import anyio
import yaml

from flowserv_async.errors import InvalidConfigurationError


class WorkerType(StrEnum):
    """Kinds of workers."""

    SUBPROCESS = "subprocess"
    CODE = "code"


@dataclass(frozen=True, slots=True)
class WorkerSpec:
    """A configured worker.

    Attributes:
        name: Unique worker name.
        type: Worker kind.
        env: Environment variables added to the OS environment of commands.
        variables: Values for ``${name}`` placeholders; they win over the context.

    """

    name: str
    type: WorkerType
    env: Mapping[str, str] = field(default_factory=dict)
    variables: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class EngineConfig:
    """Workers by name and the worker assigned to each step by name."""

    workers: Mapping[str, WorkerSpec] = field(default_factory=dict)
    steps: Mapping[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for step, worker in self.steps.items():
            if worker not in self.workers:
                raise InvalidConfigurationError(
                    f"engine configuration: step '{step}' is mapped to unknown worker '{worker}'"
                )

    def worker_for(self, step: str) -> WorkerSpec | None:
        """The worker configured for a step, ``None`` for the default worker."""
        name = self.steps.get(step)
        return None if name is None else self.workers[name]


def parse_engine_config(*docs: Mapping[str, Any] | None) -> EngineConfig:
    """Merge configuration documents (later ones win) into an :class:`EngineConfig`.

    Raises:
        InvalidConfigurationError: a document is malformed or a step is mapped to an
            unknown worker.

    """
    workers: dict[str, WorkerSpec] = {}
    steps: dict[str, str] = {}
    for index, doc in enumerate(docs):
        if doc is None:
            continue
        doc_workers, doc_steps = _parse_doc(doc, f"engine configuration #{index + 1}")
        workers.update(doc_workers)
        steps.update(doc_steps)
    return EngineConfig(workers=workers, steps=steps)


async def load_engine_config(
    path: str | os.PathLike[str] | None, *overrides: Mapping[str, Any] | None
) -> EngineConfig:
    """Read the engine configuration file (JSON or YAML) and merge the overrides.

    Args:
        path: Value of ``FLOWSERV_SERIAL_ENGINECONFIG``; ``None`` or empty for no file.
        overrides: Workflow, group and run ``config`` documents, in that order.

    Raises:
        InvalidConfigurationError: the file cannot be read or parsed, or any document
            is malformed.

    """
    if path is None or not str(path):
        return parse_engine_config(*overrides)
    try:
        text = await anyio.Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise InvalidConfigurationError(
            f"cannot read engine configuration file '{path}': {exc}"
        ) from exc
    try:
        doc = json.loads(text) if Path(path).suffix.lower() == ".json" else yaml.safe_load(text)
    except (ValueError, yaml.YAMLError) as exc:
        raise InvalidConfigurationError(
            f"cannot parse engine configuration file '{path}': {exc}"
        ) from exc
    if doc is None:
        doc = {}
    if not isinstance(doc, Mapping):
        raise InvalidConfigurationError(f"engine configuration file '{path}' is not a mapping")
    try:
        return parse_engine_config(doc, *overrides)
    except InvalidConfigurationError as exc:
        raise InvalidConfigurationError(f"{path}: {exc.message}") from exc


def _parse_doc(doc: Any, where: str) -> tuple[dict[str, WorkerSpec], dict[str, str]]:
    if not isinstance(doc, Mapping):
        raise InvalidConfigurationError(f"{where} must be a mapping, got {type(doc).__name__}")
    workers: dict[str, WorkerSpec] = {}
    for item in _list(doc.get("workers"), f"{where}: 'workers'"):
        worker = _parse_worker(item, where)
        if worker.name in workers:
            raise InvalidConfigurationError(f"{where}: duplicate worker '{worker.name}'")
        workers[worker.name] = worker
    steps: dict[str, str] = {}
    for item in _list(doc.get("workflow"), f"{where}: 'workflow'"):
        if (
            not isinstance(item, Mapping)
            or set(item) != {"step", "worker"}
            or not all(isinstance(v, str) and v for v in item.values())
        ):
            raise InvalidConfigurationError(
                f"{where}: workflow entry {item!r} must be {{step: name, worker: name}}"
            )
        if item["step"] in steps:
            raise InvalidConfigurationError(f"{where}: step '{item['step']}' is mapped twice")
        steps[item["step"]] = item["worker"]
    return workers, steps


def _parse_worker(item: Any, where: str) -> WorkerSpec:
    if not isinstance(item, Mapping):
        raise InvalidConfigurationError(f"{where}: worker {item!r} must be a mapping")
    name = item.get("name")
    if not isinstance(name, str) or not name:
        raise InvalidConfigurationError(f"{where}: worker {dict(item)!r} needs a string 'name'")
    unknown = sorted(str(key) for key in item if key not in {"name", "type", "env", "variables"})
    if unknown:
        raise InvalidConfigurationError(f"{where}: worker '{name}' has unknown key(s) {unknown}")
    kind = item.get("type")
    try:
        worker_type = WorkerType(str(kind))
    except ValueError:
        supported = ", ".join(sorted(WorkerType))
        raise InvalidConfigurationError(
            f"{where}: worker '{name}' has unknown type {kind!r} (supported: {supported})"
        ) from None
    env = _pairs(item.get("env"), f"{where}: worker '{name}' env")
    variables = _pairs(item.get("variables"), f"{where}: worker '{name}' variables")
    if worker_type is WorkerType.CODE and (env or variables):
        raise InvalidConfigurationError(
            f"{where}: code worker '{name}' runs in-process and takes no env or variables"
        )
    return WorkerSpec(name=name, type=worker_type, env=env, variables=variables)


def _pairs(doc: Any, where: str) -> dict[str, str]:
    """Key/value pairs given as a mapping or as flowserv's ``[{key, value}]`` list."""
    if doc is None:
        return {}
    if isinstance(doc, Mapping):
        items = list(doc.items())
    elif isinstance(doc, list) and all(
        isinstance(item, Mapping) and set(item) == {"key", "value"} for item in doc
    ):
        items = [(item["key"], item["value"]) for item in doc]
    else:
        raise InvalidConfigurationError(f"{where} must be a mapping or a list of {{key, value}}")
    pairs: dict[str, str] = {}
    for key, value in items:
        if not isinstance(key, str) or not key:
            raise InvalidConfigurationError(f"{where}: key {key!r} is not a name")
        if value is None or isinstance(value, Mapping | list):
            raise InvalidConfigurationError(f"{where}: value of '{key}' must be a scalar")
        pairs[key] = _scalar(value)
    return pairs


def _scalar(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def _list(doc: Any, where: str) -> list[Any]:
    if doc is None:
        return []
    if not isinstance(doc, list):
        raise InvalidConfigurationError(f"{where} must be a list, got {type(doc).__name__}")
    return doc
