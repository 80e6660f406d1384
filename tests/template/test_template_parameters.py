"""Parameter declarations: normalisation, conversion of argument values, errors."""

from __future__ import annotations

import math
from typing import Any

import pytest

from flowserv_async.errors import (
    InvalidArgumentError,
    InvalidParameterError,
    InvalidTemplateError,
)
from flowserv_async.template import (
    ActorParameter,
    BoolParameter,
    FileParameter,
    FloatParameter,
    InputFile,
    IntParameter,
    ListParameter,
    NumberRange,
    ParameterIndex,
    RecordParameter,
    SelectParameter,
    StringParameter,
    parameter_from_dict,
)


def para(doc: dict[str, Any], index: int = 0) -> Any:
    return parameter_from_dict(doc, index)


def test_declaration_defaults_index_and_required_flag() -> None:
    required = para({"name": "a", "dtype": "int"}, index=4)
    optional = para({"name": "b", "dtype": "int", "defaultValue": 1})
    assert required.to_dict() == {"name": "a", "dtype": "int", "index": 4, "isRequired": True}
    assert optional.to_dict() == {
        "name": "b",
        "dtype": "int",
        "index": 0,
        "isRequired": False,
        "defaultValue": 1,
    }


def test_explicit_index_and_required_flag_win() -> None:
    p = para({"name": "a", "dtype": "int", "index": 9, "isRequired": True, "defaultValue": 1})
    assert (p.index, p.is_required, p.default_argument()) == (9, True, 1)


def test_to_dict_has_every_optional_key_that_is_set() -> None:
    doc = {
        "name": "n",
        "dtype": "float",
        "index": 2,
        "isRequired": False,
        "label": "N",
        "help": "a number",
        "defaultValue": 0.5,
        "group": "main",
        "range": "(0,1]",
    }
    assert para(doc).to_dict() == doc


@pytest.mark.parametrize(
    ("dtype", "cls"),
    [
        ("int", IntParameter),
        ("float", FloatParameter),
        ("bool", BoolParameter),
        ("string", StringParameter),
        ("file", FileParameter),
        ("actor", ActorParameter),
    ],
)
def test_dtype_selects_the_parameter_class(dtype: str, cls: type[Any]) -> None:
    assert type(para({"name": "x", "dtype": dtype})) is cls


@pytest.mark.parametrize(
    ("value", "expected"),
    [(5, 5), ("7", 7), (" 8 ", 8), (3.0, 3), ("-2", -2)],
)
def test_int_converts(value: Any, expected: int) -> None:
    assert para({"name": "n", "dtype": "int"}).cast(value) == expected


@pytest.mark.parametrize("value", ["abc", 3.5, "3.5", True, None, [1], {}])
def test_int_refuses_non_integers(value: Any) -> None:
    with pytest.raises(InvalidArgumentError, match="parameter 'n'"):
        para({"name": "n", "dtype": "int"}).cast(value)


@pytest.mark.parametrize(
    ("value", "expected"), [(1, 1.0), ("2.5", 2.5), (0.25, 0.25), ("1e3", 1000.0)]
)
def test_float_converts(value: Any, expected: float) -> None:
    result = para({"name": "x", "dtype": "float"}).cast(value)
    assert result == expected
    assert isinstance(result, float)


@pytest.mark.parametrize("value", ["nan", "x", False, None, [1.0]])
def test_float_refuses_non_numbers(value: Any) -> None:
    with pytest.raises(InvalidArgumentError, match=r"parameter 'x'.*not a number"):
        para({"name": "x", "dtype": "float"}).cast(value)


@pytest.mark.parametrize(
    ("spec", "inside", "outside"),
    [
        ("[0,10]", [0, 10, 5], [-1, 10.5]),
        ("(0,10]", [0.001, 10], [0, 11]),
        ("[0,10)", [0, 9.99], [10]),
        ("[0,)", [0, 1e300], [-0.1, math.inf]),
        ("(,5]", [-1e300, 5], [5.1, -math.inf]),
        ("[,]", [-math.inf, 0, math.inf], []),
        ("[ -1 , 1 ]", [-1, 1], [-2, 2]),
    ],
)
def test_range_bounds(spec: str, inside: list[float], outside: list[float]) -> None:
    p = para({"name": "x", "dtype": "float", "range": spec})
    for value in inside:
        assert p.cast(value) == value
    for value in outside:
        with pytest.raises(InvalidArgumentError, match=r"not in range"):
            p.cast(value)


def test_int_range_names_value_and_range() -> None:
    p = para({"name": "k", "dtype": "int", "range": "[1,3]"})
    with pytest.raises(
        InvalidArgumentError, match=r"invalid value 4 for parameter 'k': not in range \[1,3\]"
    ):
        p.cast(4)


