"""Time get_ranking on a leaderboard of many ranked runs (SQLite, in a temp folder).

Usage: python benchmarks/bench_ranking.py [--runs 10000] [--groups 500] [--repeat 20]

Prints the machine, the date, N, and median/p95 latency of get_ranking for the default
order and a two-column order, best-run-per-group and include_all; writes the numbers to
benchmarks/results/ranking.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import sqlite3
import statistics
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import anyio

from flowserv_async import LocalAPIFactory
from flowserv_async._util import new_id
from flowserv_async.db.models import Group, Ranking, Run

TEMPLATE = {
    "workflow": {"steps": [{"name": "s", "action": {"environment": "x", "commands": ["true"]}}]},
    "results": {
        "file": "results.json",
        "schema": [
            {"name": "score", "label": "Score", "dtype": "float"},
            {"name": "steps", "label": "Steps", "dtype": "int"},
            {"name": "tag", "label": "Tag", "dtype": "string", "required": False},
        ],
    },
}


def machine() -> dict[str, Any]:
    cpu = platform.processor()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "python": platform.python_version(),
        "sqlite": sqlite3.sqlite_version,
        "os": platform.platform(),
    }


async def fill(factory: LocalAPIFactory, folder: Path, runs: int, groups: int) -> str:
    await anyio.Path(folder, "spec.json").write_text(json.dumps(TEMPLATE))
    async with factory() as api:
        wf = await api.workflows().create_workflow(str(folder), name="bench", specfile="spec.json")
    rng = random.Random(7)
    group_ids = [new_id() for _ in range(groups)]
    start = datetime.now(UTC)
    async with factory.db.write_session() as s:
        s.add_all(
            Group(group_id=g, workflow_id=wf["id"], name=f"team {i}", workflow_spec={})
            for i, g in enumerate(group_ids)
        )
    for batch in range(0, runs, 1000):
        rows = []
        for i in range(batch, min(runs, batch + 1000)):
            values: dict[str, Any] = {"score": rng.random(), "steps": rng.randint(1, 100)}
            if i % 3:
                values["tag"] = rng.choice("abcdef")
            rows.append(
                (new_id(), group_ids[i % groups], start + timedelta(milliseconds=i), values)
            )
        async with factory.db.write_session() as s:
            s.add_all(
                Run(
                    run_id=r,
                    workflow_id=wf["id"],
                    group_id=g,
                    state="SUCCESS",
                    created_at=at,
                    started_at=at,
                    ended_at=at,
                )
                for r, g, at, _ in rows
            )
            await s.flush()  # runs before their rankings (no ORM relationship orders them)
            s.add_all(
                Ranking(run_id=r, workflow_id=wf["id"], group_id=g, values=v) for r, g, _, v in rows
            )
    return str(wf["id"])


async def timed(factory: LocalAPIFactory, wf: str, repeat: int, **kwargs: Any) -> dict[str, Any]:
    times, size = [], 0
    for _ in range(repeat):
        t = time.perf_counter()
        async with factory() as api:
            board = await api.workflows().get_ranking(wf, **kwargs)
        times.append((time.perf_counter() - t) * 1000)
        size = len(board["ranking"]) if board else 0
    times.sort()
    return {
        "median_ms": round(statistics.median(times), 1),
        "p95_ms": round(times[max(0, int(len(times) * 0.95) - 1)], 1),
        "rows": size,
    }


async def main(runs: int, groups: int, repeat: int) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as tmp:
        env = {"FLOWSERV_API_DIR": str(Path(tmp, "api")), "FLOWSERV_AUTH": "open"}
        async with LocalAPIFactory(env=env) as factory:
            t = time.perf_counter()
            wf = await fill(factory, Path(tmp), runs, groups)
            fill_s = time.perf_counter() - t
            two = [{"name": "steps", "sortDesc": False}, {"name": "score"}]
            cases = {
                "default order, best per group": await timed(factory, wf, repeat),
                "default order, include_all": await timed(factory, wf, repeat, include_all=True),
                "2 columns, best per group": await timed(factory, wf, repeat, order_by=two),
                "2 columns, include_all": await timed(
                    factory, wf, repeat, order_by=two, include_all=True
                ),
            }
    return {
        "date": datetime.now(UTC).isoformat(),
        "machine": machine(),
        "runs": runs,
        "groups": groups,
        "repeat": repeat,
        "fill_seconds": round(fill_s, 1),
        "cases": cases,
    }


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=10_000)
    parser.add_argument("--groups", type=int, default=500)
    parser.add_argument("--repeat", type=int, default=20)
    args = parser.parse_args()
    result = anyio.run(main, args.runs, args.groups, args.repeat)
    m = result["machine"]
    print(
        f"get_ranking on SQLite: {result['runs']} ranked runs in {result['groups']} groups, "
        f"{result['repeat']} calls each; {result['date']}"
    )
    print(f"machine: {m['cpu']}, {m['cores']} cores, Python {m['python']}, SQLite {m['sqlite']}")
    print(f"{'case':34s} {'median ms':>10s} {'p95 ms':>8s} {'rows':>6s}")
    for name, c in result["cases"].items():
        print(f"{name:34s} {c['median_ms']:10.1f} {c['p95_ms']:8.1f} {c['rows']:6d}")
    out = Path(__file__).parent / "results" / "ranking.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps(result, indent=2))
    print(f"written to {out}")
