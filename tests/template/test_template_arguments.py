"""Run arguments ``[{name, value}]`` parsed against the parameters of a workflow."""

from __future__ import annotations

from typing import Any

import pytest

from flowserv_async.errors import (
    DuplicateArgumentError,
    FlowservError,
    InvalidArgumentError,
    MissingArgumentError,
    UnknownParameterError,
)
from flowserv_async.template import InputFile, ParameterIndex, input_files, parse_arguments

PARAMETERS = ParameterIndex.from_list(
    [
        {"name": "names", "dtype": "file", "target": "data/names.txt"},
        {"name": "sleeptime", "dtype": "float", "range": "[0,10]", "defaultValue": 1},
        {"name": "greeting", "dtype": "string", "defaultValue": "Hello"},
        {"name": "verbose", "dtype": "bool", "isRequired": False},
        {"name": "model", "dtype": "file", "defaultValue": "static/model.bin"},
        {"name": "step", "dtype": "actor", "isRequired": False},
        {
            "name": "extra",
            "dtype": "list",
            "isRequired": False,
            "para": {"name": "f", "dtype": "file"},
        },
    ]
)


def upload(file_id: str = "f1", **ref: Any) -> dict[str, Any]:
    return {"type": "$file", "value": {"fileId": file_id, **ref}}


def test_arguments_are_typed_and_defaults_filled() -> None:
    result = parse_arguments(
        PARAMETERS,
        [{"name": "names", "value": upload()}, {"name": "sleeptime", "value": "0.5"}],
    )
    assert result == {
        "names": InputFile("f1", "data/names.txt"),
        "sleeptime": 0.5,
        "greeting": "Hello",
        "model": "static/model.bin",
    }
    assert list(result) == ["names", "sleeptime", "greeting", "model"]


def test_file_argument_target_path_wins() -> None:
    result = parse_arguments(
        PARAMETERS, [{"name": "names", "value": upload("f9", targetPath="in/x.txt")}]
    )
    assert result["names"] == InputFile("f9", "in/x.txt")


def test_actor_and_list_of_files() -> None:
    step = {"environment": "python:3.11", "commands": ["echo hi"]}
    result = parse_arguments(
        PARAMETERS,
        [
            {"name": "names", "value": upload()},
            {"name": "step", "value": step},
            {
                "name": "extra",
                "value": [upload("a", targetPath="x/a"), upload("b", targetPath="x/b")],
            },
            {"name": "model", "value": upload("m", targetPath="static/model.bin")},
        ],
    )
    assert result["step"] == step
    assert list(input_files(result)) == [
        InputFile("f1", "data/names.txt"),
        InputFile("m", "static/model.bin"),
        InputFile("a", "x/a"),
        InputFile("b", "x/b"),
    ]


def test_input_files_looks_inside_records() -> None:
    values = {"r": {"a": InputFile("1", "a"), "b": [InputFile("2", "b"), 3]}, "s": "x"}
    assert list(input_files(values)) == [InputFile("1", "a"), InputFile("2", "b")]


def test_required_parameter_with_default_is_filled() -> None:
    index = ParameterIndex.from_list(
        [{"name": "n", "dtype": "int", "isRequired": True, "defaultValue": 3}]
    )
    assert parse_arguments(index, []) == {"n": 3}


NAMES = {"name": "names", "value": upload()}

MALFORMED_ARGUMENTS: list[tuple[str, Any, type[FlowservError], str]] = [
    ("not a list", {"names": upload()}, InvalidArgumentError, "arguments must be a list"),
    (
        "item not a mapping",
        [NAMES, "sleeptime=1"],
        InvalidArgumentError,
        "malformed argument 'sleeptime=1'",
    ),
    (
        "item without value",
        [NAMES, {"name": "sleeptime"}],
        InvalidArgumentError,
        "malformed argument",
    ),
    ("item without name", [NAMES, {"value": 1}], InvalidArgumentError, "malformed argument"),
    (
        "item with extra key",
        [NAMES, {"name": "greeting", "value": "x", "type": "s"}],
        InvalidArgumentError,
        "malformed",
    ),
    (
        "name not a string",
        [NAMES, {"name": 1, "value": 1}],
        InvalidArgumentError,
        "malformed argument",
    ),
    ("duplicate name", [NAMES, NAMES], DuplicateArgumentError, "duplicate argument 'names'"),
    (
        "unknown name",
        [NAMES, {"name": "sleep", "value": 1}],
        UnknownParameterError,
        "unknown parameter 'sleep'",
    ),
    (
        "missing required",
        [{"name": "sleeptime", "value": 1}],
        MissingArgumentError,
        "missing argument for parameter 'names'",
    ),
    (
        "float not a number",
        [NAMES, {"name": "sleeptime", "value": "soon"}],
        InvalidArgumentError,
        "invalid value 'soon' for parameter 'sleeptime'",
    ),
    (
        "float out of range",
        [NAMES, {"name": "sleeptime", "value": 11}],
        InvalidArgumentError,
        r"invalid value 11 for parameter 'sleeptime': not in range \[0,10\]",
    ),
    (
        "bool not boolean",
        [NAMES, {"name": "verbose", "value": "loud"}],
        InvalidArgumentError,
        "invalid value 'loud' for parameter 'verbose'",
    ),
    (
        "string is none",
        [NAMES, {"name": "greeting", "value": None}],
        InvalidArgumentError,
        "invalid value None for parameter 'greeting'",
    ),
    (
        "file value is a plain id",
        [{"name": "names", "value": "f1"}],
        InvalidArgumentError,
        "invalid value 'f1' for parameter 'names'",
    ),
    (
        "file wrong type tag",
        [{"name": "names", "value": {"type": "file", "value": {"fileId": "f"}}}],
        InvalidArgumentError,
        "parameter 'names'",
    ),
    (
        "file without fileId",
        [{"name": "names", "value": {"type": "$file", "value": {}}}],
        InvalidArgumentError,
        "parameter 'names'",
    ),
    (
        "file target escapes",
        [{"name": "names", "value": upload(targetPath="../../etc/passwd")}],
        InvalidArgumentError,
        "leaves its folder",
    ),
    (
        "file target absolute",
        [{"name": "names", "value": upload(targetPath="/etc/passwd")}],
        InvalidArgumentError,
        "is absolute",
    ),
    (
        "file target with NUL",
        [{"name": "names", "value": upload(targetPath="a\x00b")}],
        InvalidArgumentError,
        "NUL",
    ),
    (
        "actor not a dict",
        [NAMES, {"name": "step", "value": "echo"}],
        InvalidArgumentError,
        "parameter 'step'",
    ),
    (
        "list not a list",
        [NAMES, {"name": "extra", "value": upload()}],
        InvalidArgumentError,
        "parameter 'extra': not a list",
    ),
    (
        "list element without target",
        [NAMES, {"name": "extra", "value": [upload()]}],
        InvalidArgumentError,
        r"list parameter 'extra', element 0: .*no target path",
    ),
]


@pytest.mark.parametrize(
    ("arguments", "error", "message"),
    [
        pytest.param(args, error, message, id=case)
        for case, args, error, message in MALFORMED_ARGUMENTS
    ],
)
def test_malformed_arguments_are_refused(
    arguments: Any, error: type[FlowservError], message: str
) -> None:
    with pytest.raises(error, match=message):
        parse_arguments(PARAMETERS, arguments)
