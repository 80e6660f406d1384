"""The service on an S3 file store: the hello-world workflow end to end on moto."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import anyio
import pytest
from dbutil import backend_database
from s3util import MotoS3

from flowserv_async import DB, LocalAPIFactory
from flowserv_async.examples.run_helloworld import HERE


@pytest.fixture
async def database(tmp_path: Path) -> AsyncIterator[DB]:
    """SQLite only: The store is independent of the database backend, tested elsewhere."""
    async with backend_database("sqlite", tmp_path) as db:
        yield db


async def test_hello_world_runs_with_its_files_on_s3(
    s3: MotoS3, make_factory: Callable[..., LocalAPIFactory], tmp_path: Path, basedir: Path
) -> None:
    spec = tmp_path / "filestore.yaml"
    args = "".join(f"  {name}: {value}\n" for name, value in s3.args("flowserv").items())
    await anyio.Path(spec).write_text(f"type: s3\nargs:\n{args}")
    factory = make_factory({"FLOWSERV_FILESTORE": str(spec), "FLOWSERV_AUTH": "open"})
    await factory.open()
    async with factory() as api:
        workflow = await api.workflows().create_workflow(source=str(HERE))
        group = await api.groups().create_group(workflow["id"], "team")
        upload = await api.uploads().upload_file(group["id"], b"Alice\nBob\n", "names.txt")
        arguments: list[dict[str, Any]] = [
            {"name": "names", "value": {"type": "$file", "value": {"fileId": upload["id"]}}},
            {"name": "greeting", "value": "Hi"},
        ]
        run = await api.runs().start_run(group["id"], arguments)
    run = await factory.wait_run(run["id"], timeout=60)
    assert run["state"] == "SUCCESS", run.get("messages")
    async with factory() as api:
        greetings = next(f for f in run["files"] if f["name"].endswith("greetings.txt"))
        handle = await api.runs().get_result_file(run["id"], greetings["id"])
        assert (await handle.read()).decode() == "Hi, Alice!\nHi, Bob!\n"
    names = await anyio.to_thread.run_sync(s3.contents)
    wf, grp, run_id = workflow["id"], group["id"], run["id"]
    assert f"flowserv/{wf}/static/code/helloworld.py" in names
    assert f"flowserv/{wf}/groups/{grp}/files/{upload['id']}" in names
    assert f"flowserv/{wf}/runs/{run_id}/{greetings['name']}" in names
    assert all(name.startswith("flowserv/") for name in names)
    # Nothing but the database went to the local base folder's file store.
    assert not await anyio.Path(basedir, wf).exists()
