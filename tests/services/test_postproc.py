"""Post-processing runs (SPEC 3.2, 5.4, 7) on both backends.

The group step writes ``results.json`` (its score) and ``notes.txt``; the post-processing
step copies ``runs/runs.json`` and a listing of its input folder to output files, so the
tests read what the step saw through ``workflows().get_result_file``.
"""

from __future__ import annotations

import csv
import io
import json
import tarfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import anyio
import pytest
from runs_helpers import PY, step
from sqlalchemy import select

from flowserv_async import DB, LocalAPIFactory
from flowserv_async.db.models import Run
from flowserv_async.errors import UnknownFileError, UnknownRunError

HELLOWORLD = Path(__file__).parents[2] / "flowserv_async" / "examples" / "helloworld"

SCORE = (
    "import json,sys; json.dump({'score': float(sys.argv[1])}, open('results.json','w'));"
    " open('notes.txt','w').write('score ' + sys.argv[1])"
)
# Copies runs.json and lists every file of the input folder with its content.
COLLECT = (
    "import os,shutil,json; os.makedirs('out', exist_ok=True);"
    " shutil.copy('runs/runs.json', 'out/runs.json');"
    " found={os.path.relpath(os.path.join(d,f)): open(os.path.join(d,f)).read()"
    " for d,_,fs in os.walk('runs') for f in fs};"
    " json.dump(found, open('out/files.json','w'))"
)
FAIL = "import sys; sys.stderr.write('postproc broke'); sys.exit(3)"


def template(postproc_command: str) -> dict[str, Any]:
    return {
        "results": {
            "file": "results.json",
            "schema": [{"name": "score", "label": "Score", "dtype": "float"}],
        },
        "postproc": {
            "workflow": {
                "files": {"inputs": ["runs"], "outputs": ["out/runs.json", "out/files.json"]},
                "steps": [step("collect", postproc_command)],
            },
            "inputs": {"files": ["results.json", "notes.txt"]},
            "outputs": [
                {"source": "out/runs.json", "key": "ranking", "title": "Ranking"},
                {"source": "out/files.json", "title": "Inputs"},
            ],
        },
    }


async def benchmark(
    make_factory: Callable[..., LocalAPIFactory],
    folder: Path,
    command: str = f'{PY} -c "{COLLECT}"',
    ignore_postproc: bool = False,
) -> tuple[LocalAPIFactory, str]:
    """An open factory and a workflow with results and post-processing (no group)."""
    factory = make_factory({"FLOWSERV_AUTH": "open"})
    await factory.open()
    spec = {
        "workflow": {
            "files": {"inputs": [], "outputs": ["results.json", "notes.txt"]},
            "steps": [step("score", f'{PY} -c "{SCORE}" ${{score}}')],
        },
        "parameters": [{"name": "score", "dtype": "float"}],
        **template(command),
    }
    await anyio.Path(folder).mkdir(parents=True)
    await anyio.Path(folder, "spec.json").write_text(json.dumps(spec))
    async with factory() as api:
        wf = await api.workflows().create_workflow(
            str(folder), name="bench", specfile="spec.json", ignore_postproc=ignore_postproc
        )
    return factory, wf["id"]


async def new_group(factory: LocalAPIFactory, wf_id: str, name: str) -> str:
    async with factory() as api:
        return str((await api.groups().create_group(wf_id, name))["id"])


async def run_score(factory: LocalAPIFactory, group_id: str, score: float) -> dict[str, Any]:
    """Run the group step to its end (SUCCESS expected)."""
    async with factory() as api:
        run = await api.runs().start_run(group_id, [{"name": "score", "value": score}])
    final = await factory.wait_run(run["id"], timeout=30)
    assert final["state"] == "SUCCESS", final
    return final


async def current_postproc(factory: LocalAPIFactory, wf_id: str) -> dict[str, Any] | None:
    """The workflow's post-processing run once it has ended, or None."""
    async with factory() as api:
        handle = await api.workflows().get_workflow(wf_id)
    if "postproc" not in handle:
        return None
    return await factory.wait_run(handle["postproc"]["id"], timeout=30)


async def postproc_rows(database: DB) -> list[Run]:
    """The post-processing runs (no group) in creation order."""
    async with database.session() as s:
        stmt = select(Run).where(Run.group_id.is_(None)).order_by(Run.created_at)
        return list((await s.scalars(stmt)).all())


