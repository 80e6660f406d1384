"""Leaderboards through ``workflows().get_ranking`` (SPEC 3, 3.2, 5.4, 7), both backends.

Most rankings are built by inserting ranked runs directly (fast, with chosen creation
times); the last tests go through real runs whose step writes the result file.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
from runs_helpers import PY, install, step
from sqlalchemy import update

from flowserv_async import DB, LocalAPIFactory
from flowserv_async._util import new_id
from flowserv_async.db.models import Group, Ranking, Run, Workflow
from flowserv_async.errors import (
    InvalidArgumentError,
    UnknownRunError,
    UnknownWorkflowError,
)

# Every column optional, so that each one can be missing in some run.
RESULTS: dict[str, Any] = {
    "file": "results.json",
    "schema": [
        {"name": "score", "label": "Score", "dtype": "float", "required": False},
        {"name": "steps", "label": "Steps", "dtype": "int", "required": False},
        {"name": "name", "label": "Name", "dtype": "string", "required": False},
    ],
}
BASE_TIME = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)

# Values chosen so that comparing the wrong way (ints or floats as text, text as
# numbers) gives another order: 9 < 10 but "10" < "9"; 2.25 < 10.0 but "10.0" < "2.25".
ROWS: list[dict[str, Any]] = [
    {"score": 0.5, "steps": 10, "name": "b9"},
    {"score": 2.25, "steps": 9, "name": "c"},
    {"score": 10.0, "name": "b10"},
    {"steps": 100, "name": "a"},
    {"score": -1.5, "steps": 2},
]


@pytest.fixture
async def open_factory(make_factory: Callable[..., LocalAPIFactory]) -> LocalAPIFactory:
    factory = make_factory({"FLOWSERV_AUTH": "open"})
    await factory.open()
    return factory


async def new_workflow(
    factory: LocalAPIFactory, folder: Path, results: dict[str, Any] | None = RESULTS
) -> str:
    """A workflow with a no-op step and the given result schema (no group)."""
    wf_id, _ = await install(
        factory,
        folder,
        [step("s", "true")],
        outputs=["results.json"],
        extra={"results": results} if results is not None else None,
        group="installer",
    )
    return wf_id


async def insert_ranked(
    database: DB,
    wf_id: str,
    rows: list[tuple[str, dict[str, Any]]],
    created: list[int] | None = None,
    groups: dict[str, str] | None = None,
) -> list[str]:
    """Insert one SUCCESS run with a ranking row per ``(group name, values)``.

    ``created[i]`` is the creation time of row ``i`` in seconds after BASE_TIME
    (default: the row's position). Returns the run ids in row order; ``groups`` (when
    given) receives the group ids by name.
    """
    created = created or list(range(len(rows)))
    ids: list[str] = []
    groups = {} if groups is None else groups
    async with database.write_session() as s:
        for name, _ in rows:
            if name not in groups:
                groups[name] = new_id()
                s.add(Group(group_id=groups[name], workflow_id=wf_id, name=name, workflow_spec={}))
        await s.flush()
        for (name, _), offset in zip(rows, created, strict=True):
            at = BASE_TIME + timedelta(seconds=offset)
            ids.append(new_id())
            s.add(
                Run(
                    run_id=ids[-1],
                    workflow_id=wf_id,
                    group_id=groups[name],
                    state="SUCCESS",
                    created_at=at,
                    started_at=at + timedelta(milliseconds=100),
                    ended_at=at + timedelta(milliseconds=900),
                )
            )
        await s.flush()
        for run_id, (name, values) in zip(ids, rows, strict=True):
            s.add(Ranking(run_id=run_id, workflow_id=wf_id, group_id=groups[name], values=values))
    return ids


def run_ids(board: dict[str, Any] | None) -> list[str]:
    assert board is not None
    return [entry["run"]["id"] for entry in board["ranking"]]


def expected_order(ids: list[str], column: str, desc: bool) -> list[str]:
    """ROWS sorted by one column; runs without a value last, in creation order."""
    present = [i for i, row in enumerate(ROWS) if column in row]
    missing = [i for i, row in enumerate(ROWS) if column not in row]
    present.sort(key=lambda i: ROWS[i][column], reverse=desc)
    return [ids[i] for i in present + missing]


# -- order ------------------------------------------------------------------------


@pytest.mark.parametrize("desc", [True, False], ids=["desc", "asc"])
@pytest.mark.parametrize("column", ["score", "steps", "name"])
async def test_orders_by_each_column_both_ways_with_missing_values_last(
    open_factory: LocalAPIFactory, database: DB, tmp_path: Path, column: str, desc: bool
) -> None:
    wf = await new_workflow(open_factory, tmp_path / "wf")
    ids = await insert_ranked(database, wf, [(f"g{i}", row) for i, row in enumerate(ROWS)])
    async with open_factory() as api:
        board = await api.workflows().get_ranking(wf, order_by=[{"name": column, "sortDesc": desc}])
    assert run_ids(board) == expected_order(ids, column, desc)


async def test_default_order_is_the_first_column_descending(
    open_factory: LocalAPIFactory, database: DB, tmp_path: Path
) -> None:
    wf = await new_workflow(open_factory, tmp_path / "wf")
    ids = await insert_ranked(database, wf, [(f"g{i}", row) for i, row in enumerate(ROWS)])
    async with open_factory() as api:
        default = await api.workflows().get_ranking(wf)
        # sortDesc defaults to true in an order_by entry too; [] means the default.
        named = await api.workflows().get_ranking(wf, order_by=[{"name": "score"}])
        empty = await api.workflows().get_ranking(wf, order_by=[])
    assert run_ids(default) == expected_order(ids, "score", desc=True)
    assert run_ids(named) == run_ids(empty) == run_ids(default)


async def test_template_order_by_is_the_default_order(
    open_factory: LocalAPIFactory, database: DB, tmp_path: Path
) -> None:
    results = {**RESULTS, "orderBy": [{"name": "steps", "sortDesc": False}]}
    wf = await new_workflow(open_factory, tmp_path / "wf", results)
    ids = await insert_ranked(database, wf, [(f"g{i}", row) for i, row in enumerate(ROWS)])
    async with open_factory() as api:
        board = await api.workflows().get_ranking(wf)
    assert run_ids(board) == expected_order(ids, "steps", desc=False)


async def test_ties_fall_to_the_next_column_then_to_the_earlier_run(
    open_factory: LocalAPIFactory, database: DB, tmp_path: Path
) -> None:
    wf = await new_workflow(open_factory, tmp_path / "wf")
    # Inserted in this order, but created at the times given below: the creation time
    # breaks the last ties, not the insertion order or the id.
    late, early, low_steps, high_score, no_score = await insert_ranked(
        database,
        wf,
        [
            ("a", {"score": 1.0, "steps": 5}),
            ("b", {"score": 1.0, "steps": 5}),
            ("c", {"score": 1.0, "steps": 2}),
            ("d", {"score": 3.0, "steps": 9}),
            ("e", {"steps": 1}),
        ],
        created=[50, 10, 30, 40, 0],
    )
    order = [{"name": "score", "sortDesc": True}, {"name": "steps", "sortDesc": False}]
    async with open_factory() as api:
        two = await api.workflows().get_ranking(wf, order_by=order)
        desc_steps = await api.workflows().get_ranking(
            wf, order_by=[{"name": "score"}, {"name": "steps"}]
        )
        one = await api.workflows().get_ranking(wf, order_by=[{"name": "score"}])
    assert run_ids(two) == [high_score, low_steps, early, late, no_score]
    assert run_ids(desc_steps) == [high_score, early, late, low_steps, no_score]
    assert run_ids(one) == [high_score, early, low_steps, late, no_score]


# -- best run per group -----------------------------------------------------------


async def test_best_run_per_group_unless_include_all(
    open_factory: LocalAPIFactory, database: DB, tmp_path: Path
) -> None:
    wf = await new_workflow(open_factory, tmp_path / "wf")
    a_low, a_high, b_mid, a_none, c_only, b_tie = await insert_ranked(
        database,
        wf,
        [
            ("a", {"score": 0.1, "steps": 7}),
            ("a", {"score": 0.9, "steps": 3}),
            ("b", {"score": 0.5, "steps": 1}),
            ("a", {"steps": 1}),
            ("c", {"score": 0.3, "steps": 9}),
            ("b", {"score": 0.5, "steps": 1}),
        ],
    )
    low_first = [{"name": "score", "sortDesc": False}]
    async with open_factory() as api:
        w = api.workflows()
        best = await w.get_ranking(wf)
        every = await w.get_ranking(wf, include_all=True)
        best_low = await w.get_ranking(wf, order_by=low_first)
        best_steps = await w.get_ranking(wf, order_by=[{"name": "steps", "sortDesc": False}])
    # The best of each group; a tie within group b goes to its earlier run.
    assert run_ids(best) == [a_high, b_mid, c_only]
    assert [e["group"]["name"] for e in best["ranking"]] == ["a", "b", "c"]  # type: ignore[index]
    assert run_ids(every) == [a_high, b_mid, b_tie, c_only, a_low, a_none]
    # "Best" follows the requested order: the lowest score of each group now.
    assert run_ids(best_low) == [a_low, c_only, b_mid]
    # A run without a value is never the best of its group while another run has one...
    assert a_none not in run_ids(best_low)
    # ...but it is when it leads by the column that is asked for.
    assert run_ids(best_steps)[:2] == [b_mid, a_none]


async def test_only_successful_runs_are_ranked(
    open_factory: LocalAPIFactory, database: DB, tmp_path: Path
) -> None:
    wf = await new_workflow(open_factory, tmp_path / "wf")
    (ok,) = await insert_ranked(database, wf, [("a", {"score": 0.1})])
    (canceled,) = await insert_ranked(database, wf, [("b", {"score": 0.9})])
    async with database.write_session() as s:
        run = await s.get(Run, canceled)
        assert run is not None
        run.state = "CANCELED"
    async with open_factory() as api:
        assert run_ids(await api.workflows().get_ranking(wf, include_all=True)) == [ok]


# -- the Leaderboard shape --------------------------------------------------------


async def test_leaderboard_has_flowservs_shape_and_typed_values(
    open_factory: LocalAPIFactory, database: DB, tmp_path: Path
) -> None:
    wf = await new_workflow(open_factory, tmp_path / "wf")
    groups: dict[str, str] = {}
    first, second = await insert_ranked(
        database,
        wf,
        [("team a", {"score": 2.0, "steps": 10, "name": "x"}), ("team b", {"score": 1.0})],
        groups=groups,
    )
    async with open_factory() as api:
        board = await api.workflows().get_ranking(wf)
    assert board is not None
    assert set(board) == {"schema", "ranking"}  # no post-processing: no postproc key
    assert board["schema"] == [
        {"name": "score", "label": "Score", "dtype": "float"},
        {"name": "steps", "label": "Steps", "dtype": "int"},
        {"name": "name", "label": "Name", "dtype": "string"},
    ]
    assert board["ranking"] == [
        {
            "run": {
                "id": first,
                "createdAt": BASE_TIME.isoformat(),
                "startedAt": (BASE_TIME + timedelta(milliseconds=100)).isoformat(),
                "finishedAt": (BASE_TIME + timedelta(milliseconds=900)).isoformat(),
            },
            "group": {"id": groups["team a"], "name": "team a"},
            "results": [
                {"name": "score", "value": 2.0},
                {"name": "steps", "value": 10},
                {"name": "name", "value": "x"},
            ],
        },
        {
            "run": {
                "id": second,
                "createdAt": (BASE_TIME + timedelta(seconds=1)).isoformat(),
                "startedAt": (BASE_TIME + timedelta(seconds=1, milliseconds=100)).isoformat(),
                "finishedAt": (BASE_TIME + timedelta(seconds=1, milliseconds=900)).isoformat(),
            },
            "group": {"id": groups["team b"], "name": "team b"},
            "results": [{"name": "score", "value": 1.0}],
        },
    ]
    values = {r["name"]: r["value"] for r in board["ranking"][0]["results"]}
    assert [type(values[k]) for k in ("score", "steps", "name")] == [float, int, str]
    assert json.loads(json.dumps(board)) == board  # JSON-ready as it is


@pytest.mark.parametrize(
    "at",
    [
        datetime(2024, 5, 1, 12, 0, 0, 1, tzinfo=UTC),
        datetime(2024, 5, 1, 12, 0, 0, 999999, tzinfo=UTC),
        datetime(1999, 12, 31, 23, 59, 59, tzinfo=UTC),
        datetime(2024, 5, 1, 14, 0, 0, 500000, tzinfo=timezone(timedelta(hours=2))),
    ],
    ids=["one-microsecond", "last-microsecond", "whole-second", "other-offset"],
)
async def test_leaderboard_timestamps_read_as_the_run_handles_iso_text(
    open_factory: LocalAPIFactory, database: DB, tmp_path: Path, at: datetime
) -> None:
    """The timestamps of the leaderboard, the run's handle and the run list: the same text."""
    wf = await new_workflow(open_factory, tmp_path / "wf")
    (run_id,) = await insert_ranked(database, wf, [("team", {"score": 1.0})])
    async with database.write_session() as s:
        await s.execute(
            update(Run).where(Run.run_id == run_id).values(created_at=at, started_at=None)
        )
    async with open_factory() as api:
        board = await api.workflows().get_ranking(wf)
        handle = await api.runs().get_run(run_id)
        (listed,) = (await api.runs().list_runs(handle["groupId"]))["runs"]
    assert board is not None
    times = board["ranking"][0]["run"]
    assert times["createdAt"] == at.astimezone(UTC).isoformat() == handle["createdAt"]
    assert listed["createdAt"] == handle["createdAt"]
    assert times["startedAt"] is None
    assert "startedAt" not in handle
    finished = (BASE_TIME + timedelta(milliseconds=900)).isoformat()
    assert times["finishedAt"] == finished == handle["finishedAt"]


