"""Parsing the serial workflow spec and ordering its steps."""

from __future__ import annotations

from typing import Any

import pytest

from flowserv_async.engine import (
    CodeAction,
    ContainerAction,
    WorkflowSpec,
    dependencies,
    parse_workflow,
)
from flowserv_async.errors import InvalidTemplateError


def container(*commands: str) -> dict[str, Any]:
    return {"environment": "python:3.11", "commands": list(commands)}


def step(
    name: str, inputs: list[str] | None = None, outputs: list[str] | None = None
) -> dict[str, Any]:
    doc: dict[str, Any] = {"name": name, "action": container("true")}
    if inputs is not None or outputs is not None:
        doc["files"] = {"inputs": inputs or [], "outputs": outputs or []}
    return doc


def test_parse_container_code_and_skipped_steps() -> None:
    spec = parse_workflow(
        {
            "files": {"inputs": ["code/"], "outputs": ["./results/out.json"]},
            "parameters": {"n": 3, "name": "x"},
            "steps": [
                {
                    "name": "prep",
                    "files": {"inputs": ["data/in.csv"], "outputs": ["data/clean.csv"]},
                    "action": container("${python} prep.py ${n}"),
                    "timeout": 2.5,
                },
                {
                    "name": "score",
                    "action": {
                        "func": "pkg.mod.score",
                        "arg": "score",
                        "variables": [{"arg": "count", "var": "n"}],
                    },
                },
                {"name": "actor", "action": None},
            ],
        }
    )
    assert spec.parameters == {"n": 3, "name": "x"}
    assert spec.inputs == ("code",)
    assert spec.outputs == ("results/out.json",)
    prep, score, actor = spec.steps
    assert prep.action == ContainerAction(("${python} prep.py ${n}",), "python:3.11")
    assert (prep.inputs, prep.outputs, prep.declares_files) == (
        ("data/in.csv",),
        ("data/clean.csv",),
        True,
    )
    assert prep.timeout == 2.5
    assert score.action == CodeAction("pkg.mod.score", "score", {"count": "n"})
    assert not score.declares_files
    assert score.timeout is None
    assert actor.skipped


@pytest.mark.parametrize(
    ("doc", "fragment"),
    [
        ({}, "'steps' must be a non-empty list"),
        ({"steps": []}, "'steps' must be a non-empty list"),
        ({"steps": [step("a"), step("a")]}, "duplicate step name 'a'"),
        ({"steps": [{"action": container("true")}]}, "step 0 needs a non-empty string 'name'"),
        ({"steps": [{"name": "a"}]}, "step 'a' has no 'action'"),
        ({"steps": [{"name": "a", "action": {"image": "x"}}]}, "step 'a': unknown action"),
        ({"steps": [{"name": "a", "action": "$[[code]]"}]}, "step 'a': action reference"),
        (
            {"steps": [{"name": "a", "action": {"notebook": "nb.ipynb", "kernel": "x"}}]},
            "step 'a' action: unknown key(s) ['kernel']",
        ),
        (
            {"steps": [{"name": "a", "action": {"notebook": "../nb.ipynb"}}]},
            "step 'a' notebook: path",
        ),
        (
            {"steps": [{"name": "a", "action": {"notebook": "n.ipynb", "params": "x"}}]},
            "step 'a': 'params'",
        ),
        ({"steps": [{"name": "a", "action": {"commands": "ls"}}]}, "step 'a': 'commands'"),
        ({"steps": [{"name": "a", "action": {"func": "nodots"}}]}, "step 'a': 'func'"),
        (
            {"steps": [{"name": "a", "action": {"func": "m.f", "variables": [{"arg": "x"}]}}]},
            "step 'a': malformed variable mapping",
        ),
        ({"steps": [{**step("a"), "timeout": 0}]}, "step 'a': 'timeout'"),
        ({"steps": [{**step("a"), "timeout": -1}]}, "step 'a': 'timeout'"),
        ({"steps": [{**step("a"), "timeout": "5"}]}, "step 'a': 'timeout'"),
        ({"steps": [{**step("a"), "timeout": True}]}, "step 'a': 'timeout'"),
        ({"steps": [{**step("a"), "retries": 3}]}, "step 'a': unknown key(s) ['retries']"),
        ({"steps": [step("a", outputs=["../x"])]}, "step 'a' files.outputs: path '../x'"),
        ({"steps": [step("a", inputs=["/etc/passwd"])]}, "step 'a' files.inputs: path"),
        ({"parameters": ["x"], "steps": [step("a")]}, "'parameters'"),
    ],
)
def test_malformed_spec_is_refused_naming_step_and_key(doc: dict[str, Any], fragment: str) -> None:
    with pytest.raises(InvalidTemplateError) as info:
        parse_workflow(doc)
    assert fragment in info.value.message


def deps_of(*steps: dict[str, Any]) -> dict[str, set[str]]:
    spec: WorkflowSpec = parse_workflow({"steps": list(steps)})
    return {name: set(found) for name, found in dependencies(spec).items()}


def test_steps_without_files_run_one_after_another() -> None:
    assert deps_of(step("a"), step("b"), step("c")) == {
        "a": set(),
        "b": {"a"},
        "c": {"a", "b"},
    }


def test_step_reading_an_output_depends_on_its_writer_only() -> None:
    deps = deps_of(
        step("a", outputs=["a.txt"]),
        step("b", outputs=["out/b"]),
        step("c", inputs=["a.txt", "out/b/part.csv"], outputs=["c.txt"]),
        step("d", inputs=["a.txt"], outputs=["d.txt"]),
    )
    assert deps == {"a": set(), "b": set(), "c": {"a", "b"}, "d": {"a"}}


def test_step_without_files_is_a_barrier_for_steps_with_files() -> None:
    deps = deps_of(
        step("a", outputs=["a.txt"]),
        step("b"),
        step("c", outputs=["c.txt"]),
    )
    # c waits for a through b.
    assert deps == {"a": set(), "b": {"a"}, "c": {"b"}}


def test_later_writer_waits_for_earlier_reader_and_writer() -> None:
    deps = deps_of(
        step("read", inputs=["data"], outputs=["r.txt"]),
        step("write", outputs=["data/x.csv"]),
        step("rewrite", outputs=["r.txt"]),
    )
    assert deps == {"read": set(), "write": {"read"}, "rewrite": {"read"}}


def test_skipped_steps_are_not_waited_for() -> None:
    deps = deps_of(step("a"), {"name": "actor", "action": None}, step("b"))
    assert deps == {"a": set(), "b": {"a"}}
