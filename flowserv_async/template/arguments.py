"""Run arguments: validate ``[{name, value}]`` against the parameters of a workflow.

The result maps every parameter that has a value to its typed value: given arguments
converted by their parameter, absent parameters filled with their default. A file
argument becomes an :class:`InputFile`; the caller checks that its file id names an
upload of the group (:func:`input_files` lists them).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

from flowserv_async.errors import (
    DuplicateArgumentError,
    InvalidArgumentError,
    MissingArgumentError,
    UnknownParameterError,
)
from flowserv_async.template.loader import MAX_NESTING, value_depths
from flowserv_async.template.parameters import InputFile, ParameterIndex


def parse_arguments(parameters: ParameterIndex, arguments: Any) -> dict[str, Any]:
    """Convert the run arguments ``[{name, value}]`` to ``{name: typed value}``.

    Parameters without an argument get their default; those without either are left
    out, unless they are required.

    Raises:
        InvalidArgumentError: for a malformed item, a value that does not convert, or
            arguments nested deeper than templates may be.
        DuplicateArgumentError: for a name given twice.
        UnknownParameterError: for a name that is no parameter.
        MissingArgumentError: for a required parameter without value or default.

    """
    if not isinstance(arguments, list):
        raise InvalidArgumentError(
            f"arguments must be a list of {{name, value}}, got {arguments!r}"
        )
    if any(depth > MAX_NESTING for depth in value_depths(arguments)):
        raise InvalidArgumentError(f"arguments are nested more than {MAX_NESTING} levels deep")
    given: dict[str, Any] = {}
    for item in arguments:
        if (
            not isinstance(item, Mapping)
            or set(item) != {"name", "value"}
            or not isinstance(item["name"], str)
        ):
            raise InvalidArgumentError(f"malformed argument {item!r}: expected {{name, value}}")
        name = item["name"]
        if name in given:
            raise DuplicateArgumentError(name)
        if name not in parameters:
            raise UnknownParameterError(name)
        given[name] = parameters[name].cast(item["value"])
    result: dict[str, Any] = {}
    for name, para in parameters.items():
        if name in given:
            result[name] = given[name]
            continue
        default = para.default_argument()
        if default is not None:
            result[name] = default
        elif para.is_required:
            raise MissingArgumentError(name)
    return result


def input_files(values: Any) -> Iterator[InputFile]:
    """Every :class:`InputFile` in parsed argument values, also inside lists and records."""
    if isinstance(values, InputFile):
        yield values
    elif isinstance(values, Mapping):
        for value in values.values():
            yield from input_files(value)
    elif isinstance(values, list):
        for value in values:
            yield from input_files(value)