def test_range_is_kept_as_declared() -> None:
    assert para({"name": "k", "dtype": "int", "range": " [0,) "}).to_dict()["range"] == "[0,)"
    assert str(NumberRange.parse("(1,2)")) == "(1,2)"


@pytest.mark.parametrize(
    "spec", ["0,10", "[0,10", "[0;10]", "[a,b]", "[10,0]", "[0,1,2]", 5, "[nan,1]", "[]"]
)
def test_invalid_range_is_refused(spec: Any) -> None:
    with pytest.raises(InvalidParameterError, match="parameter 'x'"):
        para({"name": "x", "dtype": "float", "range": spec})


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (True, True),
        (False, False),
        (None, False),
        (1, True),
        (0, False),
        ("1", True),
        ("t", True),
        ("TRUE", True),
        ("Yes", True),
        ("0", False),
        ("F", False),
        ("false", False),
        ("NO", False),
        ("", False),
    ],
)
def test_bool_converts(value: Any, expected: bool) -> None:
    assert para({"name": "b", "dtype": "bool"}).cast(value) is expected


@pytest.mark.parametrize("value", ["maybe", 2, 1.0, [True], {"a": 1}])
def test_bool_refuses_other_values(value: Any) -> None:
    with pytest.raises(InvalidArgumentError, match=r"parameter 'b': not a Boolean value"):
        para({"name": "b", "dtype": "bool"}).cast(value)


@pytest.mark.parametrize(
    ("value", "expected"), [("x", "x"), (3, "3"), (1.5, "1.5"), (True, "True")]
)
def test_string_converts_scalars(value: Any, expected: str) -> None:
    assert para({"name": "s", "dtype": "string"}).cast(value) == expected


@pytest.mark.parametrize("value", [None, [1], {"a": 1}])
def test_string_refuses_none_and_containers(value: Any) -> None:
    with pytest.raises(InvalidArgumentError, match="parameter 's'"):
        para({"name": "s", "dtype": "string"}).cast(value)


SELECT = {
    "name": "mode",
    "dtype": "select",
    "values": [
        {"name": "Fast", "value": "fast", "isDefault": True},
        {"name": "One", "value": 1},
    ],
}


def test_select_accepts_option_values_only() -> None:
    p = para(SELECT)
    assert isinstance(p, SelectParameter)
    assert p.cast("fast") == "fast"
    assert p.cast(1) == 1
    for value in ("Fast", "1", True, None):
        with pytest.raises(InvalidArgumentError, match="parameter 'mode': not one of the options"):
            p.cast(value)


def test_select_to_dict_keeps_options() -> None:
    assert para(SELECT).to_dict() == {**SELECT, "index": 0, "isRequired": True}


@pytest.mark.parametrize(
    "values",
    [
        None,
        [],
        "fast",
        [{"value": 1}],
        [{"name": "a"}],
        [{"name": "a", "value": 1, "color": "red"}],
        [{"name": "a", "value": [1]}],
        [{"name": 1, "value": 1}],
        [{"name": "a", "value": 1, "isDefault": "yes"}],
        [{"name": "a", "value": 1}, {"name": "b", "value": 1}],
    ],
)
def test_malformed_select_options_are_refused(values: Any) -> None:
    doc: dict[str, Any] = {"name": "mode", "dtype": "select"}
    if values is not None:
        doc["values"] = values
    with pytest.raises(InvalidParameterError, match="parameter 'mode'"):
        para(doc)


def test_select_default_must_be_an_option() -> None:
    with pytest.raises(
        InvalidParameterError, match=r"parameter 'mode': invalid defaultValue 'slow'"
    ):
        para({**SELECT, "defaultValue": "slow"})


def file_arg(file_id: str = "f1", **ref: Any) -> dict[str, Any]:
    return {"type": "$file", "value": {"fileId": file_id, **ref}}


def test_file_target_precedence() -> None:
    with_target = para(
        {"name": "f", "dtype": "file", "target": "data/in.txt", "defaultValue": "d.txt"}
    )
    with_default = para({"name": "f", "dtype": "file", "defaultValue": "data/default.txt"})
    assert with_target.cast(file_arg(targetPath="mine/x.csv")) == InputFile("f1", "mine/x.csv")
    assert with_target.cast(file_arg()) == InputFile("f1", "data/in.txt")
    assert with_default.cast(file_arg()) == InputFile("f1", "data/default.txt")
    assert str(with_target.cast(file_arg())) == "data/in.txt"


def test_file_without_any_target_is_refused() -> None:
    with pytest.raises(InvalidArgumentError, match=r"parameter 'f': no target path"):
        para({"name": "f", "dtype": "file"}).cast(file_arg())