async def read_output(factory: LocalAPIFactory, wf_id: str, name: str) -> Any:
    """The content of an output file of the current post-processing run."""
    async with factory() as api:
        board = await api.workflows().get_ranking(wf_id)
        assert board is not None
        files = {f["name"]: f["id"] for f in board["postproc"]["files"]}
        handle = await api.workflows().get_result_file(wf_id, files[name])
        return json.loads(await handle.read())


def ranking_ids(board: dict[str, Any] | None) -> list[str]:
    assert board is not None
    return [entry["run"]["id"] for entry in board["ranking"]]


async def test_each_new_ranking_gets_a_postproc_run_with_flowservs_layout(
    make_factory: Callable[..., LocalAPIFactory], tmp_path: Path, database: DB
) -> None:
    factory, wf_id = await benchmark(make_factory, tmp_path / "wf")
    g1, g2 = await new_group(factory, wf_id, "g1"), await new_group(factory, wf_id, "g2")
    await run_score(factory, g1, 0.3)
    high = await run_score(factory, g2, 0.9)
    better = await run_score(factory, g1, 0.5)  # replaces g1's first run in the ranking
    post = await current_postproc(factory, wf_id)
    assert post is not None
    assert post["state"] == "SUCCESS"
    assert "groupId" not in post
    assert post["workflowId"] == wf_id
    assert len(await postproc_rows(database)) == 3  # every success changed the ranking
    # runs.json lists the ranked runs (best per group) in rank order, as flowserv did.
    assert await read_output(factory, wf_id, "ranking") == [
        {"id": high["id"], "name": "g2", "files": ["results.json", "notes.txt"]},
        {"id": better["id"], "name": "g1", "files": ["results.json", "notes.txt"]},
    ]
    # The step found {run_id}/{file} for each ranked run, and nothing else.
    assert await read_output(factory, wf_id, "out/files.json") == {
        "runs/runs.json": json.dumps(
            [
                {"id": high["id"], "name": "g2", "files": ["results.json", "notes.txt"]},
                {"id": better["id"], "name": "g1", "files": ["results.json", "notes.txt"]},
            ]
        ),
        f"runs/{high['id']}/results.json": json.dumps({"score": 0.9}),
        f"runs/{high['id']}/notes.txt": "score 0.9",
        f"runs/{better['id']}/results.json": json.dumps({"score": 0.5}),
        f"runs/{better['id']}/notes.txt": "score 0.5",
    }
    async with factory() as api:
        handle = await api.workflows().get_workflow(wf_id)
        board = await api.workflows().get_ranking(wf_id)
        archive = await (await api.workflows().get_result_archive(wf_id)).read()
    assert handle["postproc"]["id"] == board["postproc"]["id"] == post["id"]  # type: ignore[index]
    assert handle["postproc"]["state"] == "SUCCESS"
    assert ranking_ids(board) == [high["id"], better["id"]]
    assert [(f["name"], f.get("title")) for f in board["postproc"]["files"]] == [  # type: ignore[index]
        ("out/files.json", "Inputs"),
        ("ranking", "Ranking"),  # named by the output's key, as in flowserv
    ]
    with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
        assert sorted(tar.getnames()) == ["out/files.json", "out/runs.json"]


async def test_result_file_must_belong_to_the_postproc_run(
    make_factory: Callable[..., LocalAPIFactory], tmp_path: Path
) -> None:
    factory, wf_id = await benchmark(make_factory, tmp_path / "wf")
    run = await run_score(factory, await new_group(factory, wf_id, "g1"), 0.5)
    assert await current_postproc(factory, wf_id) is not None
    group_file = run["files"][0]["id"]
    async with factory() as api:
        for file_id in ("nope", group_file):
            with pytest.raises(UnknownFileError):
                await api.workflows().get_result_file(wf_id, file_id)