async def test_an_empty_leaderboard_has_the_schema(
    open_factory: LocalAPIFactory, tmp_path: Path
) -> None:
    wf = await new_workflow(open_factory, tmp_path / "wf")
    async with open_factory() as api:
        board = await api.workflows().get_ranking(wf, include_all=True)
    assert board is not None
    assert board["ranking"] == []
    assert [c["name"] for c in board["schema"]] == ["score", "steps", "name"]


# -- bad input ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("order_by", "named"),
    [
        ([{"name": "nope"}], "nope"),
        ([{"name": "score"}, {"name": "Score"}], "Score"),
        ([{"name": "score", "sortDesc": "false"}], "false"),
        ([{"name": "score", "sortDesc": 1}], "sortDesc"),
        ([{"name": "score", "sortDesc": None}], "sortDesc"),
        ([{"name": "score", "desc": True}], "desc"),
        ([{"sortDesc": True}], "sortDesc"),
        ([{"name": 3}], "3"),
        ([None], "None"),
        (["score"], "score"),
        ("score", "score"),
        ({"name": "score"}, "score"),
        (7, "7"),
    ],
)
async def test_bad_order_by_is_an_invalid_argument_naming_it(
    open_factory: LocalAPIFactory, tmp_path: Path, order_by: Any, named: str
) -> None:
    wf = await new_workflow(open_factory, tmp_path / "wf")
    async with open_factory() as api:
        with pytest.raises(InvalidArgumentError) as err:
            await api.workflows().get_ranking(wf, order_by=order_by)
    assert named in str(err.value)


