"""One service process on the test database, with the database run queue.

``python service.py URL SCHEMA BASEDIR [NAME=VALUE ...]`` opens a LocalAPIFactory with
``FLOWSERV_RUN_QUEUE=database`` (and the given settings), prints ``{"ready": engine
id}`` and then reads commands from standard input, one per line:

- ``start GROUP_ID COUNT PREFIX PAUSE``: start COUNT runs with ``tag`` = PREFIX-0,
  PREFIX-1, ... and ``pause`` = PAUSE; prints ``{"started": [run ids]}``.

At the end of its input it closes the factory and exits.
"""

from __future__ import annotations

import json
import sys

import anyio

from flowserv_async import DB, LocalAPIFactory


async def main(url: str, schema: str, basedir: str, *settings: str) -> None:
    db = DB(url, connect_args={"server_settings": {"search_path": schema}})
    env = {
        "FLOWSERV_API_DIR": basedir,
        "FLOWSERV_AUTH": "open",
        "FLOWSERV_RUN_QUEUE": "database",
        **dict(item.split("=", 1) for item in settings),
    }
    try:
        factory = LocalAPIFactory(env=env, db=db)
        async with factory:
            print(json.dumps({"ready": factory.engine.engine_id}), flush=True)
            async for line in anyio.wrap_file(sys.stdin):
                await command(factory, line.split())
    finally:
        await db.dispose()


async def command(factory: LocalAPIFactory, words: list[str]) -> None:
    name, group_id, count, prefix, pause = words
    assert name == "start"
    started = []
    for index in range(int(count)):
        async with factory() as api:
            args = [
                {"name": "tag", "value": f"{prefix}-{index}"},
                {"name": "pause", "value": float(pause)},
            ]
            started.append((await api.runs().start_run(group_id, args))["id"])
    print(json.dumps({"started": started}), flush=True)


if __name__ == "__main__":
    anyio.run(main, *sys.argv[1:])