async def test_an_unchanged_ranking_starts_no_new_postproc_run(
    make_factory: Callable[..., LocalAPIFactory], tmp_path: Path, database: DB
) -> None:
    factory, wf_id = await benchmark(make_factory, tmp_path / "wf")
    g1 = await new_group(factory, wf_id, "g1")
    best = await run_score(factory, g1, 0.9)
    first = await current_postproc(factory, wf_id)
    assert first is not None
    await run_score(factory, g1, 0.1)  # worse: g1's best run, and so the ranking, stay
    await run_score(factory, g1, 0.9)  # a tie goes to the earlier run: no change either
    assert [r.run_id for r in await postproc_rows(database)] == [first["id"]]
    assert (await current_postproc(factory, wf_id))["id"] == first["id"]  # type: ignore[index]
    # A worse run of a new group still changes the ranking: one more run.
    low = await run_score(factory, await new_group(factory, wf_id, "g2"), 0.05)
    assert len(await postproc_rows(database)) == 2
    second = await current_postproc(factory, wf_id)
    assert second is not None and second["id"] != first["id"]
    ranked = await read_output(factory, wf_id, "ranking")
    assert [r["id"] for r in ranked] == [best["id"], low["id"]]


async def test_a_failing_postproc_run_is_an_error_and_group_runs_stay_successful(
    make_factory: Callable[..., LocalAPIFactory], tmp_path: Path
) -> None:
    factory, wf_id = await benchmark(make_factory, tmp_path / "wf", command=f'{PY} -c "{FAIL}"')
    run = await run_score(factory, await new_group(factory, wf_id, "g1"), 0.5)
    post = await current_postproc(factory, wf_id)
    assert post is not None
    assert post["state"] == "ERROR"
    (message,) = post["messages"]
    assert "step 'collect'" in message
    assert "exit code 3" in message
    assert "postproc broke" in message
    async with factory() as api:
        assert (await api.runs().get_run(run["id"]))["state"] == "SUCCESS"
        board = await api.workflows().get_ranking(wf_id)
        assert ranking_ids(board) == [run["id"]]
        assert board["postproc"]["id"] == post["id"]  # type: ignore[index]
        assert board["postproc"]["state"] == "ERROR"  # type: ignore[index]
        with pytest.raises(UnknownRunError):
            await api.workflows().get_result_archive(wf_id)
        with pytest.raises(UnknownRunError):
            await api.workflows().get_result_file(wf_id, "any")


async def test_ignore_postproc_never_starts_one(
    make_factory: Callable[..., LocalAPIFactory], tmp_path: Path, database: DB
) -> None:
    factory, wf_id = await benchmark(make_factory, tmp_path / "wf", ignore_postproc=True)
    g1 = await new_group(factory, wf_id, "g1")
    first = await run_score(factory, g1, 0.5)
    second = await run_score(factory, g1, 0.7)
    assert await postproc_rows(database) == []
    async with factory() as api:
        assert "postproc" not in await api.workflows().get_workflow(wf_id)
        board = await api.workflows().get_ranking(wf_id, include_all=True)
        assert ranking_ids(board) == [second["id"], first["id"]]
        assert "postproc" not in board  # type: ignore[operator]
        with pytest.raises(UnknownRunError):
            await api.workflows().get_result_archive(wf_id)
        with pytest.raises(UnknownRunError):
            await api.workflows().get_result_file(wf_id, "any")


async def test_no_downloads_before_any_postproc_run(
    make_factory: Callable[..., LocalAPIFactory], tmp_path: Path
) -> None:
    factory, wf_id = await benchmark(make_factory, tmp_path / "wf")
    async with factory() as api:
        assert "postproc" not in await api.workflows().get_workflow(wf_id)
        assert "postproc" not in await api.workflows().get_ranking(wf_id)  # type: ignore[operator]
        with pytest.raises(UnknownRunError):
            await api.workflows().get_result_archive(wf_id)
        with pytest.raises(UnknownRunError):
            await api.workflows().get_result_file(wf_id, "any")


async def test_concurrent_successes_start_one_postproc_run_per_ranking(
    make_factory: Callable[..., LocalAPIFactory], tmp_path: Path, database: DB
) -> None:
    factory, wf_id = await benchmark(make_factory, tmp_path / "wf")
    groups = [await new_group(factory, wf_id, f"team{i}") for i in range(5)]
    async with anyio.create_task_group() as tg:
        for i in range(20):
            tg.start_soon(run_score, factory, groups[i % 5], float(i))
    # Each post-processing run was created with the success that triggered it.
    rows = await postproc_rows(database)
    keys = [r.postproc_key for r in rows]
    assert 1 <= len(keys) <= 20
    assert len(set(keys)) == len(keys)
    for row in rows:
        await factory.wait_run(row.run_id, timeout=30)
    # The current one is for the final ranking: the best run of each of the 5 groups.
    async with factory() as api:
        board = await api.workflows().get_ranking(wf_id)
    assert len(ranking_ids(board)) == 5
    assert board["postproc"]["state"] == "SUCCESS"  # type: ignore[index]
    ranked = await read_output(factory, wf_id, "ranking")
    assert [r["id"] for r in ranked] == ranking_ids(board)