@pytest.mark.parametrize("include_all", ["false", 1, None])
async def test_include_all_must_be_a_bool(
    open_factory: LocalAPIFactory, tmp_path: Path, include_all: Any
) -> None:
    wf = await new_workflow(open_factory, tmp_path / "wf")
    async with open_factory() as api:
        with pytest.raises(InvalidArgumentError, match="include_all"):
            await api.workflows().get_ranking(wf, include_all=include_all)


async def test_no_result_schema_means_no_leaderboard(
    open_factory: LocalAPIFactory, tmp_path: Path
) -> None:
    wf = await new_workflow(open_factory, tmp_path / "plain", results=None)
    async with open_factory() as api:
        assert await api.workflows().get_ranking(wf) is None
        assert await api.workflows().get_ranking(wf, order_by=[{"name": "x"}]) is None


async def test_unknown_workflow_is_an_error_for_leaderboard_and_downloads(
    open_factory: LocalAPIFactory,
) -> None:
    async with open_factory() as api:
        with pytest.raises(UnknownWorkflowError, match="nope"):
            await api.workflows().get_ranking("nope")
        with pytest.raises(UnknownWorkflowError, match="nope"):
            await api.workflows().get_result_archive("nope")
        with pytest.raises(UnknownWorkflowError, match="nope"):
            await api.workflows().get_result_file("nope", "file")


