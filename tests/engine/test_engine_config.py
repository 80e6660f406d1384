"""Engine configuration: workers, step mapping, file loading and merging."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import anyio
import pytest

from flowserv_async.engine import (
    CodeWorker,
    SubprocessWorker,
    WorkerSpec,
    WorkerType,
    bind_workers,
    load_engine_config,
    parse_engine_config,
    parse_workflow,
)
from flowserv_async.errors import InvalidConfigurationError

WORKFLOW = parse_workflow(
    {
        "steps": [
            {"name": "build", "action": {"environment": "x", "commands": ["true"]}},
            {"name": "score", "action": {"func": "json.dumps", "arg": "out"}},
            {"name": "actor", "action": None},
        ]
    }
)


def test_workers_and_mapping_accept_mappings_and_key_value_lists() -> None:
    config = parse_engine_config(
        {
            "workers": [
                {"name": "sp", "type": "subprocess", "env": {"A": 1, "B": True}},
                {
                    "name": "sp2",
                    "type": "subprocess",
                    "env": [{"key": "C", "value": "c"}],
                    "variables": [{"key": "python", "value": "py3"}],
                },
                {"name": "fn", "type": "code"},
            ],
            "workflow": [{"step": "build", "worker": "sp2"}, {"step": "score", "worker": "fn"}],
            "volumes": [{"id": "ignored here"}],
        }
    )
    assert config.workers["sp"] == WorkerSpec("sp", WorkerType.SUBPROCESS, {"A": "1", "B": "true"})
    assert config.worker_for("build") == WorkerSpec(
        "sp2", WorkerType.SUBPROCESS, {"C": "c"}, {"python": "py3"}
    )
    assert config.worker_for("other") is None
    workers = bind_workers(WORKFLOW, config)
    assert workers == {
        "build": SubprocessWorker(env={"C": "c"}, variables={"python": "py3"}),
        "score": CodeWorker(),
    }


def test_default_workers_follow_the_step_kind() -> None:
    assert bind_workers(WORKFLOW, parse_engine_config()) == {
        "build": SubprocessWorker(),
        "score": CodeWorker(),
    }


def test_later_documents_override_workers_and_mappings() -> None:
    config = parse_engine_config(
        {
            "workers": [{"name": "w", "type": "subprocess", "env": {"A": "file"}}],
            "workflow": [{"step": "build", "worker": "w"}],
        },
        None,
        {"workers": [{"name": "w", "type": "subprocess", "env": {"A": "run"}}]},
        {
            "workers": [{"name": "w2", "type": "subprocess"}],
            "workflow": [{"step": "build", "worker": "w2"}],
        },
    )
    assert config.workers["w"].env == {"A": "run"}
    assert config.steps == {"build": "w2"}


@pytest.mark.parametrize(
    ("doc", "fragment"),
    [
        ([], "must be a mapping"),
        ({"workers": {"name": "w"}}, "'workers' must be a list"),
        ({"workers": ["w"]}, "worker 'w' must be a mapping"),
        ({"workers": [{"type": "code"}]}, "needs a string 'name'"),
        ({"workers": [{"name": "w", "type": "docker"}]}, "worker 'w' has unknown type 'docker'"),
        ({"workers": [{"name": "w"}]}, "worker 'w' has unknown type None"),
        (
            {"workers": [{"name": "w", "type": "code"}, {"name": "w", "type": "code"}]},
            "duplicate worker 'w'",
        ),
        ({"workers": [{"name": "w", "type": "code", "volume": "v"}]}, "unknown key(s) ['volume']"),
        ({"workers": [{"name": "w", "type": "subprocess", "env": "A=1"}]}, "worker 'w' env"),
        ({"workers": [{"name": "w", "type": "subprocess", "env": {"A": None}}]}, "'A'"),
        ({"workers": [{"name": "w", "type": "code", "env": {"A": "1"}}]}, "takes no env"),
        ({"workflow": [{"step": "build"}]}, "workflow entry"),
        ({"workflow": [{"step": "build", "worker": "nope"}]}, "unknown worker 'nope'"),
        (
            {
                "workers": [{"name": "w", "type": "code"}],
                "workflow": [{"step": "s", "worker": "w"}, {"step": "s", "worker": "w"}],
            },
            "step 's' is mapped twice",
        ),
    ],
)
def test_malformed_config_is_refused(doc: Any, fragment: str) -> None:
    with pytest.raises(InvalidConfigurationError) as info:
        parse_engine_config(doc)
    assert fragment in info.value.message


@pytest.mark.parametrize(("step", "worker_type"), [("build", "code"), ("score", "subprocess")])
def test_step_on_a_worker_of_the_wrong_kind_is_refused(step: str, worker_type: str) -> None:
    config = parse_engine_config(
        {
            "workers": [{"name": "w", "type": worker_type}],
            "workflow": [{"step": step, "worker": "w"}],
        }
    )
    with pytest.raises(InvalidConfigurationError, match=f"step '{step}' cannot run on"):
        bind_workers(WORKFLOW, config)


async def test_load_yaml_file_and_merge_run_config(tmp_path: Path) -> None:
    path = anyio.Path(tmp_path / "engine.yaml")
    await path.write_text(
        "workers:\n"
        "  - name: w\n"
        "    type: subprocess\n"
        "    env: {A: '1'}\n"
        "workflow:\n"
        "  - {step: build, worker: w}\n"
    )
    config = await load_engine_config(
        str(path), {"workers": [{"name": "w", "type": "subprocess", "env": {"A": "2"}}]}
    )
    assert config.worker_for("build") == WorkerSpec("w", WorkerType.SUBPROCESS, {"A": "2"})


async def test_load_json_file(tmp_path: Path) -> None:
    path = anyio.Path(tmp_path / "engine.json")
    await path.write_text(json.dumps({"workers": [{"name": "c", "type": "code"}]}))
    config = await load_engine_config(path)
    assert config.workers["c"].type is WorkerType.CODE


async def test_no_file_means_only_the_overrides() -> None:
    config = await load_engine_config(None, {"workers": [{"name": "c", "type": "code"}]})
    assert list(config.workers) == ["c"]


@pytest.mark.parametrize(
    ("name", "text", "fragment"),
    [
        ("missing.yaml", None, "cannot read engine configuration file"),
        ("bad.yaml", "workers: [\n", "cannot parse engine configuration file"),
        ("bad.json", "{workers: 1", "cannot parse engine configuration file"),
        ("list.yaml", "- 1\n", "is not a mapping"),
        ("type.yaml", "workers: [{name: w, type: ssh}]\n", "type.yaml: engine configuration #1"),
    ],
)
async def test_unusable_config_file_is_refused_naming_it(
    tmp_path: Path, name: str, text: str | None, fragment: str
) -> None:
    path = anyio.Path(tmp_path / name)
    if text is not None:
        await path.write_text(text)
    with pytest.raises(InvalidConfigurationError) as info:
        await load_engine_config(path)
    assert fragment in info.value.message
    assert name in info.value.message
