"""Parameter references ``$[[name]]`` and ``$[[flag ? a : b]]`` in workflow specifications.

A string is a reference only when the whole string is one; the replacement keeps the
type of the argument (an int stays an int, an input file stays an input file).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from flowserv_async.errors import (
    InvalidArgumentError,
    MissingArgumentError,
    UnknownParameterError,
)
from flowserv_async.template._values import to_bool
from flowserv_async.template.parameters import ActorParameter, ParameterIndex

_REFERENCE = re.compile(r"\$\[\[([^\[\]]*)\]\]")


@dataclass(frozen=True)
class Reference:
    """A parsed reference: ``$[[name]]``, or ``$[[name ? if_true : if_false]]``."""

    name: str
    conditional: bool = False
    if_true: str | None = None
    if_false: str | None = None


def parse_reference(value: str) -> Reference | None:
    """Parse ``value`` when the whole string is a reference, else return ``None``."""
    match = _REFERENCE.fullmatch(value.strip())
    if match is None:
        return None
    expr = match.group(1)
    name, question, outcomes = expr.partition("?")
    if not question:
        return Reference(name.strip())
    if_true, colon, if_false = outcomes.partition(":")
    return Reference(
        name.strip(),
        conditional=True,
        if_true=if_true.strip(),
        if_false=if_false.strip() if colon else None,
    )


def find_references(spec: Any) -> set[str]:
    """Names of all parameters referenced anywhere in a nested dict/list structure."""
    if isinstance(spec, str):
        ref = parse_reference(spec)
        return set() if ref is None else {ref.name}
    if isinstance(spec, Mapping):
        return set().union(*(find_references(value) for value in spec.values()))
    if isinstance(spec, list):
        return set().union(*(find_references(value) for value in spec))
    return set()


def replace_references(spec: Any, arguments: Mapping[str, Any], parameters: ParameterIndex) -> Any:
    """Return a copy of ``spec`` with every reference replaced by its value.

    A missing argument falls back to the parameter's default.

    Raises:
        MissingArgumentError: a referenced parameter has neither argument nor default.
        UnknownParameterError: a reference names no parameter.
        InvalidArgumentError: the flag of a conditional reference is not a Boolean.

    """
    if isinstance(spec, str):
        ref = parse_reference(spec)
        return spec if ref is None else _evaluate(ref, arguments, parameters)
    if isinstance(spec, Mapping):
        return {
            key: replace_references(value, arguments, parameters) for key, value in spec.items()
        }
    if isinstance(spec, list):
        return [replace_references(value, arguments, parameters) for value in spec]
    return spec


def _evaluate(ref: Reference, arguments: Mapping[str, Any], parameters: ParameterIndex) -> Any:
    if ref.name in arguments:
        value = arguments[ref.name]
    elif ref.name in parameters:
        para = parameters[ref.name]
        value = para.default_argument()
        if value is None and isinstance(para, ActorParameter) and not para.is_required:
            return None  # as in flowserv: the step of an absent optional actor is skipped
        if value is None:
            raise MissingArgumentError(ref.name)
    else:
        raise UnknownParameterError(ref.name)
    if not ref.conditional:
        return value
    try:
        flag = to_bool(value)
    except (TypeError, ValueError):
        raise InvalidArgumentError(
            f"invalid value {value!r} for parameter '{ref.name}': not a Boolean value"
        ) from None
    return ref.if_true if flag else ref.if_false
