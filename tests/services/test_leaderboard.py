"""Leaderboards (SPEC 7, 3.2): order, ties, missing values, best run per group, errors."""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from runs_helpers import PY, install, step

from flowserv_async import DB, LocalAPIFactory
from flowserv_async._util import new_id, utc_now
from flowserv_async.db.models import Group, Ranking, Run
from flowserv_async.errors import InvalidArgumentError, UnknownWorkflowError

RESULTS = {
    "file": "results.json",
    "schema": [
        {"name": "score", "label": "Score", "dtype": "float"},
        {"name": "steps", "label": "Steps", "dtype": "int", "required": False},
        {"name": "tag", "label": "Tag", "dtype": "string", "required": False},
    ],
}


async def _workflow(factory: LocalAPIFactory, folder: Path, results: Any = RESULTS) -> str:
    wf_id, _ = await install(
        factory,
        folder,
        [step("s", "true")],
        outputs=["results.json"],
        extra={"results": results} if results is not None else None,
        group="seed",
    )
    return wf_id


async def _ranked(
    database: DB, wf_id: str, rows: list[tuple[str, dict[str, Any]]], state: str = "SUCCESS"
) -> list[str]:
    """Insert one ranked run per (group name, values), created one second apart."""
    ids = []
    async with database.write_session() as s:
        groups: dict[str, str] = {}
        start = utc_now()
        for index, (group, values) in enumerate(rows):
            if group not in groups:
                groups[group] = new_id()
                s.add(
                    Group(group_id=groups[group], workflow_id=wf_id, name=group, workflow_spec={})
                )
                await s.flush()
            run_id = new_id()
            ids.append(run_id)
            at = start + timedelta(seconds=index)
            s.add(
                Run(
                    run_id=run_id,
                    workflow_id=wf_id,
                    group_id=groups[group],
                    state=state,
                    created_at=at,
                    started_at=at,
                    ended_at=at,
                )
            )
            await s.flush()
            s.add(Ranking(run_id=run_id, workflow_id=wf_id, group_id=groups[group], values=values))
    return ids


def _order(board: dict[str, Any]) -> list[str]:
    return [entry["run"]["id"] for entry in board["ranking"]]


async def test_order_by_each_column_both_ways_with_missing_values_last(
    make_factory: Callable[..., LocalAPIFactory], database: DB, tmp_path: Path
) -> None:
    factory = make_factory({"FLOWSERV_AUTH": "open"})
    wf = await _workflow(factory, tmp_path / "wf")
    ids = await _ranked(
        database,
        wf,
        [
            ("a", {"score": 0.5, "steps": 3, "tag": "b"}),
            ("b", {"score": 0.9, "tag": "a"}),
            ("c", {"score": 0.7, "steps": 1}),
        ],
    )
    a, b, c = ids
    async with factory() as api:
        w = api.workflows()
        assert _order(await w.get_ranking(wf)) == [b, c, a]  # default: first column desc
        assert _order(await w.get_ranking(wf, order_by=[{"name": "score", "sortDesc": False}])) == [
            a,
            c,
            b,
        ]
        assert _order(await w.get_ranking(wf, order_by=[{"name": "steps"}])) == [a, c, b]
        assert _order(await w.get_ranking(wf, order_by=[{"name": "steps", "sortDesc": False}])) == [
            c,
            a,
            b,
        ]
        assert _order(await w.get_ranking(wf, order_by=[{"name": "tag", "sortDesc": False}])) == [
            b,
            a,
            c,
        ]
        assert _order(await w.get_ranking(wf, order_by=[{"name": "tag"}])) == [a, b, c]
        board = await w.get_ranking(wf)
    assert board["schema"] == [
        {"name": "score", "label": "Score", "dtype": "float"},
        {"name": "steps", "label": "Steps", "dtype": "int"},
        {"name": "tag", "label": "Tag", "dtype": "string"},
    ]
    top = board["ranking"][0]
    assert set(top) == {"run", "group", "results"}
    assert set(top["run"]) == {"id", "createdAt", "startedAt", "finishedAt"}
    assert top["group"]["name"] == "b"
    assert top["results"] == [{"name": "score", "value": 0.9}, {"name": "tag", "value": "a"}]
    assert "postproc" not in board


