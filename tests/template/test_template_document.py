"""The template document: validation, result schema, outputs, post-processing."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from flowserv_async.errors import (
    ConstraintViolationError,
    FlowservError,
    InvalidParameterError,
    InvalidTemplateError,
    UnknownParameterError,
)
from flowserv_async.template import ResultSchema, SortColumn, WorkflowTemplate

TEMPLATE: dict[str, Any] = {
    "workflow": {
        "parameters": {"inputfile": "$[[names]]", "n": "$[[n]]"},
        "steps": [
            {"name": "main", "action": {"environment": "python:3.11", "commands": ["echo"]}},
            {"name": "extra", "action": "$[[step]]"},
        ],
    },
    "parameters": [
        {"name": "names", "dtype": "file", "target": "data/names.txt", "group": "main"},
        {"name": "n", "dtype": "int", "defaultValue": 1, "group": "main"},
        {"name": "step", "dtype": "actor", "isRequired": False},
    ],
    "parameterGroups": [{"name": "main", "title": "Main", "index": 0}],
    "outputs": [{"source": "results/a.json", "title": "A", "format": {"type": "json"}}],
    "results": {
        "file": "results/a.json",
        "schema": [
            {"name": "score", "label": "Score", "dtype": "float"},
            {"name": "count", "label": "Count", "dtype": "int", "path": "stats/count"},
            {"name": "note", "label": "Note", "dtype": "string", "required": False},
        ],
        "orderBy": [{"name": "count", "sortDesc": False}],
    },
    "postproc": {
        "workflow": {"steps": []},
        "inputs": {"files": ["results/a.json"], "runs": "runs/"},
        "outputs": [{"source": "results/plot.png", "caption": "Plot"}],
    },
}


def template_with(**changes: Any) -> dict[str, Any]:
    doc = copy.deepcopy(TEMPLATE)
    for key, value in changes.items():
        if value is None:
            doc.pop(key)
        else:
            doc[key] = value
    return doc


def test_full_template_is_normalised() -> None:
    template = WorkflowTemplate.from_dict(TEMPLATE)
    doc = template.to_dict()
    assert doc["parameters"] == [
        {
            "name": "names",
            "dtype": "file",
            "index": 0,
            "isRequired": True,
            "group": "main",
            "target": "data/names.txt",
        },
        {
            "name": "n",
            "dtype": "int",
            "index": 1,
            "isRequired": False,
            "defaultValue": 1,
            "group": "main",
        },
        {"name": "step", "dtype": "actor", "index": 2, "isRequired": False},
    ]
    assert doc["parameterGroups"] == [{"name": "main", "title": "Main", "index": 0}]
    assert doc["outputs"] == [
        {
            "source": "results/a.json",
            "key": "results/a.json",
            "title": "A",
            "format": {"type": "json"},
        }
    ]
    assert doc["postproc"]["inputs"] == {"files": ["results/a.json"], "runs": "runs"}
    assert doc["postproc"]["outputs"] == [
        {"source": "results/plot.png", "key": "results/plot.png", "caption": "Plot"}
    ]
    assert doc["workflow"] == TEMPLATE["workflow"]


def test_round_trip_gives_an_equal_template() -> None:
    template = WorkflowTemplate.from_dict(TEMPLATE)
    assert WorkflowTemplate.from_dict(template.to_dict()) == template


def test_to_dict_is_a_copy() -> None:
    template = WorkflowTemplate.from_dict(TEMPLATE)
    template.to_dict()["workflow"]["steps"].clear()
    assert len(template.workflow["steps"]) == 2


def test_minimal_template() -> None:
    template = WorkflowTemplate.from_dict({"workflow": {"steps": []}})
    assert template.to_dict() == {"workflow": {"steps": []}, "parameters": []}
    assert template.result_schema is None
    assert template.postproc is None
    assert template.outputs is None


def test_postproc_defaults() -> None:
    template = WorkflowTemplate.from_dict(template_with(postproc={"workflow": {"steps": []}}))
    assert template.postproc is not None
    assert (template.postproc.files, template.postproc.runs, template.postproc.outputs) == (
        (),
        "runs",
        None,
    )


def test_merge_parameters_checks_groups() -> None:
    template = WorkflowTemplate.from_dict(TEMPLATE)
    merged = template.merge_parameters(
        [{"name": "extra", "dtype": "string", "group": "main", "index": 7}]
    )
    assert list(merged) == ["names", "n", "step", "extra"]
    with pytest.raises(InvalidTemplateError, match="group 'side' is no parameterGroup"):
        template.merge_parameters([{"name": "x", "dtype": "int", "group": "side"}])


MALFORMED_TEMPLATES: list[tuple[str, dict[str, Any] | Any, type[FlowservError], str]] = [
    ("not a mapping", ["workflow"], InvalidTemplateError, "template must be a mapping"),
    (
        "unknown top-level key",
        template_with(extra=1),
        InvalidTemplateError,
        r"unknown key\(s\) \['extra'\]",
    ),
    (
        "unknown keys of mixed types (YAML: null, 0)",
        {None: 1, 0: 1, "workflow": {}},
        InvalidTemplateError,
        r"unknown key\(s\) \[0, None\]",
    ),
    (
        "no workflow",
        template_with(workflow=None),
        InvalidTemplateError,
        "workflow must be a mapping, got None",
    ),
    (
        "workflow not a mapping",
        template_with(workflow=["a"]),
        InvalidTemplateError,
        "workflow must be a mapping",
    ),
    (
        "reference to undeclared parameter",
        template_with(workflow={"parameters": {"x": "$[[nope]]"}}),
        UnknownParameterError,
        "unknown parameter 'nope'",
    ),
    (
        "actor reference to undeclared parameter",
        template_with(workflow={"steps": [{"name": "s", "action": "$[[other]]"}]}),
        UnknownParameterError,
        "'other'",
    ),
    (
        "parameters not a list",
        template_with(parameters={"name": "a"}),
        InvalidTemplateError,
        "parameters must be a list",
    ),
    (
        "duplicate parameter",
        template_with(parameters=[*TEMPLATE["parameters"], {"name": "n", "dtype": "int"}]),
        InvalidTemplateError,
        "duplicate parameter 'n'",
    ),
    (
        "unknown parameter key",
        template_with(parameters=[{"name": "a", "dtype": "int", "min": 0}]),
        InvalidParameterError,
        r"parameter 'a': unknown key\(s\) \['min'\]",
    ),
    (
        "bad parameter dtype",
        template_with(parameters=[{"name": "a", "dtype": "complex"}]),
        InvalidParameterError,
        "unknown dtype 'complex'",
    ),
    (
        "parameter in unknown group",
        template_with(parameters=[{"name": "a", "dtype": "int", "group": "side"}]),
        InvalidTemplateError,
        "parameter 'a': group 'side' is no parameterGroup",
    ),
    (
        "groups not a list",
        template_with(parameterGroups={"name": "main"}),
        InvalidTemplateError,
        "parameterGroups must be a list",
    ),
    (
        "group without title",
        template_with(parameterGroups=[{"name": "main", "index": 0}]),
        InvalidTemplateError,
        r"missing key\(s\) \['title'\]",
    ),
    (
        "group with unknown key",
        template_with(parameterGroups=[{"name": "main", "title": "M", "color": "red"}]),
        InvalidTemplateError,
        r"unknown key\(s\) \['color'\]",
    ),
    (
        "group index not int",
        template_with(parameterGroups=[{"name": "main", "title": "M", "index": "0"}]),
        InvalidTemplateError,
        "parameter group .* malformed",
    ),
    (
        "duplicate group",
        template_with(
            parameterGroups=[{"name": "main", "title": "A"}, {"name": "main", "title": "B"}]
        ),
        InvalidTemplateError,
        "duplicate group 'main'",
    ),
    (
        "outputs not a list",
        template_with(outputs={"source": "a"}),
        InvalidTemplateError,
        "outputs must be a list",
    ),
    (
        "output without source",
        template_with(outputs=[{"title": "A"}]),
        InvalidTemplateError,
        r"missing key\(s\) \['source'\]",
    ),
    (
        "output source escapes",
        template_with(outputs=[{"source": "../a"}]),
        InvalidTemplateError,
        "leaves its folder",
    ),
    (
        "output source absolute",
        template_with(outputs=[{"source": "/a"}]),
        InvalidTemplateError,
        "is absolute",
    ),
    (
        "output unknown key",
        template_with(outputs=[{"source": "a", "size": 1}]),
        InvalidTemplateError,
        r"unknown key\(s\) \['size'\]",
    ),
    (
        "output title not text",
        template_with(outputs=[{"source": "a", "title": 5}]),
        InvalidTemplateError,
        "malformed",
    ),
    (
        "output duplicate key",
        template_with(outputs=[{"source": "a", "key": "k"}, {"source": "b", "key": "k"}]),
        InvalidTemplateError,
        "duplicate key 'k'",
    ),
    (
        "results not a mapping",
        template_with(results=["a"]),
        InvalidTemplateError,
        "results must be a mapping",
    ),
    (
        "results without file",
        template_with(results={"schema": []}),
        InvalidTemplateError,
        r"missing key\(s\) \['file'\]",
    ),
    (
        "results file escapes",
        template_with(
            results={"file": "../r.json", "schema": [{"name": "a", "label": "A", "dtype": "int"}]}
        ),
        InvalidTemplateError,
        "results: invalid file",
    ),
    (
        "results empty schema",
        template_with(results={"file": "r.json", "schema": []}),
        InvalidTemplateError,
        "non-empty list",
    ),
    (
        "results unknown key",
        template_with(results={"file": "r.json", "schema": [], "sort": []}),
        InvalidTemplateError,
        r"unknown key\(s\) \['sort'\]",
    ),
    (
        "column bad dtype",
        template_with(
            results={"file": "r.json", "schema": [{"name": "a", "label": "A", "dtype": "decimal"}]}
        ),
        InvalidTemplateError,
        "column 'a': dtype 'decimal' is not one of",
    ),
    (
        "column without label",
        template_with(results={"file": "r.json", "schema": [{"name": "a", "dtype": "int"}]}),
        InvalidTemplateError,
        r"missing key\(s\) \['label'\]",
    ),
    (
        "column required not bool",
        template_with(
            results={
                "file": "r.json",
                "schema": [{"name": "a", "label": "A", "dtype": "int", "required": "no"}],
            }
        ),
        InvalidTemplateError,
        "required 'no' is no bool",
    ),
    (
        "column empty path part",
        template_with(
            results={
                "file": "r.json",
                "schema": [{"name": "a", "label": "A", "dtype": "int", "path": "x//y"}],
            }
        ),
        InvalidTemplateError,
        "invalid path 'x//y'",
    ),
    (
        "duplicate column",
        template_with(
            results={
                "file": "r.json",
                "schema": [
                    {"name": "a", "label": "A", "dtype": "int"},
                    {"name": "a", "label": "B", "dtype": "int"},
                ],
            }
        ),
        InvalidTemplateError,
        "duplicate column 'a'",
    ),
    (
        "orderBy unknown column",
        template_with(
            results={
                "file": "r.json",
                "schema": [{"name": "a", "label": "A", "dtype": "int"}],
                "orderBy": [{"name": "b"}],
            }
        ),
        InvalidTemplateError,
        "orderBy names unknown column 'b'",
    ),
    (
        "orderBy sortDesc not bool",
        template_with(
            results={
                "file": "r.json",
                "schema": [{"name": "a", "label": "A", "dtype": "int"}],
                "orderBy": [{"name": "a", "sortDesc": "yes"}],
            }
        ),
        InvalidTemplateError,
        "orderBy entry .* malformed",
    ),
    (
        "postproc without workflow",
        template_with(postproc={"inputs": {"files": []}}),
        InvalidTemplateError,
        r"missing key\(s\) \['workflow'\]",
    ),
    (
        "postproc unknown key",
        template_with(postproc={"workflow": {}, "parameters": []}),
        InvalidTemplateError,
        r"unknown key\(s\) \['parameters'\]",
    ),
    (
        "postproc inputs without files",
        template_with(postproc={"workflow": {}, "inputs": {"runs": "runs"}}),
        InvalidTemplateError,
        r"missing key\(s\) \['files'\]",
    ),
    (
        "postproc input file escapes",
        template_with(postproc={"workflow": {}, "inputs": {"files": ["../x"]}}),
        InvalidTemplateError,
        "postproc input file",
    ),
    (
        "postproc runs folder absolute",
        template_with(postproc={"workflow": {}, "inputs": {"files": [], "runs": "/tmp/runs"}}),
        InvalidTemplateError,
        "postproc runs folder",
    ),
    (
        "postproc workflow not a mapping",
        template_with(postproc={"workflow": "run.sh"}),
        InvalidTemplateError,
        "workflow must be a mapping",
    ),
]


@pytest.mark.parametrize(
    ("doc", "error", "message"),
    [
        pytest.param(doc, error, message, id=case)
        for case, doc, error, message in MALFORMED_TEMPLATES
    ],
)
def test_malformed_template_is_refused(doc: Any, error: type[FlowservError], message: str) -> None:
    with pytest.raises(error, match=message):
        WorkflowTemplate.from_dict(doc)


SCHEMA = ResultSchema.from_dict(TEMPLATE["results"])


def test_result_schema_extracts_typed_values_by_path() -> None:
    row = SCHEMA.extract({"score": "0.5", "stats": {"count": 3}, "note": 7, "other": 1})
    assert row == {"score": 0.5, "count": 3, "note": "7"}
    assert SCHEMA.extract({"score": 1, "stats": {"count": "4"}}) == {
        "score": 1.0,
        "count": 4,
        "note": None,
    }


@pytest.mark.parametrize(
    ("doc", "message"),
    [
        ({"stats": {"count": 3}}, r"missing value for column 'score' \(path score\)"),
        ({"score": 1, "stats": {}}, r"missing value for column 'count' \(path stats/count\)"),
        ({"score": 1, "stats": 5}, "column 'count'"),
        ({"score": 1, "count": 3}, "column 'count'"),
        ({"score": None, "stats": {"count": 3}}, "column 'score'"),
        (
            {"score": "high", "stats": {"count": 3}},
            r"value 'high' of column 'score' is not a number \(float\)",
        ),
        ({"score": 1, "stats": {"count": 2.5}}, r"value 2.5 of column 'count' is not an integer"),
        ({"score": 1, "stats": {"count": 2}, "note": ["x"]}, "column 'note'"),
        ([1, 2], "column 'score'"),
    ],
)
def test_result_schema_errors_name_the_column(doc: Any, message: str) -> None:
    with pytest.raises(ConstraintViolationError, match=message):
        SCHEMA.extract(doc)


def test_result_schema_order_and_columns() -> None:
    assert SCHEMA.default_order() == [SortColumn("count", False)]
    unordered = ResultSchema.from_dict({"file": "r.json", "schema": TEMPLATE["results"]["schema"]})
    assert unordered.default_order() == [SortColumn("score", True)]
    assert SCHEMA.column("count").json_path() == ["stats", "count"]
    assert SCHEMA.column("score").cast("2") == 2.0
    with pytest.raises(KeyError):
        SCHEMA.column("nope")
    assert unordered.to_dict() == {
        "file": "r.json",
        "schema": [
            {"name": "score", "label": "Score", "dtype": "float", "required": True},
            {
                "name": "count",
                "label": "Count",
                "dtype": "int",
                "required": True,
                "path": "stats/count",
            },
            {"name": "note", "label": "Note", "dtype": "string", "required": False},
        ],
    }
