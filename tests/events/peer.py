"""Another process on the test database: follows a workflow's events and starts a run.

``python peer.py URL SCHEMA BASEDIR WORKFLOW_ID GROUP_ID`` prints ``ready``, then, once
it has seen its own run and the parent's run (the first run that is not its own) end,
one JSON line ``{"own": run id, "seen": [[event id, type, run id, latency s]]}`` where
latency is receive time minus the event's time.
"""

from __future__ import annotations

import json
import sys
import time

import anyio

from flowserv_async import DB, LocalAPIFactory


async def main(url: str, schema: str, basedir: str, workflow_id: str, group_id: str) -> None:
    connect_args = {"server_settings": {"search_path": schema}} if schema else {}
    db = DB(url, connect_args=connect_args)
    env = {"FLOWSERV_API_DIR": basedir, "FLOWSERV_AUTH": "open"}
    seen: list[list[object]] = []
    ended: set[str] = set()
    try:
        factory = LocalAPIFactory(env=env, db=db)
        async with factory, factory.events(workflow_id=workflow_id) as stream:
            print("ready", flush=True)
            async with factory() as api:
                own = (await api.runs().start_run(group_id, []))["id"]
            async for event in stream:
                sent = event.time.timestamp()
                seen.append([event.id, str(event.type), event.run_id, time.time() - sent])
                if event.type == "run.state" and event.data["state"] == "SUCCESS":
                    ended.add(str(event.run_id))
                if own in ended and len(ended) == 2:
                    break
    finally:
        await db.dispose()
    print(json.dumps({"own": own, "seen": seen}), flush=True)


if __name__ == "__main__":
    anyio.run(main, *sys.argv[1:6])