# -- real runs ----------------------------------------------------------------------

REAL_RESULTS: dict[str, Any] = {
    "file": "results.json",
    "schema": [
        {"name": "score", "label": "Score", "dtype": "float", "path": "metrics/score"},
        {"name": "count", "label": "Count", "dtype": "int"},
        {"name": "model", "label": "Model", "dtype": "string", "path": "info/model/name"},
        {"name": "note", "label": "Note", "dtype": "string", "required": False},
    ],
}
# Writes its argument, as it is, to the result file.
WRITE = "import sys; open('results.json', 'w').write(sys.argv[1])"


async def real_workflow(factory: LocalAPIFactory, folder: Path) -> tuple[str, str]:
    return await install(
        factory,
        folder,
        [step("write", f"{PY} -c \"{WRITE}\" '${{doc}}'")],
        parameters=[{"name": "doc", "dtype": "string"}],
        outputs=["results.json"],
        extra={"results": REAL_RESULTS},
    )


async def run_with(factory: LocalAPIFactory, group_id: str, text: str) -> dict[str, Any]:
    async with factory() as api:
        run = await api.runs().start_run(group_id, [{"name": "doc", "value": text}])
    return await factory.wait_run(run["id"], timeout=30)


def doc(score: Any, count: Any, model: Any, **extra: Any) -> str:
    return json.dumps(
        {"metrics": {"score": score}, "count": count, "info": {"model": {"name": model}}, **extra}
    )


