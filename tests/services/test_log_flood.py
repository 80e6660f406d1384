"""A run that floods its output: the stored log and each get_log answer stay bounded."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import anyio
import pytest
from runs_helpers import PY, install, start, step
from sqlalchemy import func, select

from flowserv_async import DB, LocalAPIFactory
from flowserv_async.db.models import RunLogLine
from flowserv_async.errors import InvalidArgumentError

MB = 1 << 20
# 100 MB in lines of 8 KB, paced: 1 MB, then a pause that lets the engine store it.
FLOOD = (
    "import sys, time\n"
    "line = 'x' * 8191 + '\\n'\n"
    "for i in range(100):\n"
    "    sys.stdout.write(line * 128)\n"
    "    sys.stdout.flush()\n"
    "    time.sleep(0.02)\n"
    "print('the end')\n"
)


async def stored_log_bytes(database: DB, run_id: str) -> int:
    stmt = select(func.coalesce(func.sum(func.length(RunLogLine.text) + 1), 0)).where(
        RunLogLine.run_id == run_id
    )
    async with database.session() as session:
        return int((await session.execute(stmt)).scalar_one())


@pytest.mark.timeout(180)
async def test_a_100_mb_output_flood_keeps_a_bounded_tail(
    make_factory: Callable[..., LocalAPIFactory], database: DB, tmp_path: Path
) -> None:
    factory = make_factory({"FLOWSERV_AUTH": "open"})
    await factory.open()
    folder = tmp_path / "flood"
    await anyio.Path(folder).mkdir()
    await anyio.Path(folder, "flood.py").write_text(FLOOD)
    _, group_id = await install(factory, folder, [step("flood", f"{PY} flood.py")])
    run = await start(factory, group_id)
    final = await factory.wait_run(run["id"], timeout=150)
    assert final["state"] == "SUCCESS"
    assert await stored_log_bytes(database, run["id"]) <= MB
    async with factory() as api:
        page = await api.runs().get_log(run["id"])
    assert len(json.dumps(page)) < 2 * MB
    note, *lines = page["lines"]
    assert note["stream"] == "engine"
    assert "earlier line(s) dropped: the run log keeps the last" in note["text"]
    assert lines[-1]["text"] == "the end"
    assert all(line["text"] == "x" * 8191 for line in lines[:-1])
    assert page["next"] == 12801


@pytest.mark.parametrize("database", ["sqlite"], indirect=True)
async def test_get_log_pages_by_limit(
    make_factory: Callable[..., LocalAPIFactory], tmp_path: Path
) -> None:
    factory = make_factory({"FLOWSERV_AUTH": "open"})
    await factory.open()
    command = f'{PY} -c "print(*range(25), sep=chr(10))"'
    _, group_id = await install(factory, tmp_path / "count", [step("count", command)])
    run = await start(factory, group_id)
    await factory.wait_run(run["id"], timeout=30)
    texts: list[str] = []
    offset = 0
    async with factory() as api:
        while True:
            page = await api.runs().get_log(run["id"], offset, limit=10)
            assert len(page["lines"]) <= 10
            texts += [line["text"] for line in page["lines"]]
            if page["next"] == offset:
                break
            offset = page["next"]
    assert texts == [str(i) for i in range(25)]


@pytest.mark.parametrize("database", ["sqlite"], indirect=True)
@pytest.mark.parametrize("limit", [0, -1, 10_001, 2.5, True, "10"])
async def test_get_log_refuses_a_bad_limit(
    make_factory: Callable[..., LocalAPIFactory], tmp_path: Path, limit: object
) -> None:
    factory = make_factory({"FLOWSERV_AUTH": "open"})
    await factory.open()
    _, group_id = await install(factory, tmp_path / "one", [step("one", "echo one")])
    run = await start(factory, group_id)
    await factory.wait_run(run["id"], timeout=30)
    with pytest.raises(InvalidArgumentError, match="log limit must be an integer from 1 to"):
        async with factory() as api:
            await api.runs().get_log(run["id"], limit=limit)  # type: ignore[arg-type]
