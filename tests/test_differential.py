"""Differential tests: the same templates and inputs on flowserv-core 0.9.4 and here.

The templates in ``tests/differential/templates`` are written in the forms flowserv
accepted (see the README). flowserv-core runs in ``benchmarks/.venv-flowserv`` (built
once and cached); ONE subprocess (``tests/differential/flowserv_side.py``) runs every
template there, and each test compares its template's outcome: the workflow's
parameters and outputs, every run's state and result files (by the names the run
handle gives them), the leaderboard values and the post-processing result files.

The pre-0.9 (REANA) form cannot be loaded by flowserv 0.9.4: that template is compared
with results computed by hand. Where flowserv-async deliberately differs (SPEC 12), the
test says so.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from runs_helpers import blocking_factory

from benchmarks.flowserv_env import ensure_flowserv_venv
from flowserv_async import LocalAPIFactory
from flowserv_async.errors import InvalidArgumentError
from flowserv_async.template.parameters import NumberRange

HERE = Path(__file__).parent / "differential"
TEMPLATES = HERE / "templates"
MODULES = HERE / "modules"
PYTHON_STEP = {"environment": "python:3.11", "commands": ["python code/model.py done"]}

# Runs per template: the group, and arguments ({name, value}, {name, file, target?}
# for an uploaded file, {name, actor} for an actor's step).
CASES: dict[str, list[dict[str, Any]]] = {
    "serial": [
        {
            "group": "alpha",
            "arguments": [{"name": "data", "file": "4\n5\n"}, {"name": "verbose", "value": False}],
        },
        {
            "group": "alpha",
            "arguments": [
                {"name": "data", "file": "1\n1\n"},
                {"name": "factor", "value": 3},
                {"name": "verbose", "value": True},
            ],
        },
        {
            "group": "beta",
            "arguments": [
                {"name": "data", "file": "10\n-2\n", "target": "data/mine.txt"},
                {"name": "mode", "value": "max"},
                {"name": "label", "value": "two words"},
                {"name": "scale", "value": 1.25},
                {"name": "limit", "value": 11},
                {"name": "verbose", "value": "false"},
            ],
        },
    ],
    "postproc": [
        {"group": "a", "arguments": [{"name": "x", "value": 2}]},
        {"group": "b", "arguments": []},
        {"group": "a", "arguments": [{"name": "x", "value": -0.5}]},
    ],
    "structured": [
        {
            "group": "g",
            "arguments": [
                {"name": "opts", "value": [{"name": "alpha", "value": 0.5}]},
                {"name": "weights", "value": [1, 2.5]},
                {"name": "fast", "value": True},
            ],
        },
        {
            "group": "g",
            "arguments": [
                {
                    "name": "opts",
                    "value": [{"name": "alpha", "value": "1"}, {"name": "beta", "value": 7}],
                },
                {"name": "weights", "value": []},
                {"name": "fast", "value": False},
                {"name": "model", "actor": PYTHON_STEP},
            ],
        },
    ],
    "notebook": [
        {"group": "g", "arguments": [{"name": "n", "value": 2}, {"name": "title", "value": "Two"}]},
    ],
    "codestep": [
        {"group": "g", "arguments": []},
        {"group": "g", "arguments": [{"name": "n", "value": 3}, {"name": "word", "value": "ho"}]},
    ],
}
# flowserv 0.9.4 fails a conditional reference to an absent Boolean argument even when
# the parameter has a default (MissingArgumentError from start_run); flowserv-async uses
# the default, as for every other reference. Run on both, compared in its own test.
CASES["absent-flag"] = [{"group": "g", "arguments": [{"name": "data", "file": "2\n"}]}]
# SPEC 12: on flowserv a participant's file argument may replace the template's scoring
# code (here with a script that ranks itself first); flowserv-async refuses it.
CHEAT = (
    "import json, os; os.makedirs('results', exist_ok=True);"
    " json.dump({'value': 1e9, 'count': 0, 'label': 'cheat'}, open('results/score.json', 'w'));"
    " open('results/report.txt', 'w').write('')\n"
)
CASES["overwrite-code"] = [
    {
        "group": "cheat",
        "arguments": [
            {"name": "data", "file": CHEAT, "target": "code/score.py"},
            {"name": "verbose", "value": False},
        ],
    }
]
TEMPLATE_OF = {"absent-flag": "serial", "overwrite-code": "serial"}
RANKED = {"serial", "postproc", "legacy", "overwrite-code"}


def _path_with_python() -> str:
    """PATH with this interpreter's folder first, so that ``python`` in commands works."""
    return os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")])