async def test_the_postproc_run_follows_a_ranking_that_returns_after_a_deletion(
    make_factory: Callable[..., LocalAPIFactory], tmp_path: Path
) -> None:
    factory, wf_id = await benchmark(make_factory, tmp_path / "wf")
    g1 = await new_group(factory, wf_id, "g1")
    first = await run_score(factory, g1, 0.5)
    best = await run_score(factory, g1, 0.9)
    async with factory() as api:
        await api.runs().delete_run(best["id"])
    # The ranking is {first} again, as it was for the first post-processing run.
    await run_score(factory, g1, 0.1)
    post = await current_postproc(factory, wf_id)
    assert post is not None and post["state"] == "SUCCESS"
    ranked = await read_output(factory, wf_id, "ranking")
    assert [r["id"] for r in ranked] == [first["id"]]


async def test_hello_world_postproc_counts_ngrams_of_both_groups_in_rank_order(
    make_factory: Callable[..., LocalAPIFactory],
) -> None:
    factory = make_factory({"FLOWSERV_AUTH": "open"})
    await factory.open()
    async with factory() as api:
        wf = await api.workflows().create_workflow(source=str(HELLOWORLD))
        runs = {}
        for name, greeting in (("short", "Hi"), ("long", "Good morning")):
            group = await api.groups().create_group(wf["id"], name)
            upload = await api.uploads().upload_file(group["id"], b"Alice\nBob\n", "names.txt")
            arguments = [
                {"name": "names", "value": {"type": "$file", "value": {"fileId": upload["id"]}}},
                {"name": "greeting", "value": greeting},
                {"name": "sleeptime", "value": 0},
            ]
            runs[name] = await api.runs().start_run(group["id"], arguments)
    for name, run in runs.items():
        assert (await factory.wait_run(run["id"], timeout=30))["state"] == "SUCCESS", name
    # The longer greeting has the higher average line length: it ranks first.
    post = await current_postproc(factory, wf["id"])
    assert post is not None and post["state"] == "SUCCESS", post
    async with factory() as api:
        board = await api.workflows().get_ranking(wf["id"])
        assert [e["group"]["name"] for e in board["ranking"]] == ["long", "short"]  # type: ignore[index]
        assert board["postproc"]["id"] == post["id"]  # type: ignore[index]
        (ngrams,) = board["postproc"]["files"]  # type: ignore[index]
        assert ngrams["name"] == "ngrams"  # the output key, as in flowserv
        assert ngrams["title"] == "Most frequent 3-grams"
        handle = await api.workflows().get_result_file(wf["id"], ngrams["id"])
        text = (await handle.read()).decode()
    rows = list(csv.DictReader(io.StringIO(text)))
    assert [(r["rank"], r["run"], r["group"]) for r in rows] == [
        ("1", runs["long"]["id"], "long")
    ] * 5 + [("2", runs["short"]["id"], "short")] * 5
    counts = {(r["group"], r["ngram"]): int(r["count"]) for r in rows}
    assert counts[("long", "Goo")] == 2  # "Good morning, Alice!" and "... Bob!"
    assert counts[("short", "Hi,")] == 2


async def test_workflow_handle_shows_the_postproc_files(
    make_factory: Callable[..., LocalAPIFactory], tmp_path: Path
) -> None:
    factory, wf_id = await benchmark(make_factory, tmp_path / "wf")
    await run_score(factory, await new_group(factory, wf_id, "g1"), 0.5)
    post = await current_postproc(factory, wf_id)
    assert post is not None
    assert post["state"] == "SUCCESS"
    async with factory() as api:
        handle = await api.workflows().get_workflow(wf_id)
    assert [f["name"] for f in handle["postproc"]["files"]] == ["out/files.json", "ranking"]


