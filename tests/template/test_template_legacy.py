"""Pre-0.9 (ROB) templates load, converted to the current format."""

from __future__ import annotations

from pathlib import Path

import pytest

from flowserv_async.errors import InvalidParameterError, InvalidTemplateError
from flowserv_async.template import (
    WorkflowTemplate,
    convert_legacy_template,
    convert_legacy_workflow,
    load_template,
)

# The hello-world benchmark in the ROB format (rob-demo-hello-world, 2019-2020).
ROB_TEMPLATE = """
workflow:
    version: 0.3.0
    inputs:
      files:
        - code/helloworld.py
        - $[[names]]
      parameters:
        inputfile: $[[names]]
        outputfile: results/greetings.txt
        sleeptime: $[[sleeptime]]
        greeting: $[[greeting]]
    workflow:
      type: serial
      specification:
        steps:
          - environment: 'python:3.7'
            commands:
              - python code/helloworld.py --inputfile "${inputfile}"
              - python code/analyze.py --inputfile "${outputfile}"
          - name: plot
            environment: 'python:3.7'
            commands:
              - python code/plot.py
    outputs:
      files:
       - results/greetings.txt
       - results/analytics.json
parameters:
    - id: names
      name: 'Names File'
      description: 'One name per line'
      datatype: file
      as: data/names.txt
    - id: sleeptime
      name: 'Sleep for (sec.)'
      datatype: decimal
      defaultValue: 10
      module: main
    - id: greeting
      name: 'Greeting'
      datatype: text
      defaultValue: 'Hello'
      required: false
modules:
    - id: main
      name: 'Main step'
      index: 0
results:
    file: 'results/analytics.json'
    schema:
        - id: ngrams
          name: 'Number of 3-grams'
          type: int
          required: False
        - id: score
          name: 'Score'
          type: decimal
    orderBy:
        - id: score
          sortDesc: true
postproc:
    workflow:
        inputs:
          files: [code/postproc.py]
          parameters:
            rundir: runs
        workflow:
          type: serial
          specification:
            steps:
              - environment: 'python:3.7'
                commands:
                  - python code/postproc.py --runs "${rundir}"
        outputs:
            files:
                - 'results/ngrams.png'
    inputs:
        files:
            - 'results/greetings.txt'
        runs: 'runs/'
    outputs:
        - id: 'results/ngrams.png'
          title: 'Top-5 3-grams'
"""


def test_rob_template_loads_in_current_form(tmp_path: Path) -> None:
    spec = tmp_path / "benchmark.yaml"
    spec.write_text(ROB_TEMPLATE, encoding="utf-8")
    doc = load_template(spec).to_dict()
    assert doc["parameters"] == [
        {
            "name": "names",
            "dtype": "file",
            "index": 0,
            "isRequired": True,
            "label": "Names File",
            "help": "One name per line",
            "target": "data/names.txt",
        },
        {
            "name": "sleeptime",
            "dtype": "float",
            "index": 1,
            "isRequired": False,
            "label": "Sleep for (sec.)",
            "defaultValue": 10,
            "group": "main",
        },
        {
            "name": "greeting",
            "dtype": "string",
            "index": 2,
            "isRequired": False,
            "label": "Greeting",
            "defaultValue": "Hello",
        },
    ]
    assert doc["parameterGroups"] == [{"name": "main", "title": "Main step", "index": 0}]
    assert doc["workflow"] == {
        "files": {
            "inputs": ["code/helloworld.py", "$[[names]]"],
            "outputs": ["results/greetings.txt", "results/analytics.json"],
        },
        "parameters": {
            "inputfile": "$[[names]]",
            "outputfile": "results/greetings.txt",
            "sleeptime": "$[[sleeptime]]",
            "greeting": "$[[greeting]]",
        },
        "steps": [
            {
                "name": "step1",
                "action": {
                    "environment": "python:3.7",
                    "commands": [
                        'python code/helloworld.py --inputfile "${inputfile}"',
                        'python code/analyze.py --inputfile "${outputfile}"',
                    ],
                },
            },
            {
                "name": "plot",
                "action": {"environment": "python:3.7", "commands": ["python code/plot.py"]},
            },
        ],
    }
    assert doc["results"] == {
        "file": "results/analytics.json",
        "schema": [
            {"name": "ngrams", "label": "Number of 3-grams", "dtype": "int", "required": False},
            {"name": "score", "label": "Score", "dtype": "float", "required": True},
        ],
        "orderBy": [{"name": "score", "sortDesc": True}],
    }
    assert doc["postproc"]["workflow"]["steps"][0]["action"]["commands"] == [
        'python code/postproc.py --runs "${rundir}"'
    ]
    assert doc["postproc"]["workflow"]["files"] == {
        "inputs": ["code/postproc.py"],
        "outputs": ["results/ngrams.png"],
    }
    assert doc["postproc"]["outputs"] == [
        {"source": "results/ngrams.png", "key": "results/ngrams.png", "title": "Top-5 3-grams"}
    ]


