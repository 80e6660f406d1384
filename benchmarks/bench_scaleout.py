"""Scaling out: three API processes vs one on one PostgreSQL database.

Usage: python -m benchmarks.bench_scaleout [--calls 1000] [--connections 200] [--slots 8]

For one and for three processes (``flowserv-async serve --workers N`` with
``FLOWSERV_RUN_QUEUE=database``, a fresh database each), 1,000 concurrent calls are
issued at once with httpx (over at most ``--connections`` connections, a new one per
call):

- ``GET runs/{id}``: reads of one run;
- ``POST groups/{id}/runs``: starts of a one-step ``true`` workflow; the starts are
  queued in the database and executed by whichever process has a free slot
  (``FLOWSERV_MAX_CONCURRENT_RUNS=--slots`` per process), so ``drain_s`` is the time
  until every one of the 1,000 runs is SUCCESS.

Prints calls per second, p50/p99 latency, the servers' CPU seconds (all their
processes, steps included; per call in ``ms/call``) and the load average per case, side
by side; writes them to
``benchmarks/results/scaleout.json``. PostgreSQL comes from BENCH_POSTGRES (default
postgresql+asyncpg://postgres@127.0.0.1:5432/test); the benchmark creates a database of
its own next to that one and drops it afterwards.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import anyio
import httpx

from benchmarks.bench_http import clean_env, free_port, postgres_database, running, server_cpu
from benchmarks.bench_ranking import machine
from flowserv_async import LocalAPIFactory

RESULTS = Path(__file__).parent / "results" / "scaleout.json"
API_PATH = "/flowserv/api/v1"
TEMPLATE = {
    "workflow": {"steps": [{"name": "s", "action": {"environment": "sh", "commands": ["true"]}}]}
}


async def install(env: dict[str, str], folder: Path) -> str:
    """Install the workflow and a group (in this process, which executes nothing)."""
    await anyio.Path(folder).mkdir(parents=True)
    await anyio.Path(folder, "spec.json").write_text(json.dumps(TEMPLATE))
    async with LocalAPIFactory(env=env) as factory, factory() as api:
        wf = await api.workflows().create_workflow(str(folder), name="bench", specfile="spec.json")
        group = await api.groups().create_group(wf["id"], "team")
    return str(group["id"])


async def burst(
    client: httpx.AsyncClient,
    calls: int,
    connections: int,
    call: Callable[[], Awaitable[httpx.Response]],
) -> dict[str, Any]:
    """Issue ``calls`` calls at once; wall time, rate and latency percentiles.

    At most ``connections`` are in flight: the rest wait on a semaphore here, not in
    httpx's connection pool, whose waiting requests cost the client CPU quadratic in
    their number (with 800 waiting, the client spent 270 s of CPU on 4,000 calls and the
    servers sat idle). A call's latency includes its wait for a connection.
    """
    latencies: list[float] = []
    bodies: list[Any] = []
    slots = anyio.Semaphore(connections)

    async def one() -> None:
        start = time.perf_counter()
        async with slots:
            response = await call()
        latencies.append(time.perf_counter() - start)
        response.raise_for_status()
        bodies.append(response.json())

    start = time.perf_counter()
    async with anyio.create_task_group() as tg:
        for _ in range(calls):
            tg.start_soon(one)
    wall = time.perf_counter() - start
    cuts = statistics.quantiles(latencies, n=100)
    return {
        "wall_s": wall,
        "calls_per_s": calls / wall,
        "p50_ms": cuts[49] * 1000,
        "p99_ms": cuts[98] * 1000,
        "bodies": bodies,
    }


async def drain(client: httpx.AsyncClient, group_id: str, count: int) -> None:
    """Wait until the group has ``count`` runs, all SUCCESS (another end is an error)."""
    while True:
        runs = (await client.get(f"groups/{group_id}/runs")).json()["runs"]
        states = [run["state"] for run in runs]
        failed = set(states) - {"PENDING", "RUNNING", "SUCCESS"}
        if failed:
            bad = next(run["id"] for run in runs if run["state"] in failed)
            detail = (await client.get(f"runs/{bad}")).json()
            raise RuntimeError(f"run {bad} ended {detail['state']}: {detail.get('messages')}")
        if len(states) == count and set(states) == {"SUCCESS"}:
            return
        await anyio.sleep(0.2)


async def measure(processes: int, args: argparse.Namespace) -> list[dict[str, Any]]:
    rows = []
    with postgres_database() as url, tempfile.TemporaryDirectory() as tmp:
        basedir = Path(tmp, "api")
        env = {
            **clean_env(),
            "FLOWSERV_DATABASE": url,
            "FLOWSERV_AUTH": "open",
            "FLOWSERV_RUN_QUEUE": "database",
            "FLOWSERV_MAX_CONCURRENT_RUNS": str(args.slots),
            "FLOWSERV_API_DIR": str(basedir),
        }
        install_env = {k: v for k, v in env.items() if k != "FLOWSERV_RUN_QUEUE"}
        group_id = await install(install_env, Path(tmp, "wf"))
        port = free_port()
        base = f"http://127.0.0.1:{port}{API_PATH}"
        command = [
            *(sys.executable, "-m", "flowserv_async.cli", "--basedir", str(basedir)),
            *("serve", "--port", str(port), "--workers", str(processes)),
        ]
        # No keep-alive: a pooled connection that the server closes as it is reused
        # fails the call (uvicorn closes idle ones after 5 s; calls wait longer).
        limits = httpx.Limits(max_connections=args.connections, max_keepalive_connections=0)
        with running(command, env, base + "/") as server:
            async with httpx.AsyncClient(base_url=base + "/", limits=limits, timeout=300) as client:
                first = await client.post(f"groups/{group_id}/runs", json={"arguments": []})
                run_id = first.raise_for_status().json()["id"]
                await drain(client, group_id, 1)
                cases: list[tuple[str, Callable[[], Awaitable[httpx.Response]]]] = [
                    ("GET runs/{id}", lambda: client.get(f"runs/{run_id}")),
                    (
                        "POST groups/{id}/runs",
                        lambda: client.post(f"groups/{group_id}/runs", json={"arguments": []}),
                    ),
                ]
                for name, call in cases:
                    cpu = server_cpu(server.pid)
                    start = time.perf_counter()
                    result = await burst(client, args.calls, args.connections, call)
                    bodies = result.pop("bodies")
                    if name.startswith("POST"):
                        await drain(client, group_id, 1 + len(bodies))
                        result["drain_s"] = time.perf_counter() - start
                    rows.append(
                        {
                            "processes": processes,
                            "case": name,
                            "calls": args.calls,
                            "server_cpu_s": server_cpu(server.pid) - cpu,
                            "load": os.getloadavg()[0],
                            **result,
                        }
                    )
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--calls", type=int, default=1000)
    parser.add_argument("--connections", type=int, default=200)
    parser.add_argument("--slots", type=int, default=8)
    args = parser.parse_args()
    rows = []
    for processes in (1, 3):
        rows.extend(anyio.run(measure, processes, args))
    print(f"{datetime.now(UTC):%Y-%m-%d %H:%M} UTC, {machine()}, N={args.calls} calls")
    header = f"{'case':24} {'procs':>5} {'calls/s':>8} {'p50 ms':>8} {'p99 ms':>8}"
    print(header + f" {'drain s':>8} {'srv CPU s':>9} {'ms/call':>7} {'load':>5}")
    for row in rows:
        drain_s = f"{row['drain_s']:8.2f}" if "drain_s" in row else f"{'-':>8}"
        per_call = row["server_cpu_s"] * 1000 / row["calls"]
        print(
            f"{row['case']:24} {row['processes']:5d} {row['calls_per_s']:8.0f}"
            f" {row['p50_ms']:8.1f} {row['p99_ms']:8.1f} {drain_s}"
            f" {row['server_cpu_s']:9.2f} {per_call:7.2f} {row['load']:5.1f}"
        )
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    doc = {"date": datetime.now(UTC).isoformat(), "machine": machine(), "rows": rows}
    RESULTS.write_text(json.dumps(doc, indent=2))


if __name__ == "__main__":
    main()