async def test_a_success_reported_by_update_run_starts_postproc_too(
    make_factory: Callable[..., LocalAPIFactory], tmp_path: Path, database: DB
) -> None:
    factory, wf_id = await benchmark(make_factory, tmp_path / "wf")
    group_id = await new_group(factory, wf_id, "g1")
    async with database.write_session() as s:
        s.add(Run(run_id="custom", workflow_id=wf_id, group_id=group_id, state="RUNNING"))
    store = anyio.Path(tmp_path / "store")
    await store.mkdir()
    await (store / "results.json").write_text(json.dumps({"score": 0.7}))
    await (store / "notes.txt").write_text("n")
    async with factory() as api:
        done = await api.runs().update_run("custom", "SUCCESS", runstore=str(store))
    assert done["state"] == "SUCCESS"
    post = await current_postproc(factory, wf_id)
    assert post is not None
    assert post["state"] == "SUCCESS"
    listing = await read_output(factory, wf_id, "ranking")
    assert [r["id"] for r in listing] == ["custom"]


async def test_deleting_a_ranked_run_post_processes_the_ranking_that_remains(
    make_factory: Callable[..., LocalAPIFactory], tmp_path: Path, database: DB
) -> None:
    factory, wf_id = await benchmark(make_factory, tmp_path / "wf")
    a = await run_score(factory, await new_group(factory, wf_id, "g1"), 0.5)
    b = await run_score(factory, await new_group(factory, wf_id, "g2"), 0.9)
    c = await run_score(factory, await new_group(factory, wf_id, "g3"), 0.7)
    await current_postproc(factory, wf_id)
    assert [r["id"] for r in await read_output(factory, wf_id, "ranking")] == [
        b["id"],
        c["id"],
        a["id"],
    ]
    async with factory() as api:
        await api.runs().delete_run(b["id"])
    post = await current_postproc(factory, wf_id)
    assert post is not None and post["state"] == "SUCCESS"
    assert len(await postproc_rows(database)) == 4  # {a}, {a,b}, {a,b,c}, then {a,c}
    assert [r["id"] for r in await read_output(factory, wf_id, "ranking")] == [c["id"], a["id"]]


async def test_deleting_the_last_ranked_run_leaves_no_postproc_results(
    make_factory: Callable[..., LocalAPIFactory], tmp_path: Path
) -> None:
    factory, wf_id = await benchmark(make_factory, tmp_path / "wf")
    only = await run_score(factory, await new_group(factory, wf_id, "g1"), 0.5)
    assert await current_postproc(factory, wf_id) is not None
    async with factory() as api:
        await api.runs().delete_run(only["id"])
        handle = await api.workflows().get_workflow(wf_id)
        board = await api.workflows().get_ranking(wf_id)
    assert "postproc" not in handle
    assert board is not None and board["ranking"] == [] and "postproc" not in board


async def test_a_postproc_run_cancelled_by_a_shutdown_starts_again_on_open(
    make_factory: Callable[..., LocalAPIFactory], tmp_path: Path, database: DB
) -> None:
    # The post-processing step waits while the flag file exists, then collects.
    flag = tmp_path / "hold"
    await anyio.Path(flag).write_text("")
    wait = (
        "import os, time;"
        f" [time.sleep(0.05) for _ in iter(lambda: os.path.exists({str(flag)!r}), False)]"
    )
    command = f'{PY} -c "{wait}; {COLLECT}"'
    factory, wf_id = await benchmark(make_factory, tmp_path / "wf", command=command)
    run = await run_score(factory, await new_group(factory, wf_id, "g1"), 0.5)
    with anyio.fail_after(30):
        while True:
            async with factory() as api:
                handle = await api.workflows().get_workflow(wf_id)
            if handle.get("postproc", {}).get("state") == "RUNNING":
                break
            await anyio.sleep(0.05)
    await factory.aclose()
    (cancelled,) = await postproc_rows(database)
    assert cancelled.state == "CANCELED"
    await anyio.Path(flag).unlink()
    reopened = make_factory({"FLOWSERV_AUTH": "open"})
    await reopened.open()
    post = await current_postproc(reopened, wf_id)
    assert post is not None and post["id"] != cancelled.run_id
    assert post["state"] == "SUCCESS", post["messages"]
    assert [r["id"] for r in await read_output(reopened, wf_id, "ranking")] == [run["id"]]
    # Opening again starts nothing more: the new run did its work.
    await reopened.aclose()
    again = make_factory({"FLOWSERV_AUTH": "open"})
    await again.open()
    assert len(await postproc_rows(database)) == 2
