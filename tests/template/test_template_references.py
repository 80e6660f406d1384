"""References ``$[[...]]`` in workflow specifications."""

from __future__ import annotations

import pytest

from flowserv_async.errors import (
    InvalidArgumentError,
    MissingArgumentError,
    UnknownParameterError,
)
from flowserv_async.template import (
    InputFile,
    ParameterIndex,
    Reference,
    find_references,
    parse_reference,
    replace_references,
)

PARAMETERS = ParameterIndex.from_list(
    [
        {"name": "n", "dtype": "int"},
        {"name": "rate", "dtype": "float", "defaultValue": 2},
        {"name": "flag", "dtype": "bool"},
        {"name": "names", "dtype": "file", "defaultValue": "data/names.txt"},
    ]
)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("$[[n]]", Reference("n")),
        (" $[[ n ]] ", Reference("n")),
        ("$[[flag ? a : b]]", Reference("flag", True, "a", "b")),
        ("$[[flag?--verbose]]", Reference("flag", True, "--verbose", None)),
        ("x $[[n]]", None),
        ("$[[n]]/data", None),
        ("$[[a]] $[[b]]", None),
        ("${n}", None),
        ("plain", None),
    ],
)
def test_parse_reference_needs_the_whole_string(text: str, expected: Reference | None) -> None:
    assert parse_reference(text) == expected


def test_replacement_keeps_the_argument_type() -> None:
    spec = {"a": "$[[n]]", "b": ["$[[rate]]", {"c": "$[[n]]"}], "d": 5, "e": None}
    result = replace_references(spec, {"n": 3, "rate": 0.5}, PARAMETERS)
    assert result == {"a": 3, "b": [0.5, {"c": 3}], "d": 5, "e": None}
    assert spec["a"] == "$[[n]]"


def test_embedded_reference_stays_text() -> None:
    assert replace_references("run --n $[[n]]", {"n": 3}, PARAMETERS) == "run --n $[[n]]"


def test_missing_argument_falls_back_to_the_default() -> None:
    assert replace_references("$[[rate]]", {}, PARAMETERS) == 2.0
    assert replace_references("$[[names]]", {}, PARAMETERS) == "data/names.txt"


def test_input_file_argument_is_kept_as_is() -> None:
    upload = InputFile("f1", "in/x.txt")
    assert replace_references(["$[[names]]"], {"names": upload}, PARAMETERS) == [upload]


def test_missing_argument_without_default_is_an_error() -> None:
    with pytest.raises(MissingArgumentError, match="missing argument for parameter 'n'"):
        replace_references({"x": "$[[n]]"}, {}, PARAMETERS)


def test_reference_to_unknown_parameter_is_an_error() -> None:
    with pytest.raises(UnknownParameterError, match="unknown parameter 'zz'"):
        replace_references("$[[zz]]", {}, PARAMETERS)


@pytest.mark.parametrize(
    ("flag", "expected"), [(True, "yes"), ("true", "yes"), ("0", "no"), (None, "no")]
)
def test_conditional_reference_uses_the_bool_rule(flag: object, expected: str) -> None:
    assert replace_references("$[[flag ? yes : no]]", {"flag": flag}, PARAMETERS) == expected


def test_conditional_without_else_yields_none() -> None:
    assert replace_references("$[[flag ? -v]]", {"flag": False}, PARAMETERS) is None


def test_conditional_with_missing_flag_is_an_error() -> None:
    with pytest.raises(MissingArgumentError, match="'flag'"):
        replace_references("$[[flag ? a : b]]", {}, PARAMETERS)


def test_conditional_with_non_boolean_flag_is_an_error() -> None:
    with pytest.raises(InvalidArgumentError, match=r"invalid value 'perhaps' for parameter 'flag'"):
        replace_references("$[[flag ? a : b]]", {"flag": "perhaps"}, PARAMETERS)


def test_find_references_walks_nested_structures() -> None:
    spec = {
        "parameters": {"a": "$[[n]]", "b": "$[[flag ? x : y]]"},
        "steps": [{"action": "$[[step]]"}, {"commands": ["echo $[[ignored]]", ["$[[deep]]"]]}],
        "n": 1,
    }
    assert find_references(spec) == {"n", "flag", "step", "deep"}
