"""Concurrent runs of a one-step ``sleep 0.5`` workflow: the Dask engine beside the local one.

Usage: python -m benchmarks.bench_dask [--runs 256] [--workers 2] [--slots 128]

Each side gets a fresh base folder (SQLite database, fs file store). The local engine is
the default asyncio engine; the Dask engine starts its own ``LocalCluster`` of
``--workers`` worker processes with ``--slots`` runs each (its start-up is not measured).
Both start ``--runs`` runs at once and wait for all of them (the ``concurrent`` scenario
of the benchmark suite). Prints the machine, the date, N, the wall time and how many
runs succeeded, side by side.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import platform
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from benchmarks.ours_driver import Bench
from benchmarks.templates import write_template
from flowserv_async import LocalAPIFactory


async def measure(env: dict[str, str], runs: int) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as folder:
        template = write_template("sleep", Path(folder, "template"))
        env = {"FLOWSERV_API_DIR": str(Path(folder, "api")), "FLOWSERV_AUTH": "open", **env}
        opened = time.perf_counter()
        async with LocalAPIFactory(env=env) as factory:
            ready = time.perf_counter() - opened
            bench = Bench(factory)
            _, group_id = await bench.install(str(template), "sleep")
            await bench.wait(await bench.start(group_id))
            result = await bench.run_many(group_id, runs)
        result["open_s"] = ready
        return result


async def main(args: argparse.Namespace) -> None:
    local = await measure({}, args.runs)
    dask = await measure(
        {
            "FLOWSERV_BACKEND_MODULE": "flowserv_async.engine.dask",
            "FLOWSERV_BACKEND_CLASS": "DaskEngine",
            "FLOWSERV_DASK_WORKERS": str(args.workers),
            "FLOWSERV_DASK_SLOTS": str(args.slots),
        },
        args.runs,
    )
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores,")
    print(f"  Python {platform.python_version()}, load {os.getloadavg()[0]:.2f}")
    print(f"date: {datetime.now(UTC).isoformat(timespec='seconds')}")
    print(f"N: {args.runs} runs of sleep 0.5; Dask: {args.workers} workers x {args.slots} slots")
    print(f"{'metric':24} {'local':>10} {'dask':>10}")
    for name in ("wall_s", "start_s", "succeeded", "not_final", "loop_lag_max_ms", "open_s"):
        print(f"{name:24} {local.get(name, 0):10.2f} {dask.get(name, 0):10.2f}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=256)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--slots", type=int, default=128)
    logging.basicConfig(level=logging.ERROR)
    asyncio.run(main(parser.parse_args()))
