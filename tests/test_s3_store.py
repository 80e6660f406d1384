"""The service on an S3 file store: the hello-world workflow end to end on moto."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from pathlib import Path

import anyio
import pytest
from dbutil import backend_database
from runs_helpers import run_hello_world
from s3util import MotoS3

from flowserv_async import DB, LocalAPIFactory


@pytest.fixture
async def database(tmp_path: Path) -> AsyncIterator[DB]:
    """SQLite only: the store does not depend on the database backend."""
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
    done = await run_hello_world(factory)
    names = await anyio.to_thread.run_sync(s3.contents)
    wf, grp, run_id = done["workflow"], done["group"], done["run"]["id"]
    assert f"flowserv/{wf}/static/code/helloworld.py" in names
    assert f"flowserv/{wf}/groups/{grp}/files/{done['upload']}" in names
    assert f"flowserv/{wf}/runs/{run_id}/results/greetings.txt" in names
    assert all(name.startswith("flowserv/") for name in names)
    # Nothing but the database went to the local base folder's file store.
    assert not await anyio.Path(basedir, wf).exists()
