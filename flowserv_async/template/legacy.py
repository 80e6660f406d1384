"""Conversion of pre-0.9 (ROB) templates to the current template format.

Each part is converted only when it has the old shape, so current templates pass
through unchanged:

- parameters with ``id``: ``id`` -> ``name``, ``name`` -> ``label``, ``description`` ->
  ``help``, ``datatype``/``type`` -> ``dtype`` (``decimal`` -> ``float``, ``text`` ->
  ``string``), ``required`` -> ``isRequired``, ``module`` -> ``group``, ``as`` ->
  ``target`` (``$input`` = no target), ``values`` without ``dtype`` select -> a select;
  ``parent`` naming a record (list) parameter makes the declaration one of its fields
  (its element), any other ``parent`` becomes the ``group``;
- ``modules: [{id, name, index}]`` -> ``parameterGroups: [{name, title, index}]``;
- result columns ``{id, name, type}`` -> ``{name, label, dtype}``, ``orderBy`` ``id`` ->
  ``name``; post-processing outputs ``id`` -> ``source``;
- REANA serial workflows ``{inputs: {files, parameters}, workflow: {specification:
  {steps: [{environment, commands}]}}, outputs: {files}}`` -> ``{files: {inputs,
  outputs}, parameters, steps: [{name, action: {environment, commands}}]}``; a step
  that is a bare actor reference ``'$[[name]]'`` becomes ``{name, action: '$[[name]]'}``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from flowserv_async.errors import InvalidTemplateError
from flowserv_async.template.references import parse_reference

LEGACY_DTYPES = {"decimal": "float", "text": "string"}
_RENAMED_KEYS = {
    "id": "name",
    "name": "label",
    "description": "help",
    "datatype": "dtype",
    "type": "dtype",
    "required": "isRequired",
    "module": "group",
}


def convert_legacy_template(doc: Mapping[str, Any]) -> dict[str, Any]:
    """Return ``doc`` with every part in the old format converted to the current one."""
    result = dict(doc)
    if isinstance(result.get("parameters"), list):
        result["parameters"] = _convert_parameters(result["parameters"])
    if "modules" in result and "parameterGroups" not in result:
        modules = result.pop("modules")
        result["parameterGroups"] = (
            [_convert_group(item, pos) for pos, item in enumerate(modules)]
            if isinstance(modules, list)
            else modules
        )
    if isinstance(result.get("workflow"), Mapping):
        result["workflow"] = convert_legacy_workflow(result["workflow"])
    if isinstance(result.get("results"), Mapping):
        result["results"] = _convert_results(result["results"])
    if isinstance(result.get("postproc"), Mapping):
        result["postproc"] = _convert_postproc(result["postproc"])
    return result


def convert_legacy_workflow(spec: Mapping[str, Any]) -> dict[str, Any]:
    """Convert a REANA serial workflow specification to the current serial form."""
    inner = spec.get("workflow")
    if not isinstance(inner, Mapping) or not isinstance(inner.get("specification"), Mapping):
        return dict(spec)
    inputs = spec.get("inputs", {})
    outputs = spec.get("outputs", {})
    if not isinstance(inputs, Mapping) or not isinstance(outputs, Mapping):
        raise InvalidTemplateError("workflow: inputs and outputs must be mappings")
    result: dict[str, Any] = {}
    files = {
        key: section["files"]
        for key, section in (("inputs", inputs), ("outputs", outputs))
        if section.get("files") is not None
    }
    if files:
        result["files"] = files
    if inputs.get("parameters") is not None:
        result["parameters"] = inputs["parameters"]
    steps = inner["specification"].get("steps", [])
    if not isinstance(steps, list):
        raise InvalidTemplateError(f"workflow: steps must be a list, got {steps!r}")
    result["steps"] = [_convert_step(step, pos) for pos, step in enumerate(steps)]
    return result


def _convert_step(step: Any, pos: int) -> dict[str, Any]:
    name = f"step{pos + 1}"
    if isinstance(step, str) and parse_reference(step) is not None:
        # A bare actor reference: the actor parameter's value is the whole step.
        return {"name": name, "action": step}
    if not isinstance(step, Mapping) or "environment" not in step:
        raise InvalidTemplateError(f"workflow: step {pos} needs an environment, got {step!r}")
    return {
        "name": step.get("name", name),
        "action": {"environment": step["environment"], "commands": step.get("commands", [])},
    }


def _convert_parameters(docs: list[Any]) -> list[Any]:
    if not any(isinstance(doc, Mapping) and "id" in doc for doc in docs):
        return docs
    converted: list[tuple[Any, Any]] = [
        _convert_parameter(doc) if isinstance(doc, Mapping) and "id" in doc else (doc, None)
        for doc in docs
    ]
    by_name = {doc["name"]: doc for doc, _ in converted if isinstance(doc, dict)}
    top_level = []
    for doc, parent in converted:
        host = by_name.get(parent) if parent is not None else None
        if host is not None and host.get("dtype") == "record":
            host.setdefault("fields", []).append(doc)
        elif host is not None and host.get("dtype") == "list":
            host["para"] = doc
        else:
            if parent is not None:
                doc["group"] = parent
            top_level.append(doc)
    return top_level


def _convert_parameter(doc: Mapping[str, Any]) -> tuple[dict[str, Any], Any]:
    result: dict[str, Any] = {"dtype": "string"}
    for key, value in doc.items():
        if key in ("parent", "as"):
            continue
        result[_RENAMED_KEYS.get(key, key)] = value
    result["dtype"] = LEGACY_DTYPES.get(result["dtype"], result["dtype"])
    if doc.get("as") not in (None, "$input"):
        result["target"] = doc["as"]
    if isinstance(result.get("values"), list):
        result["values"] = [_convert_option(option) for option in result["values"]]
        if result["dtype"] not in ("list", "record"):
            result["dtype"] = "select"
    return result, doc.get("parent")


def _convert_option(option: Any) -> Any:
    if isinstance(option, Mapping) and "value" in option and "name" not in option:
        return {"name": str(option["value"]), **option}
    return option


def _convert_group(doc: Any, pos: int) -> Any:
    if isinstance(doc, Mapping) and "id" in doc:
        return {
            "name": doc["id"],
            "title": doc.get("name", doc["id"]),
            "index": doc.get("index", pos),
        }
    return doc


def _convert_results(doc: Mapping[str, Any]) -> dict[str, Any]:
    result = dict(doc)
    if isinstance(result.get("schema"), list):
        result["schema"] = [_convert_column(column) for column in result["schema"]]
    if isinstance(result.get("orderBy"), list):
        result["orderBy"] = [_rename(item, "id", "name") for item in result["orderBy"]]
    return result


def _convert_column(doc: Any) -> Any:
    if not isinstance(doc, Mapping) or "id" not in doc:
        return doc
    result: dict[str, Any] = {"name": doc["id"], "label": doc.get("name", doc["id"])}
    dtype = doc.get("type", doc.get("dtype"))
    result["dtype"] = LEGACY_DTYPES.get(dtype, dtype) if isinstance(dtype, str) else dtype
    result.update({k: v for k, v in doc.items() if k not in ("id", "name", "type", "dtype")})
    return result


def _convert_postproc(doc: Mapping[str, Any]) -> dict[str, Any]:
    result = dict(doc)
    if isinstance(result.get("workflow"), Mapping):
        result["workflow"] = convert_legacy_workflow(result["workflow"])
    if isinstance(result.get("outputs"), list):
        result["outputs"] = [_rename(item, "id", "source") for item in result["outputs"]]
    return result


def _rename(doc: Any, old: str, new: str) -> Any:
    if isinstance(doc, Mapping) and old in doc and new not in doc:
        return {(new if key == old else key): value for key, value in doc.items()}
    return doc
