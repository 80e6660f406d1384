"""The reader of a post-processing input folder (``flowserv_async.postproc``)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from flowserv_async.postproc import RUNS_FILE, RunResult, Runs

LISTING = [
    {"id": "r1", "name": "team a", "files": ["results.json", "out/log.txt"]},
    {"id": "r2", "name": "team b", "files": ["results.json"]},
    {"id": "r3", "name": "team c", "files": []},
]


def write_folder(base: Path, listing: Any = LISTING) -> Path:
    """A folder as the service prepares it: runs.json and {run_id}/{file}."""
    base.mkdir(parents=True, exist_ok=True)
    (base / RUNS_FILE).write_text(json.dumps(listing), encoding="utf-8")
    if isinstance(listing, list):
        for run in listing:
            for key in run.get("files", []) if isinstance(run, dict) else []:
                path = base / str(run["id"]) / key
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_text(f"{run['id']}:{key}", encoding="utf-8")
    return base


def test_iterates_the_runs_in_rank_order(tmp_path: Path) -> None:
    runs = Runs(write_folder(tmp_path / "runs"))
    assert len(runs) == 3
    assert [(r.id, r.name) for r in runs] == [("r1", "team a"), ("r2", "team b"), ("r3", "team c")]
    assert [r.id for r in runs] == ["r1", "r2", "r3"]  # iterating twice gives the same
    assert runs.at_rank(0).files == ("results.json", "out/log.txt")


def test_accepts_a_string_path(tmp_path: Path) -> None:
    folder = write_folder(tmp_path / "runs")
    assert [r.id for r in Runs(str(folder))] == ["r1", "r2", "r3"]


def test_at_rank_and_get_run_return_the_same_run(tmp_path: Path) -> None:
    runs = Runs(write_folder(tmp_path / "runs"))
    second = runs.at_rank(1)
    assert isinstance(second, RunResult)
    assert second.id == "r2"
    assert runs.get_run("r2") == second
    assert runs.at_rank(2).name == "team c"


def test_get_file_gives_the_local_path_of_a_listed_file(tmp_path: Path) -> None:
    folder = write_folder(tmp_path / "runs")
    run = Runs(folder).get_run("r1")
    path = run.get_file("out/log.txt")
    assert path == folder / "r1" / "out" / "log.txt"
    assert path.read_text(encoding="utf-8") == "r1:out/log.txt"
    assert run.get_file("results.json").read_text(encoding="utf-8") == "r1:results.json"


def test_get_file_of_a_file_the_run_did_not_provide_is_a_key_error(tmp_path: Path) -> None:
    runs = Runs(write_folder(tmp_path / "runs"))
    with pytest.raises(KeyError, match=r"out/log\.txt"):
        runs.get_run("r2").get_file("out/log.txt")
    with pytest.raises(KeyError, match=r"results\.json"):
        runs.get_run("r3").get_file("results.json")


def test_unknown_run_is_a_key_error(tmp_path: Path) -> None:
    runs = Runs(write_folder(tmp_path / "runs"))
    with pytest.raises(KeyError, match="nope"):
        runs.get_run("nope")


@pytest.mark.parametrize("rank", [3, 100])
def test_rank_beyond_the_ranking_is_an_index_error(tmp_path: Path, rank: int) -> None:
    runs = Runs(write_folder(tmp_path / "runs"))
    with pytest.raises(IndexError):
        runs.at_rank(rank)


def test_an_empty_ranking_has_no_runs(tmp_path: Path) -> None:
    runs = Runs(write_folder(tmp_path / "runs", []))
    assert len(runs) == 0
    assert list(runs) == []
    with pytest.raises(IndexError):
        runs.at_rank(0)


def test_missing_runs_file_is_a_value_error_naming_it(tmp_path: Path) -> None:
    (tmp_path / "runs").mkdir()
    with pytest.raises(ValueError, match=r"runs\.json"):
        Runs(tmp_path / "runs")


@pytest.mark.parametrize(
    "content",
    [
        "not json",
        json.dumps({"id": "r1"}),
        json.dumps(["r1"]),
        json.dumps([{"id": "r1", "name": "a"}]),
        json.dumps([{"name": "a", "files": []}]),
        json.dumps([{"id": "r1", "name": "a", "files": "results.json"}]),
        json.dumps([{"id": "r1", "name": "a", "files": [1]}]),
        json.dumps([{"id": None, "name": "a", "files": []}]),
        json.dumps([{"id": "r1", "name": ["a"], "files": []}]),
    ],
    ids=[
        "not-json",
        "not-a-list",
        "entry-not-a-dict",
        "no-files",
        "no-id",
        "files-a-string",
        "file-not-a-string",
        "id-null",
        "name-a-list",
    ],
)
def test_malformed_runs_file_is_a_value_error(tmp_path: Path, content: str) -> None:
    folder = tmp_path / "runs"
    folder.mkdir()
    (folder / RUNS_FILE).write_text(content, encoding="utf-8")
    with pytest.raises(ValueError, match=r"runs\.json"):
        Runs(folder)