async def test_ties_fall_to_the_next_column_then_to_creation_time(
    make_factory: Callable[..., LocalAPIFactory], database: DB, tmp_path: Path
) -> None:
    factory = make_factory({"FLOWSERV_AUTH": "open"})
    wf = await _workflow(factory, tmp_path / "wf")
    first, second, third = await _ranked(
        database,
        wf,
        [
            ("a", {"score": 1.0, "steps": 5}),
            ("b", {"score": 1.0, "steps": 2}),
            ("c", {"score": 1.0, "steps": 2}),
        ],
    )
    order = [{"name": "score"}, {"name": "steps", "sortDesc": False}]
    async with factory() as api:
        assert _order(await api.workflows().get_ranking(wf, order_by=order)) == [
            second,
            third,
            first,
        ]
        assert _order(await api.workflows().get_ranking(wf, order_by=[{"name": "score"}])) == [
            first,
            second,
            third,
        ]


async def test_best_run_per_group_unless_include_all(
    make_factory: Callable[..., LocalAPIFactory], database: DB, tmp_path: Path
) -> None:
    factory = make_factory({"FLOWSERV_AUTH": "open"})
    wf = await _workflow(factory, tmp_path / "wf")
    a1, a2, b1 = await _ranked(
        database,
        wf,
        [
            ("a", {"score": 0.2}),
            ("a", {"score": 0.8}),
            ("b", {"score": 0.5}),
        ],
    )
    await _ranked(database, wf, [("z", {"score": 9.9})], state="ERROR")
    async with factory() as api:
        assert _order(await api.workflows().get_ranking(wf)) == [a2, b1]
        assert _order(await api.workflows().get_ranking(wf, include_all=True)) == [a2, b1, a1]
        low_first = [{"name": "score", "sortDesc": False}]
        assert _order(await api.workflows().get_ranking(wf, order_by=low_first)) == [a1, b1]


@pytest.mark.parametrize(
    "order_by",
    [
        [{"name": "nope"}],
        [{"name": "score", "sortDesc": "yes"}],
        [{"sortDesc": True}],
        [{"name": "score", "extra": 1}],
        "score",
        ["score"],
    ],
)
async def test_bad_order_is_a_clear_error(
    make_factory: Callable[..., LocalAPIFactory], tmp_path: Path, order_by: Any
) -> None:
    factory = make_factory({"FLOWSERV_AUTH": "open"})
    wf = await _workflow(factory, tmp_path / "wf")
    with pytest.raises(InvalidArgumentError):
        async with factory() as api:
            await api.workflows().get_ranking(wf, order_by=order_by)


async def test_no_schema_no_leaderboard_and_unknown_workflow(
    make_factory: Callable[..., LocalAPIFactory], tmp_path: Path
) -> None:
    factory = make_factory({"FLOWSERV_AUTH": "open"})
    wf = await _workflow(factory, tmp_path / "plain", results=None)
    async with factory() as api:
        assert await api.workflows().get_ranking(wf) is None
    with pytest.raises(UnknownWorkflowError):
        async with factory() as api:
            await api.workflows().get_ranking("nope")


async def test_real_runs_rank_with_nested_paths_and_bad_results_are_errors(
    make_factory: Callable[..., LocalAPIFactory], tmp_path: Path
) -> None:
    factory = make_factory({"FLOWSERV_AUTH": "open"})
    await factory.open()
    results = {
        "file": "results.json",
        "schema": [
            {"name": "score", "label": "Score", "dtype": "float", "path": "metrics/score"},
            {"name": "n", "label": "N", "dtype": "int"},
        ],
    }
    script = "import json,sys; json.dump(json.loads(sys.argv[1]), open('results.json','w'))"
    parameters = [{"name": "doc", "dtype": "string"}]
    wf_id, group_id = await install(
        factory,
        tmp_path / "real",
        [step("s", f"{PY} -c \"{script}\" '${{doc}}'")],
        parameters=parameters,
        outputs=["results.json"],
        extra={"results": results},
    )
    docs = {
        "good": {"metrics": {"score": "0.75"}, "n": "4"},
        "better": {"metrics": {"score": 0.9}, "n": 1},
        "missing": {"metrics": {}, "n": 1},
        "wrong": {"metrics": {"score": "high"}, "n": 1},
    }
    finals = {}
    for name, doc in docs.items():
        async with factory() as api:
            run = await api.runs().start_run(group_id, [{"name": "doc", "value": json.dumps(doc)}])
        finals[name] = await factory.wait_run(run["id"], timeout=30)
    assert finals["good"]["state"] == finals["better"]["state"] == "SUCCESS"
    for name in ("missing", "wrong"):
        assert finals[name]["state"] == "ERROR"
        assert "score" in finals[name]["messages"][0]
    async with factory() as api:
        board = await api.workflows().get_ranking(wf_id, include_all=True)
    assert _order(board) == [finals["better"]["id"], finals["good"]["id"]]
    assert board["ranking"][1]["results"] == [
        {"name": "score", "value": 0.75},
        {"name": "n", "value": 4},
    ]
