"""Run events: latency from the engine's write to a consumer, and fan-out under load.

Usage: python -m benchmarks.bench_events [--runs 100] [--subscribers 1000] [--concurrent 64]

Scenarios (each prints N, machine, date and load; numbers go to
benchmarks/results/events.json):

- latency: ``--runs`` no-op runs (8 at a time); for every event, receive time minus the
  event's time (taken when the change is made, before its commit). In-process on SQLite
  and PostgreSQL, and cross-process on PostgreSQL (a child process executes the runs;
  LISTEN/NOTIFY wakes the parent). Baseline: before events, ``wait_run`` polled the
  database every 0.25 s for runs of another process and ``runs logs --follow`` polled
  every 0.2 s: on average half of that, at worst all of it.
- fan-out: ``--subscribers`` streams on one workflow while ``--concurrent`` runs of
  ``sleep 0.5`` execute (SQLite): loop lag (a 10 ms ticker's overshoot), events
  delivered per subscriber, wall time; side by side with no subscriber and with one
  subscriber that never reads.

PostgreSQL comes from BENCH_POSTGRES (default postgresql+asyncpg://postgres@127.0.0.1:5432/test),
in a schema of its own that is dropped afterwards.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import anyio
from anyio.streams.text import TextReceiveStream
from sqlalchemy import text

from benchmarks.bench_ranking import machine
from flowserv_async import DB, LocalAPIFactory

POSTGRES = os.environ.get("BENCH_POSTGRES", "postgresql+asyncpg://postgres@127.0.0.1:5432/test")
RESULTS = Path(__file__).parent / "results" / "events.json"


def template(command: str) -> dict[str, Any]:
    step = {"name": "s", "action": {"environment": "x", "commands": [command]}}
    return {"workflow": {"steps": [step]}}


@asynccontextmanager
async def database(kind: str, folder: Path) -> AsyncIterator[tuple[DB, str]]:
    """A database and its schema ("" for SQLite)."""
    if kind == "sqlite":
        db = DB(f"sqlite+aiosqlite:///{folder / 'flowserv.db'}")
        await db.create_schema()
        try:
            yield db, ""
        finally:
            await db.dispose()
        return
    schema = f"bench_{uuid.uuid4().hex}"
    admin = DB(POSTGRES)
    async with admin.engine.begin() as conn:
        await conn.execute(text(f'CREATE SCHEMA "{schema}"'))
    db = DB(POSTGRES, connect_args={"server_settings": {"search_path": schema}})
    try:
        await db.create_schema()
        yield db, schema
    finally:
        await db.dispose()
        async with admin.engine.begin() as conn:
            await conn.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
        await admin.dispose()


async def install(factory: LocalAPIFactory, folder: Path, command: str) -> tuple[str, str]:
    await anyio.Path(folder).mkdir(parents=True, exist_ok=True)
    await anyio.Path(folder, "spec.json").write_text(json.dumps(template(command)))
    async with factory() as api:
        wf = await api.workflows().create_workflow(str(folder), name="b", specfile="spec.json")
        group = await api.groups().create_group(wf["id"], "team")
    return wf["id"], group["id"]


async def run_many(factory: LocalAPIFactory, group_id: str, runs: int, at_once: int) -> None:
    limit = anyio.Semaphore(at_once)

    async def one() -> None:
        async with limit:
            async with factory() as api:
                run = await api.runs().start_run(group_id, [])
            await factory.wait_run(run["id"], timeout=120)

    async with anyio.create_task_group() as tg:
        for _ in range(runs):
            tg.start_soon(one)


def summary(latencies: list[float]) -> dict[str, Any]:
    ordered = sorted(latencies)
    if not ordered:
        return {"n": 0}
    return {
        "n": len(ordered),
        "p50_ms": round(1000 * statistics.median(ordered), 2),
        "p99_ms": round(1000 * ordered[min(len(ordered) - 1, int(0.99 * len(ordered)))], 2),
        "max_ms": round(1000 * ordered[-1], 2),
    }


async def count_until(stream: Any, expected: int, latencies: list[float] | None) -> int:
    seen = 0
    async for event in stream:
        if latencies is not None:
            latencies.append(time.time() - event.time.timestamp())
        if event.type == "run.state" and event.data["state"] in ("SUCCESS", "ERROR"):
            seen += 1
            if seen == expected:
                return seen
    return seen


async def latency_in_process(kind: str, runs: int, folder: Path) -> dict[str, Any]:
    async with database(kind, folder) as (db, _):
        env = {"FLOWSERV_API_DIR": str(folder), "FLOWSERV_AUTH": "open"}
        async with LocalAPIFactory(env=env, db=db) as factory:
            wf_id, group_id = await install(factory, folder / "wf", "true")
            latencies: list[float] = []
            async with factory.events(workflow_id=wf_id) as stream, anyio.create_task_group() as tg:
                tg.start_soon(run_many, factory, group_id, runs, 8)
                await count_until(stream, runs, latencies)
    return summary(latencies)


async def latency_cross_process(runs: int, folder: Path) -> dict[str, Any]:
    async with database("postgres", folder) as (db, schema):
        env = {"FLOWSERV_API_DIR": str(folder), "FLOWSERV_AUTH": "open"}
        async with LocalAPIFactory(env=env, db=db) as factory:
            wf_id, group_id = await install(factory, folder / "wf", "true")
            latencies: list[float] = []
            command = [sys.executable, "-m", "benchmarks.bench_events", "--child"]
            command += [schema, str(folder), group_id, str(runs)]
            stream = factory.events(workflow_id=wf_id)
            async with stream, await anyio.open_process(command) as child:
                await count_until(stream, runs, latencies)
                assert child.stdout is not None
                output = "".join([chunk async for chunk in TextReceiveStream(child.stdout)])
                if await child.wait() != 0:
                    raise RuntimeError(f"the child failed: {output}")
    return summary(latencies)


async def child(schema: str, basedir: str, group_id: str, runs: str) -> None:
    db = DB(POSTGRES, connect_args={"server_settings": {"search_path": schema}})
    env = {"FLOWSERV_API_DIR": basedir, "FLOWSERV_AUTH": "open"}
    try:
        async with LocalAPIFactory(env=env, db=db) as factory:
            await run_many(factory, group_id, int(runs), 8)
    finally:
        await db.dispose()


async def lag_ticker(samples: list[float]) -> None:
    while True:
        start = anyio.current_time()
        await anyio.sleep(0.01)
        samples.append(anyio.current_time() - start - 0.01)


async def fan_out(subscribers: int, concurrent: int, idle: int, folder: Path) -> dict[str, Any]:
    async with database("sqlite", folder) as (db, _):
        env = {"FLOWSERV_API_DIR": str(folder), "FLOWSERV_AUTH": "open"}
        async with LocalAPIFactory(env=env, db=db) as factory:
            wf_id, group_id = await install(factory, folder / "wf", "sleep 0.5")
            await run_many(factory, group_id, 2, 2)  # warm-up
            lag: list[float] = []
            delivered = [0] * subscribers
            target: list[int] = []
            finished = [0]
            reached = anyio.Event()

            def arrived(count: int) -> None:
                if target and count == target[0]:
                    finished[0] += 1
                    if finished[0] == subscribers:
                        reached.set()

            async def subscriber(i: int, stream: Any) -> None:
                async with stream:
                    async for _ in stream:
                        delivered[i] += 1
                        arrived(delivered[i])

            idle_streams = [factory.events(workflow_id=wf_id) for _ in range(idle)]
            streams = [factory.events(workflow_id=wf_id) for _ in range(subscribers)]
            for stream in [*idle_streams, *streams]:
                await stream.start()
            first = max([s.position for s in streams], default=0)
            async with anyio.create_task_group() as tg:
                for i, stream in enumerate(streams):
                    tg.start_soon(subscriber, i, stream)
                tg.start_soon(lag_ticker, lag)
                started = time.perf_counter()
                await run_many(factory, group_id, concurrent, concurrent)
                wall = time.perf_counter() - started
                async with factory.events(workflow_id=wf_id, after=first) as replay:
                    expected = 0
                    with anyio.move_on_after(0.5):
                        async for _ in replay:
                            expected += 1
                target.append(expected)
                finished[0] = sum(1 for d in delivered if d >= expected)
                if subscribers and finished[0] < subscribers:
                    with anyio.move_on_after(30):
                        await reached.wait()
                tg.cancel_scope.cancel()
            for stream in idle_streams:
                await stream.aclose()
    return {
        "subscribers": subscribers,
        "idle_subscribers": idle,
        "runs": concurrent,
        "wall_s": round(wall, 3),
        "loop_lag_p99_ms": summary(lag).get("p99_ms"),
        "loop_lag_max_ms": summary(lag).get("max_ms"),
        "events_expected": expected,
        "delivered_min": min(delivered) if delivered else None,
        "delivered_max": max(delivered) if delivered else None,
    }


async def main(args: argparse.Namespace) -> dict[str, Any]:
    report: dict[str, Any] = {
        "machine": machine(),
        "date": datetime.now(UTC).isoformat(),
        "loadavg": os.getloadavg(),
        "note": "CPUs shared with other jobs while measured",
    }
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        report["latency_in_process_sqlite"] = await latency_in_process(
            "sqlite", args.runs, root / "a"
        )
        report["latency_in_process_postgres"] = await latency_in_process(
            "postgres", args.runs, root / "b"
        )
        report["latency_cross_process_postgres"] = await latency_cross_process(
            args.runs, root / "c"
        )
        report["fan_out_none"] = await fan_out(0, args.concurrent, 0, root / "d")
        report["fan_out_idle_consumer"] = await fan_out(0, args.concurrent, 1, root / "e")
        report["fan_out_subscribers"] = await fan_out(
            args.subscribers, args.concurrent, 0, root / "f"
        )
    return report


def cli() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=100)
    parser.add_argument("--subscribers", type=int, default=1000)
    parser.add_argument("--concurrent", type=int, default=64)
    parser.add_argument("--child", nargs=4, metavar=("SCHEMA", "BASEDIR", "GROUP", "RUNS"))
    args = parser.parse_args()
    if args.child:
        anyio.run(child, *args.child)
        return
    report = anyio.run(main, args)
    print(json.dumps(report, indent=2))
    RESULTS.parent.mkdir(exist_ok=True)
    RESULTS.write_text(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    cli()