def test_converted_template_round_trips(tmp_path: Path) -> None:
    spec = tmp_path / "benchmark.yaml"
    spec.write_text(ROB_TEMPLATE, encoding="utf-8")
    template = load_template(spec)
    assert WorkflowTemplate.from_dict(template.to_dict()) == template


def test_legacy_select_from_values_and_input_target() -> None:
    doc = convert_legacy_template(
        {
            "workflow": {},
            "parameters": [
                {
                    "id": "mode",
                    "datatype": "string",
                    "values": [{"value": "a", "isDefault": True}, {"name": "B", "value": "b"}],
                },
                {"id": "data", "datatype": "file", "as": "$input"},
            ],
        }
    )
    assert doc["parameters"] == [
        {
            "name": "mode",
            "dtype": "select",
            "values": [{"name": "a", "value": "a", "isDefault": True}, {"name": "B", "value": "b"}],
        },
        {"name": "data", "dtype": "file"},
    ]


def test_legacy_parent_nests_record_fields_and_list_elements() -> None:
    template = WorkflowTemplate.from_dict(
        {
            "workflow": {},
            "parameters": [
                {"id": "point", "datatype": "record"},
                {"id": "x", "datatype": "decimal", "parent": "point"},
                {"id": "y", "datatype": "decimal", "parent": "point", "defaultValue": 0},
                {"id": "sizes", "datatype": "list"},
                {"id": "size", "datatype": "int", "parent": "sizes"},
            ],
        }
    )
    assert list(template.parameters) == ["point", "sizes"]
    assert template.parameters["point"].cast([{"name": "x", "value": 1}]) == {"x": 1.0, "y": 0.0}
    assert template.parameters["sizes"].cast(["1", 2]) == [1, 2]


def test_legacy_parent_that_is_no_record_becomes_the_group() -> None:
    doc = convert_legacy_template(
        {"workflow": {}, "parameters": [{"id": "a", "datatype": "int", "parent": "main"}]}
    )
    assert doc["parameters"] == [{"name": "a", "dtype": "int", "group": "main"}]


def test_legacy_parameter_with_bad_dtype_is_refused() -> None:
    with pytest.raises(InvalidParameterError, match="parameter 'a': unknown dtype 'matrix'"):
        WorkflowTemplate.from_dict(
            {"workflow": {}, "parameters": [{"id": "a", "datatype": "matrix"}]}
        )


def test_legacy_as_on_non_file_is_refused() -> None:
    with pytest.raises(InvalidParameterError, match=r"unknown key\(s\) \['target'\]"):
        WorkflowTemplate.from_dict(
            {"workflow": {}, "parameters": [{"id": "a", "datatype": "int", "as": "x"}]}
        )


def test_current_template_passes_unchanged() -> None:
    doc = {
        "workflow": {"steps": [{"name": "s", "action": {"environment": "e", "commands": []}}]},
        "parameters": [{"name": "a", "dtype": "int"}],
        "results": {"file": "r.json", "schema": [{"name": "a", "label": "A", "dtype": "int"}]},
    }
    assert convert_legacy_template(doc) == doc


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ({"workflow": {"specification": {"steps": "run"}}}, "steps must be a list"),
        (
            {"workflow": {"specification": {"steps": [{"commands": ["x"]}]}}},
            "step 0 needs an environment",
        ),
        ({"workflow": {"specification": {"steps": ["x"]}}}, "step 0 needs an environment"),
        (
            {"inputs": [], "workflow": {"specification": {"steps": []}}},
            "inputs and outputs must be mappings",
        ),
    ],
)
def test_malformed_reana_workflow_is_refused(spec: dict[str, object], message: str) -> None:
    with pytest.raises(InvalidTemplateError, match=message):
        convert_legacy_workflow(spec)
