"""Post-processing runs (SPEC 7): trigger rule, input layout, one run per ranking."""

from __future__ import annotations

import io
import json
import tarfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import anyio
import pytest
from runs_helpers import PY, install, step
from sqlalchemy import select

from flowserv_async import DB, LocalAPIFactory
from flowserv_async.db.models import Run
from flowserv_async.errors import UnknownRunError

SCORE = "import json,sys; json.dump({'score': float(sys.argv[1])}, open('results.json','w'))"
# Copies runs.json and lists the input files it finds, so the test can check the layout.
COLLECT = (
    "import json,os; docs=json.load(open('runs/runs.json'));"
    " found=sorted(os.path.join(d,f) for d,_,fs in os.walk('runs') for f in fs);"
    " json.dump({'runs': docs, 'files': found}, open('summary.json','w'))"
)


def template(postproc_command: str) -> dict[str, Any]:
    return {
        "results": {
            "file": "results.json",
            "schema": [{"name": "score", "label": "Score", "dtype": "float"}],
        },
        "postproc": {
            "workflow": {
                "files": {"inputs": ["runs"], "outputs": ["summary.json"]},
                "steps": [step("collect", postproc_command)],
            },
            "inputs": {"files": ["results.json"]},
            "outputs": [{"source": "summary.json", "title": "Summary"}],
        },
    }


async def setup(
    make_factory: Callable[..., LocalAPIFactory],
    folder: Path,
    command: str = f'{PY} -c "{COLLECT}"',
    **kw: Any,
) -> tuple[LocalAPIFactory, str, str]:
    factory = make_factory({"FLOWSERV_AUTH": "open"})
    await factory.open()
    wf_id, group_id = await install(
        factory,
        folder,
        [step("s", f'{PY} -c "{SCORE}" ${{score}}')],
        parameters=[{"name": "score", "dtype": "float"}],
        outputs=["results.json"],
        extra=template(command),
        group="g1",
    )
    if kw.get("ignore"):
        async with factory() as api:
            await api.workflows().delete_workflow(wf_id)
            wf_id = (
                await api.workflows().create_workflow(
                    str(folder), name="ignored", specfile="spec.json", ignore_postproc=True
                )
            )["id"]
            group_id = (await api.groups().create_group(wf_id, "g1"))["id"]
    return factory, wf_id, group_id


async def run_score(factory: LocalAPIFactory, group_id: str, score: float) -> dict[str, Any]:
    async with factory() as api:
        run = await api.runs().start_run(group_id, [{"name": "score", "value": score}])
    return await factory.wait_run(run["id"], timeout=30)


async def postproc_of(factory: LocalAPIFactory, wf_id: str) -> dict[str, Any] | None:
    async with factory() as api:
        handle = await api.workflows().get_workflow(wf_id)
    if "postproc" not in handle:
        return None
    return await factory.wait_run(handle["postproc"]["id"], timeout=30)


async def postproc_runs(database: DB) -> list[Run]:
    async with database.session() as s:
        return list((await s.scalars(select(Run).where(Run.group_id.is_(None)))).all())


async def test_ranked_runs_start_one_postproc_run_with_flowservs_layout(
    make_factory: Callable[..., LocalAPIFactory], tmp_path: Path, database: DB
) -> None:
    factory, wf_id, g1 = await setup(make_factory, tmp_path / "wf")
    async with factory() as api:
        g2 = (await api.groups().create_group(wf_id, "g2"))["id"]
    low = await run_score(factory, g1, 0.3)
    high = await run_score(factory, g2, 0.9)
    # Wait for the post-processing of the latest ranking (two runs).
    with anyio.fail_after(30):
        while True:
            post = await postproc_of(factory, wf_id)
            if post is not None and len(await postproc_runs(database)) == 2:
                break
            await anyio.sleep(0.05)
    post = await postproc_of(factory, wf_id)
    assert post is not None and post["state"] == "SUCCESS"
    assert "groupId" not in post
    async with factory() as api:
        summary_file = post["files"][0]
        assert summary_file["title"] == "Summary"
        handle = await api.workflows().get_result_file(wf_id, summary_file["id"])
        summary = json.loads(await handle.read())
        board = await api.workflows().get_ranking(wf_id)
        archive = await (await api.workflows().get_result_archive(wf_id)).read()
    assert summary["runs"] == [
        {"id": high["id"], "name": "g2", "files": ["results.json"]},
        {"id": low["id"], "name": "g1", "files": ["results.json"]},
    ]
    assert summary["files"] == sorted(
        ["runs/runs.json", f"runs/{high['id']}/results.json", f"runs/{low['id']}/results.json"]
    )
    assert board["postproc"]["id"] == post["id"]
    with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
        assert tar.getnames() == ["summary.json"]


async def test_unchanged_ranking_starts_no_new_postproc_run(
    make_factory: Callable[..., LocalAPIFactory], tmp_path: Path, database: DB
) -> None:
    factory, wf_id, g1 = await setup(make_factory, tmp_path / "wf")
    await run_score(factory, g1, 0.9)
    first = await postproc_of(factory, wf_id)
    await run_score(factory, g1, 0.1)  # worse: the best run of g1 stays the same
    assert len(await postproc_runs(database)) == 1
    assert (await postproc_of(factory, wf_id))["id"] == first["id"]  # type: ignore[index]


async def test_failing_postproc_is_an_error_and_group_runs_stay_success(
    make_factory: Callable[..., LocalAPIFactory], tmp_path: Path
) -> None:
    factory, wf_id, g1 = await setup(make_factory, tmp_path / "wf", command="false")
    run = await run_score(factory, g1, 0.5)
    post = await postproc_of(factory, wf_id)
    assert post is not None and post["state"] == "ERROR"
    async with factory() as api:
        assert (await api.runs().get_run(run["id"]))["state"] == "SUCCESS"
        for call in (
            api.workflows().get_result_archive(wf_id),
            api.workflows().get_result_file(wf_id, "x"),
        ):
            with pytest.raises(UnknownRunError):
                await call


async def test_ignore_postproc_never_starts_one(
    make_factory: Callable[..., LocalAPIFactory], tmp_path: Path, database: DB
) -> None:
    factory, wf_id, g1 = await setup(make_factory, tmp_path / "wf", ignore=True)
    await run_score(factory, g1, 0.5)
    assert await postproc_runs(database) == []
    with pytest.raises(UnknownRunError):
        async with factory() as api:
            await api.workflows().get_result_archive(wf_id)


async def test_concurrent_successes_start_at_most_one_run_per_ranking(
    make_factory: Callable[..., LocalAPIFactory], tmp_path: Path, database: DB
) -> None:
    factory, wf_id, g1 = await setup(make_factory, tmp_path / "wf")
    async with factory() as api:
        groups = [g1] + [
            (await api.groups().create_group(wf_id, f"team{i}"))["id"] for i in range(4)
        ]
    async with anyio.create_task_group() as tg:
        for i in range(20):
            tg.start_soon(run_score, factory, groups[i % 5], float(i))
    runs = await postproc_runs(database)
    keys = [r.postproc_key for r in runs]
    assert 1 <= len(keys) <= 20
    assert len(set(keys)) == len(keys)
    for run in runs:
        await factory.wait_run(run.run_id, timeout=30)
