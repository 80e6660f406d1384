"""Queued jobs: a prepared run survives the database exactly, and nothing else is read."""

from __future__ import annotations

import pickle

import pytest

from flowserv_async.dispatch.jobs import decode_job, encode_job
from flowserv_async.engine.config import parse_engine_config
from flowserv_async.engine.job import RunJob
from flowserv_async.engine.spec import parse_workflow
from flowserv_async.errors import FlowservError
from flowserv_async.template import ResultSchema

WORKFLOW = {
    "files": {"inputs": ["data/in.txt"], "outputs": ["out/result.json"]},
    "parameters": {"x": 1},
    "steps": [
        {
            "name": "shell",
            "files": {"inputs": ["data/in.txt"], "outputs": ["out/a.txt"]},
            "timeout": 5,
            "action": {"environment": "python", "commands": ["cat data/in.txt > out/a.txt"]},
        },
        {
            "name": "code",
            "action": {"func": "json.dumps", "arg": "y", "variables": [{"arg": "obj", "var": "x"}]},
        },
        {"name": "book", "action": {"notebook": "nb.ipynb", "params": ["x"]}},
        {"name": "skipped", "action": None},
    ],
}
SCHEMA = {
    "file": "out/result.json",
    "schema": [{"name": "score", "label": "Score", "dtype": "float"}],
    "orderBy": [{"name": "score", "sortDesc": False}],
}


def a_job() -> RunJob:
    return RunJob(
        run_id="r1",
        workflow_id="w1",
        group_id="g1",
        workflow=parse_workflow(WORKFLOW),
        context={"name": "Ann", "values": [1, 2.5, None, {"deep": True}]},
        static_prefix="w1/static",
        result_prefix="w1/runs/r1",
        input_files=(("w1/g1/uploads/f1", "data/in.txt"),),
        generated_files=(("runs/runs.json", b"[]\x00\xff"),),
        result_files=("out/result.json",),
        config=parse_engine_config(
            {
                "workers": [
                    {"name": "c", "type": "code"},
                    {"name": "s", "type": "subprocess", "env": {"A": "1"}, "variables": {"v": "2"}},
                ],
                "workflow": [{"step": "code", "worker": "c"}, {"step": "shell", "worker": "s"}],
            }
        ),
        result_schema=ResultSchema.from_dict(SCHEMA),
        has_postproc=True,
    )


def test_a_job_comes_back_equal() -> None:
    job = a_job()
    assert decode_job(encode_job(job)) == job


def test_reading_refuses_what_is_no_job_of_this_package() -> None:
    with pytest.raises(FlowservError, match=r"may not name (os|posix)\.system"):
        decode_job(pickle.dumps(__import__("os").system))
    with pytest.raises(FlowservError, match="holds a dict"):
        decode_job(pickle.dumps({"run_id": "r1"}))
    with pytest.raises(FlowservError, match="cannot read a queued run"):
        decode_job(b"not a pickle")
    with pytest.raises(FlowservError, match="cannot read a queued run"):
        decode_job(encode_job(a_job())[:-5])