@pytest.fixture(scope="session")
def flowserv_outcomes(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """Run every template on flowserv-core 0.9.4 in one subprocess; its outcomes by name."""
    python, version = ensure_flowserv_venv(log=False)
    assert version == "0.9.4"
    folder = tmp_path_factory.mktemp("flowserv")
    plan = {
        "basedir": str(folder / "api"),
        "templates": [
            {
                "name": name,
                "source": str(TEMPLATES / TEMPLATE_OF.get(name, name)),
                "runs": runs,
                "ranked": name in RANKED,
            }
            for name, runs in sorted(CASES.items())
        ],
    }
    (folder / "plan.json").write_text(json.dumps(plan), encoding="utf-8")
    env = {
        **os.environ,
        "PATH": os.pathsep.join([str(python.parent), os.environ.get("PATH", "")]),
        "PYTHONPATH": str(MODULES),
    }
    proc = subprocess.run(
        [str(python), str(HERE / "flowserv_side.py"), str(folder / "plan.json")],
        capture_output=True,
        text=True,
        env=env,
        cwd=folder,
        timeout=300,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    outcomes: dict[str, Any] = json.loads(proc.stdout.strip().splitlines()[-1])
    return outcomes


@pytest.fixture
async def factory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> AsyncIterator[LocalAPIFactory]:
    """flowserv-async with ``start_run`` returning when the run has ended."""
    monkeypatch.setenv("PATH", _path_with_python())
    monkeypatch.syspath_prepend(str(MODULES))
    async with blocking_factory(tmp_path) as opened:
        yield opened


async def _argument(api: Any, group_id: str, arg: dict[str, Any]) -> dict[str, Any]:
    if "file" in arg:
        upload = await api.uploads().upload_file(group_id, arg["file"].encode(), "input.txt")
        value: dict[str, Any] = {"fileId": upload["id"]}
        if "target" in arg:
            value["targetPath"] = arg["target"]
        return {"name": arg["name"], "value": {"type": "$file", "value": value}}
    if "actor" in arg:
        return {"name": arg["name"], "value": arg["actor"]}
    return {"name": arg["name"], "value": arg["value"]}


async def _files(
    api: Any, handle: dict[str, Any], workflow_id: str | None = None
) -> dict[str, str]:
    files = {}
    for f in handle.get("files", []):
        if workflow_id is None:
            download = await api.runs().get_result_file(handle["id"], f["id"])
        else:
            download = await api.workflows().get_result_file(workflow_id, f["id"])
        files[f["name"]] = (await download.read()).decode()
    return files


async def outcome(
    factory: LocalAPIFactory, name: str, runs: list[dict[str, Any]]
) -> dict[str, Any]:
    """Run ``runs`` of template ``name`` here; the shape ``flowserv_side.py`` reports."""
    async with factory() as api:
        source = TEMPLATES / TEMPLATE_OF.get(name, name)
        wf = await api.workflows().create_workflow(source=str(source))
    groups: dict[str, str] = {}
    results = []
    for case in runs:
        async with factory() as api:
            if case["group"] not in groups:
                group = await api.groups().create_group(wf["id"], case["group"])
                groups[case["group"]] = group["id"]
            group_id = groups[case["group"]]
            arguments = [await _argument(api, group_id, arg) for arg in case["arguments"]]
            handle = await api.runs().start_run(group_id, arguments)
        async with factory() as api:
            handle = await api.runs().get_run(handle["id"])
            results.append(
                {
                    "group": case["group"],
                    "state": handle["state"],
                    "files": await _files(api, handle) if handle["state"] == "SUCCESS" else {},
                }
            )
    async with factory() as api:
        workflow = await api.workflows().get_workflow(wf["id"])
    if "postproc" in workflow:
        await factory.wait_run(workflow["postproc"]["id"], timeout=60)
    doc: dict[str, Any] = {
        "parameters": workflow["parameters"],
        "runs": results,
        "ranking": None,
        "postproc": None,
    }
    if name in RANKED:
        async with factory() as api:
            board = await api.workflows().get_ranking(wf["id"])
            assert board is not None
            doc["ranking"] = [
                {
                    "group": entry["group"]["name"],
                    "results": {r["name"]: r["value"] for r in entry["results"]},
                }
                for entry in board["ranking"]
            ]
            post = board.get("postproc")
            if post is not None:
                doc["postproc"] = {
                    "state": post["state"],
                    "files": await _files(api, post, wf["id"]),
                }
    return doc


def normalised(doc: Any) -> Any:
    """``doc`` with each parameter ``range`` as its bounds.

    flowserv shows ``[1,10]`` as ``[1.0,10.0]``; flowserv-async keeps it as declared.
    """
    if isinstance(doc, list):
        return [normalised(item) for item in doc]
    if not isinstance(doc, dict):
        return doc
    result = {key: normalised(value) for key, value in doc.items()}
    if "dtype" in doc and isinstance(doc.get("range"), str):
        bounds = NumberRange.parse(doc["range"])
        result["range"] = (bounds.low, bounds.low_open, bounds.high, bounds.high_open)
    return result


@pytest.mark.parametrize("name", sorted(set(CASES) - set(TEMPLATE_OF)))
async def test_template_runs_as_on_flowserv(
    name: str, factory: LocalAPIFactory, flowserv_outcomes: dict[str, Any]
) -> None:
    expected = flowserv_outcomes[name]
    assert "error" not in expected, expected
    ours = await outcome(factory, name, CASES[name])
    assert normalised(ours) == normalised(expected)


async def test_conditional_on_an_absent_flag_uses_its_default_unlike_flowserv(
    factory: LocalAPIFactory, flowserv_outcomes: dict[str, Any]
) -> None:
    # A deliberate difference (SPEC 12: no flowserv bugs kept).
    assert flowserv_outcomes["absent-flag"] == {
        "error": "MissingArgumentError: missing argument for 'verbose'"
    }
    ours = await outcome(factory, "absent-flag", CASES["absent-flag"])
    (run,) = ours["runs"]
    assert run["files"]["report"] == "plain: sum of 1 numbers is 2.0 (quiet, limit inf)\n"


async def test_a_file_argument_cannot_replace_the_scoring_code_unlike_flowserv(
    factory: LocalAPIFactory, flowserv_outcomes: dict[str, Any]
) -> None:
    # A deliberate difference (SPEC 12): on flowserv the replaced scoring code ranks first.
    cheated = flowserv_outcomes["overwrite-code"]
    assert cheated["ranking"] == [
        {"group": "cheat", "results": {"value": 1e9, "count": 0, "label": "cheat"}}
    ]
    with pytest.raises(InvalidArgumentError, match=r"template file 'code/score\.py'"):
        await outcome(factory, "overwrite-code", CASES["overwrite-code"])


async def test_pre_09_reana_form_gives_the_hand_computed_results(
    factory: LocalAPIFactory,
) -> None:
    # flowserv 0.9.4 cannot load this form (flowserv 0.8 could): compare by hand.
    runs = [
        {"group": "one", "arguments": [{"name": "names", "file": "Al\nBea\n"}]},
        {
            "group": "two",
            "arguments": [
                {"name": "names", "file": "Cy\n"},
                {"name": "greeting", "value": "Hi"},
                {"name": "repeat", "value": 3},
            ],
        },
    ]
    doc = await outcome(factory, "legacy", runs)
    lines_one = ["Hello, Al!", "Hello, Bea!"]
    lines_two = ["Hi, Cy!"] * 3
    assert doc["runs"] == [
        {
            "group": "one",
            "state": "SUCCESS",
            "files": {
                "results/greetings.txt": "\n".join(lines_one) + "\n",
                "results/stats.json": json.dumps({"lines": 2, "avg_len": 10.5}),
            },
        },
        {
            "group": "two",
            "state": "SUCCESS",
            "files": {
                "results/greetings.txt": "\n".join(lines_two) + "\n",
                "results/stats.json": json.dumps({"lines": 3, "avg_len": 7.0}),
            },
        },
    ]
    assert doc["ranking"] == [
        {"group": "one", "results": {"lines": 2, "avg_len": 10.5}},
        {"group": "two", "results": {"lines": 3, "avg_len": 7.0}},
    ]
    assert [p["name"] for p in doc["parameters"]] == ["names", "greeting", "repeat"]
    assert doc["parameters"][0]["target"] == "data/names.txt"
    assert doc["parameters"][0]["group"] == "main"