async def test_real_runs_rank_nested_paths_with_values_cast_to_the_column_type(
    open_factory: LocalAPIFactory, tmp_path: Path
) -> None:
    wf, group = await real_workflow(open_factory, tmp_path / "wf")
    cast = await run_with(open_factory, group, doc("0.75", " 3 ", 42, note=7))
    native = await run_with(open_factory, group, doc(2, 5.0, "m1"))
    assert cast["state"] == native["state"] == "SUCCESS"
    async with open_factory() as api:
        board = await api.workflows().get_ranking(wf, include_all=True)
        best = await api.workflows().get_ranking(wf)
    assert run_ids(board) == [native["id"], cast["id"]]
    assert run_ids(best) == [native["id"]]
    assert board is not None
    assert board["ranking"][0]["results"] == [
        {"name": "score", "value": 2.0},
        {"name": "count", "value": 5},
        {"name": "model", "value": "m1"},
    ]
    assert board["ranking"][1]["results"] == [
        {"name": "score", "value": 0.75},
        {"name": "count", "value": 3},
        {"name": "model", "value": "42"},
        {"name": "note", "value": "7"},
    ]
    entry = board["ranking"][0]
    assert entry["run"] == {
        "id": native["id"],
        "createdAt": native["createdAt"],
        "startedAt": native["startedAt"],
        "finishedAt": native["finishedAt"],
    }
    assert entry["group"] == {"id": group, "name": "team"}


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (doc(None, 1, "m"), "missing value for column 'score' (path metrics/score)"),
        (json.dumps({"metrics": {"score": 1}, "count": 1}), "column 'model'"),
        (json.dumps({"metrics": 0.5, "count": 1, "info": {"model": {"name": "m"}}}), "score"),
        (doc("high", 1, "m"), "'high' of column 'score'"),
        (doc(1.0, 3.5, "m"), "3.5 of column 'count'"),
        (doc(1.0, True, "m"), "column 'count'"),
        (doc(1.0, 1, ["a"]), "column 'model'"),
        ("this is not JSON", "not valid JSON"),
        ("", "not valid JSON"),
    ],
    ids=[
        "missing",
        "missing-nested",
        "path-through-a-number",
        "not-a-float",
        "not-an-int",
        "bool-as-int",
        "list-as-string",
        "not-json",
        "empty",
    ],
)
async def test_a_run_with_bad_results_is_an_error_and_is_not_ranked(
    open_factory: LocalAPIFactory, tmp_path: Path, text: str, message: str
) -> None:
    wf, group = await real_workflow(open_factory, tmp_path / "wf")
    good = await run_with(open_factory, group, doc(0.1, 1, "m"))
    bad = await run_with(open_factory, group, text)
    assert bad["state"] == "ERROR"
    assert len(bad["messages"]) == 1
    assert message in bad["messages"][0]
    assert "results.json" in bad["messages"][0]
    async with open_factory() as api:
        # Not dropped silently: the run is listed, with its error.
        listed = (await api.runs().list_runs(group))["runs"]
        assert [(r["id"], r["state"]) for r in listed] == [
            (good["id"], "SUCCESS"),
            (bad["id"], "ERROR"),
        ]
        # ...and not ranked, nor are its files downloadable.
        assert run_ids(await api.workflows().get_ranking(wf, include_all=True)) == [good["id"]]
        with pytest.raises(UnknownRunError):
            await api.runs().get_result_archive(bad["id"])