@pytest.mark.parametrize(
    "target", ["../x", "/etc/passwd", "a/../../b", "a\x00b", "C:\\x", "a\\..\\b", "", "."]
)
def test_file_argument_target_must_stay_in_run_folder(target: str) -> None:
    p = para({"name": "f", "dtype": "file", "target": "data/in.txt"})
    with pytest.raises(InvalidArgumentError, match="parameter 'f'"):
        p.cast(file_arg(targetPath=target))


@pytest.mark.parametrize("target", ["../x", "/abs/x", "a/\x01"])
def test_file_declared_target_must_stay_in_run_folder(target: str) -> None:
    with pytest.raises(InvalidParameterError, match="parameter 'f'"):
        para({"name": "f", "dtype": "file", "target": target})


def test_file_declared_default_must_be_a_relative_path() -> None:
    with pytest.raises(InvalidParameterError, match=r"parameter 'f': invalid defaultValue '/x'"):
        para({"name": "f", "dtype": "file", "defaultValue": "/x"})


@pytest.mark.parametrize(
    "value",
    [
        "f1",
        {"fileId": "f1"},
        {"type": "file", "value": {"fileId": "f1"}},
        {"type": "$file", "value": "f1"},
        {"type": "$file", "value": {"fileId": ""}},
        {"type": "$file", "value": {"fileId": 7}},
        {"type": "$file", "value": {"targetPath": "x"}},
        {"type": "$file", "value": {"fileId": "f1", "other": 1}},
        {"type": "$file", "value": {"fileId": "f1"}, "extra": 1},
    ],
)
def test_malformed_file_argument_is_refused(value: Any) -> None:
    with pytest.raises(InvalidArgumentError, match="parameter 'f'"):
        para({"name": "f", "dtype": "file", "target": "x.txt"}).cast(value)


def test_list_converts_each_element() -> None:
    p = para({"name": "xs", "dtype": "list", "para": {"name": "x", "dtype": "int"}})
    assert isinstance(p, ListParameter)
    assert p.cast(["1", 2]) == [1, 2]
    assert p.cast([]) == []
    assert p.to_dict()["para"] == {"name": "x", "dtype": "int", "index": 0, "isRequired": True}


def test_list_errors_name_list_element_and_value() -> None:
    p = para({"name": "xs", "dtype": "list", "para": {"name": "x", "dtype": "int"}})
    with pytest.raises(
        InvalidArgumentError, match=r"list parameter 'xs', element 1: invalid value 'b'"
    ):
        p.cast([1, "b"])
    with pytest.raises(
        InvalidArgumentError, match=r"invalid value '1,2' for parameter 'xs': not a list"
    ):
        p.cast("1,2")


def test_list_needs_an_element_declaration() -> None:
    with pytest.raises(InvalidParameterError, match=r"parameter 'xs': missing 'para'"):
        para({"name": "xs", "dtype": "list"})
    with pytest.raises(InvalidParameterError, match="unknown dtype 'complex'"):
        para({"name": "xs", "dtype": "list", "para": {"name": "x", "dtype": "complex"}})


RECORD = {
    "name": "point",
    "dtype": "record",
    "fields": [
        {"name": "x", "dtype": "float"},
        {"name": "y", "dtype": "float", "defaultValue": 0},
        {"name": "tag", "dtype": "string", "isRequired": False},
    ],
}


def test_record_converts_fields_and_fills_defaults() -> None:
    p = para(RECORD)
    assert isinstance(p, RecordParameter)
    assert p.cast([{"name": "x", "value": "1.5"}]) == {"x": 1.5, "y": 0.0}
    assert p.cast([{"name": "x", "value": 1}, {"name": "tag", "value": "a"}]) == {
        "x": 1.0,
        "y": 0.0,
        "tag": "a",
    }
    assert [f["index"] for f in p.to_dict()["fields"]] == [0, 1, 2]


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ({"x": 1}, "expected a list"),
        ([{"name": "z", "value": 1}], "unknown field 'z'"),
        ([{"name": "y", "value": 1}], "missing field 'x'"),
        ([{"name": "x", "value": 1}, {"name": "x", "value": 2}], "duplicate field 'x'"),
        ([{"name": "x"}], "malformed field"),
        (["x"], "malformed field"),
    ],
)
def test_record_refuses_bad_fields(value: Any, message: str) -> None:
    with pytest.raises(InvalidArgumentError, match=rf"parameter 'point'.*{message}"):
        para(RECORD).cast(value)


def test_record_field_error_names_record_and_field() -> None:
    with pytest.raises(
        InvalidArgumentError, match=r"record parameter 'point', field 'x': invalid value 'a'"
    ):
        para(RECORD).cast([{"name": "x", "value": "a"}])