async def test_a_missing_result_file_is_an_error_naming_it(
    open_factory: LocalAPIFactory, tmp_path: Path
) -> None:
    wf, group = await install(
        open_factory,
        tmp_path / "wf",
        [step("s", "true")],
        extra={"results": REAL_RESULTS},
    )
    async with open_factory() as api:
        run = await api.runs().start_run(group, [])
    final = await open_factory.wait_run(run["id"], timeout=30)
    assert final["state"] == "ERROR"
    assert "results.json" in final["messages"][0]
    assert "missing" in final["messages"][0]
    async with open_factory() as api:
        assert run_ids(await api.workflows().get_ranking(wf, include_all=True)) == []


@pytest.mark.parametrize("score", ["1e999", '"inf"', '"-Infinity"'])
async def test_an_infinite_score_is_a_bad_result_and_never_breaks_the_leaderboard(
    open_factory: LocalAPIFactory, tmp_path: Path, score: str
) -> None:
    wf, group = await real_workflow(open_factory, tmp_path / "wf")
    good = await run_with(open_factory, group, doc(0.1, 1, "m"))
    text = f'{{"metrics": {{"score": {score}}}, "count": 1, "info": {{"model": {{"name": "m"}}}}}}'
    odd = await run_with(open_factory, group, text)
    async with open_factory() as api:
        board = await api.workflows().get_ranking(wf, include_all=True)
    assert odd["state"] == "ERROR"
    assert odd["messages"][0].startswith("result file results.json")
    assert "column 'score'" in odd["messages"][0]
    assert run_ids(board) == [good["id"]]


async def test_a_result_schema_changed_by_another_process_is_read_again(
    open_factory: LocalAPIFactory, tmp_path: Path
) -> None:
    """A leaderboard read in one statement checks the schema it remembered."""
    wf = await new_workflow(open_factory, tmp_path / "changing")
    ids = await insert_ranked(
        open_factory.db,
        wf,
        [("g1", {"score": 1.0, "steps": 5}), ("g2", {"score": 2.0, "steps": 1})],
    )
    async with open_factory() as api:
        first = await api.workflows().get_ranking(wf)  # reads the workflow first
        again = await api.workflows().get_ranking(wf)  # one statement, schema checked
    assert again == first
    assert run_ids(again) == [ids[1], ids[0]]
    # Another process (here: a plain update) keeps only "steps", sorted ascending.
    steps_only = {
        "file": "results.json",
        "schema": [{"name": "steps", "label": "Steps", "dtype": "int", "required": False}],
        "orderBy": [{"name": "steps", "sortDesc": False}],
    }
    async with open_factory.db.write_session() as s:
        await s.execute(
            update(Workflow).where(Workflow.workflow_id == wf).values(result_schema=steps_only)
        )
    async with open_factory() as api:
        board = await api.workflows().get_ranking(wf)
        assert [c["name"] for c in board["schema"]] == ["steps"]
        assert run_ids(board) == [ids[1], ids[0]]
        assert [e["results"] for e in board["ranking"]] == [
            [{"name": "steps", "value": 1}],
            [{"name": "steps", "value": 5}],
        ]
        with pytest.raises(InvalidArgumentError, match="score"):
            await api.workflows().get_ranking(wf, order_by=[{"name": "score"}])
    # The schema removed: no leaderboard, also after one was read in one statement.
    async with open_factory.db.write_session() as s:
        await s.execute(
            update(Workflow).where(Workflow.workflow_id == wf).values(result_schema=None)
        )
    async with open_factory() as api:
        assert await api.workflows().get_ranking(wf) is None