def test_record_declaration_errors() -> None:
    with pytest.raises(InvalidParameterError, match="duplicate field 'x'"):
        para({"name": "r", "dtype": "record", "fields": [{"name": "x", "dtype": "int"}] * 2})
    with pytest.raises(InvalidParameterError, match="fields must be a non-empty list"):
        para({"name": "r", "dtype": "record", "fields": []})


def test_actor_value_is_a_step_dict() -> None:
    p = para({"name": "step", "dtype": "actor"})
    spec = {"environment": "python:3.11", "commands": ["echo"]}
    assert p.cast(spec) is spec
    with pytest.raises(InvalidArgumentError, match=r"parameter 'step': not a workflow step"):
        p.cast("echo")


@pytest.mark.parametrize(
    ("doc", "message"),
    [
        ("x", "must be a mapping"),
        ({"dtype": "int"}, "without a valid name"),
        ({"name": " ", "dtype": "int"}, "without a valid name"),
        ({"name": "a"}, "parameter 'a': unknown dtype None"),
        ({"name": "a", "dtype": "decimal"}, "parameter 'a': unknown dtype 'decimal'"),
        ({"name": "a", "dtype": "int", "color": 1}, r"parameter 'a': unknown key\(s\) \['color'\]"),
        ({"name": "a", "dtype": "int", "target": "x"}, r"unknown key\(s\) \['target'\]"),
        ({"name": "a", "dtype": "bool", "range": "[0,1]"}, r"unknown key\(s\) \['range'\]"),
        ({"name": "a", "dtype": "int", "index": "1"}, "index '1' is not an integer"),
        ({"name": "a", "dtype": "int", "index": True}, "index True is not an integer"),
        ({"name": "a", "dtype": "int", "isRequired": "yes"}, "isRequired 'yes' is not a bool"),
        ({"name": "a", "dtype": "int", "label": 1}, "label 1 is not a string"),
        ({"name": "a", "dtype": "int", "defaultValue": "x"}, "invalid defaultValue 'x'"),
        (
            {"name": "a", "dtype": "int", "range": "[0,1]", "defaultValue": 2},
            "invalid defaultValue 2",
        ),
    ],
)
def test_malformed_declaration_is_refused(doc: Any, message: str) -> None:
    with pytest.raises(InvalidParameterError, match=message):
        para(doc)


def test_default_argument_is_the_converted_default() -> None:
    assert para({"name": "x", "dtype": "float", "defaultValue": 1}).default_argument() == 1.0
    assert para({"name": "x", "dtype": "int"}).default_argument() is None
    assert (
        para({"name": "f", "dtype": "file", "defaultValue": "./a//b.txt"}).default_argument()
        == "a/b.txt"
    )


def test_index_orders_by_index_then_name() -> None:
    index = ParameterIndex.from_list(
        [
            {"name": "c", "dtype": "int", "index": 1},
            {"name": "b", "dtype": "int", "index": 1},
            {"name": "a", "dtype": "int", "index": 5},
            {"name": "z", "dtype": "int", "index": 0},
        ]
    )
    assert list(index) == ["z", "b", "c", "a"]
    assert [doc["name"] for doc in index.to_list()] == ["z", "b", "c", "a"]
    assert index["b"].name == "b"
    assert "q" not in index
    assert len(index) == 4


def test_index_refuses_duplicate_names() -> None:
    with pytest.raises(InvalidTemplateError, match="duplicate parameter 'a'"):
        ParameterIndex.from_list([{"name": "a", "dtype": "int"}, {"name": "a", "dtype": "string"}])


def test_index_refuses_non_list() -> None:
    with pytest.raises(InvalidTemplateError, match="parameters must be a list"):
        ParameterIndex.from_list({"name": "a", "dtype": "int"})
    assert len(ParameterIndex.from_list(None)) == 0


def test_merge_extends_and_overrides_by_name() -> None:
    base = ParameterIndex.from_list(
        [{"name": "a", "dtype": "int"}, {"name": "b", "dtype": "string", "defaultValue": "x"}]
    )
    merged = base.merge(
        [
            {"name": "b", "dtype": "int", "defaultValue": 2, "index": 1},
            {"name": "c", "dtype": "bool", "index": 2},
        ]
    )
    assert list(merged) == ["a", "b", "c"]
    assert merged["b"].default_argument() == 2
    assert base["b"].default_argument() == "x"
    with pytest.raises(InvalidTemplateError, match="duplicate parameter 'c'"):
        base.merge([{"name": "c", "dtype": "int"}, {"name": "c", "dtype": "int"}])


def test_index_round_trips_through_to_list() -> None:
    index = ParameterIndex.from_list(
        [SELECT, RECORD, {"name": "f", "dtype": "file", "target": "a.txt"}]
    )
    assert ParameterIndex.from_list(index.to_list()) == index
