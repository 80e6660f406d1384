"""Scenario driver for flowserv-async (our side of the benchmarks).

Run by the harness in a subprocess of the project's interpreter, so that both sides are
measured the same way (a fresh process whose process tree the harness samples)::

    python -m benchmarks.ours_driver --scenario noop --template DIR --basedir DIR --params '{}'

Same protocol and metric names as ``flowserv_driver``: ``@mark start`` / ``@mark stop``
frame the measured window, the last stdout line is ``@result {json}``. Everything goes
through the public API (SPEC 1 and 3): sessions from ``LocalAPIFactory``, one per call,
and ``factory.wait_run`` to learn that a run is final.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import os
import sys
import time
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path
from types import TracebackType
from typing import Any

import psutil
from sqlalchemy import text

from benchmarks.driverlib import (
    CancelTally,
    alive,
    count_named,
    kill,
    mark,
    names,
    percentile,
    storm_result,
    summary_ms,
)
from benchmarks.monitor import launchers
from flowserv_async import DB, LocalAPIFactory, __version__
from flowserv_async._util import freeze_startup_heap

# Set by the harness (--postgres): run on this PostgreSQL database instead of SQLite.
POSTGRES_VARIABLE = "BENCH_POSTGRES_URL"
FINAL_STATES = frozenset({"SUCCESS", "ERROR", "CANCELED"})
SPECFILE = "benchmark.yaml"
WAIT_TIMEOUT = 60.0

ApiCall = Callable[[Any], Awaitable[Any]]


# -- Helpers ------------------------------------------------------------------------------


class LoopLag:
    """Measures how late a ticker that sleeps ``interval`` seconds wakes up."""

    def __init__(self, interval: float = 0.005) -> None:
        self.interval = interval
        self.samples: list[float] = []
        self._stop = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    async def _tick(self) -> None:
        while not self._stop.is_set():
            t0 = time.perf_counter()
            await asyncio.sleep(self.interval)
            self.samples.append(time.perf_counter() - t0 - self.interval)

    async def __aenter__(self) -> LoopLag:
        self._task = asyncio.create_task(self._tick())
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._stop.set()
        if self._task is not None:
            await self._task

    def metrics(self) -> dict[str, Any]:
        return {
            "loop_lag_max_ms": max(self.samples) * 1000 if self.samples else None,
            "loop_lag_p99_ms": (percentile(self.samples, 99) or 0.0) * 1000,
        }


class Bench:
    """One flowserv-async service (SQLite, file store and run folders under a base dir)."""

    def __init__(self, factory: LocalAPIFactory, env: dict[str, str]) -> None:
        self.factory = factory
        self.env = env

    async def call(self, fn: ApiCall) -> Any:
        """Run ``fn(api)`` in its own session, as a request handler would."""
        async with self.factory() as api:
            return await fn(api)

    async def install(self, template: str, name: str) -> tuple[str, str]:
        """Install the template and create one group; return (workflow id, group id)."""
        wf = await self.call(
            lambda api: api.workflows().create_workflow(
                source=template, name=name, specfile=SPECFILE
            )
        )
        group = await self.call(lambda api: api.groups().create_group(wf["id"], "bench"))
        return str(wf["id"]), str(group["id"])

    async def start(self, group_id: str, arguments: list[dict[str, Any]] | None = None) -> str:
        handle = await self.call(
            lambda api: api.runs().start_run(group_id, arguments=arguments or [])
        )
        return str(handle["id"])

    async def wait(self, run_id: str) -> tuple[str, float]:
        """Wait for a run to end; return its state and when the wait returned."""
        handle = await self.factory.wait_run(run_id, timeout=WAIT_TIMEOUT)
        return str(handle["state"]), time.perf_counter()

    async def state(self, run_id: str) -> str:
        handle = await self.call(lambda api: api.runs().get_run(run_id))
        return str(handle["state"])

    async def run_many(
        self, group_id: str, n: int, arguments: list[dict[str, Any]] | None = None
    ) -> dict[str, Any]:
        """Start ``n`` runs at once (one session each) and wait for all of them."""
        async with LoopLag() as lag:
            mark("start")
            t0 = time.perf_counter()
            run_ids = await asyncio.gather(*(self.start(group_id, arguments) for _ in range(n)))
            started = time.perf_counter()
            outcomes = await asyncio.gather(*(self.wait(rid) for rid in run_ids))
            end = max(t for _, t in outcomes)
            mark("stop")
        states = [s for s, _ in outcomes]
        return {
            "runs": n,
            "wall_s": end - t0,
            "start_s": started - t0,
            "succeeded": sum(1 for s in states if s == "SUCCESS"),
            "not_final": sum(1 for s in states if s not in FINAL_STATES),
            **lag.metrics(),
        }


async def step_processes(command: str) -> list[psutil.Process]:
    """The driver's descendants, once a process named ``command`` is among them.

    Commands in a run cgroup are below the driver's launcher: they count as well.
    """
    me = psutil.Process()
    async with asyncio.timeout(10):
        while True:
            tree = me.children(recursive=True)
            for pid in launchers(me.pid):
                with contextlib.suppress(psutil.NoSuchProcess):
                    tree.extend(psutil.Process(pid).children(recursive=True))
            procs = [p for p in tree if alive(p)]
            if command in names(procs):
                return procs
            await asyncio.sleep(0.002)


# -- Scenarios ----------------------------------------------------------------------------


async def scenario_concurrent(
    bench: Bench, template: str, params: dict[str, Any]
) -> dict[str, Any]:
    _, group_id = await bench.install(template, "sleep")
    await bench.wait(await bench.start(group_id))
    return await bench.run_many(group_id, int(params["n"]))


async def scenario_noop(bench: Bench, template: str, params: dict[str, Any]) -> dict[str, Any]:
    _, group_id = await bench.install(template, "noop")
    latencies: list[float] = []
    failed = 0
    reps = int(params["reps"])
    mark("start")
    for i in range(reps + 1):  # the first run warms up and is not counted
        t0 = time.perf_counter()
        state, done = await bench.wait(await bench.start(group_id))
        if i == 0:
            continue
        if state == "SUCCESS":
            latencies.append(done - t0)
        else:
            failed += 1
    mark("stop")
    return {"runs": reps, "failed": failed, **summary_ms("latency", latencies)}


async def scenario_cancel(bench: Bench, template: str, params: dict[str, Any]) -> dict[str, Any]:
    _, group_id = await bench.install(template, "cancel")
    reps = int(params["reps"])
    grace = float(params.get("grace_s", 1.0))
    tally = CancelTally(reps)
    for i in range(reps + 1):  # the first cancel warms up and is not counted
        run_id = await bench.start(group_id)
        procs = await step_processes("sleep")
        t0 = time.perf_counter()
        handle = await bench.call(lambda api, rid=run_id: api.runs().cancel_run(rid))
        t1 = time.perf_counter()
        state = str(handle["state"])
        while state != "CANCELED" and time.perf_counter() - t1 < 5:
            await asyncio.sleep(0.001)
            state = await bench.state(run_id)
        t2 = time.perf_counter()
        gone_at = None
        while time.perf_counter() - t1 < grace:
            if not any(alive(p) for p in procs):
                gone_at = time.perf_counter()
                break
            await asyncio.sleep(0.001)
        left = [p for p in procs if alive(p)]
        left_names = names(left)
        kill(left)
        await asyncio.to_thread(psutil.wait_procs, left, 2)
        if i == 0:
            continue
        tally.add(
            procs=len(procs),
            canceled_after=t2 - t0 if state == "CANCELED" else None,
            gone_after=gone_at - t1 if gone_at is not None else None,
            survivors=len(left),
            survivor_names=left_names,
        )
    return tally.result()


async def descendants_named(command: str, count: int) -> list[psutil.Process]:
    """The driver's descendants, once ``count`` processes named ``command`` are among them."""
    me = psutil.Process()
    while True:
        procs = await asyncio.to_thread(me.children, recursive=True)
        if count_named(procs, command) >= count:
            return procs
        await asyncio.sleep(0.05)


async def scenario_storm(bench: Bench, template: str, params: dict[str, Any]) -> dict[str, Any]:
    """``n`` running runs cancelled at once (one session each)."""
    _, group_id = await bench.install(template, "storm")
    n = int(params["n"])
    run_ids = await asyncio.gather(*(bench.start(group_id) for _ in range(n)))
    async with asyncio.timeout(60 + n / 5):
        procs = await descendants_named("sleep", n)
    errors: list[str] = []

    async def cancel(run_id: str) -> None:
        try:
            await bench.call(lambda api: api.runs().cancel_run(run_id))
        except Exception as exc:
            errors.append(f"{type(exc).__name__}: {exc}")

    mark("start")
    t0 = time.perf_counter()
    await asyncio.gather(*(cancel(rid) for rid in run_ids))
    t1 = time.perf_counter()
    outcomes = await asyncio.gather(*(bench.wait(rid) for rid in run_ids))
    mark("stop")
    final = max(t for _, t in outcomes)
    await asyncio.sleep(max(0.0, t1 + 1.0 - time.perf_counter()))
    left = [p for p in procs if alive(p)]
    kill(left)
    states = [s for s, _ in outcomes]
    return storm_result(n, t1 - t0, final - t0, states, errors, len(left))


# The service that crashes: it starts the runs, prints their ids and waits.
RECOVERY_CHILD = """
import asyncio, json, sys
from flowserv_async import LocalAPIFactory

async def main(env, group_id, n):
    async with LocalAPIFactory(env=env) as factory:
        async def one():
            async with factory() as api:
                return (await api.runs().start_run(group_id, []))["id"]
        ids = await asyncio.gather(*(one() for _ in range(n)))
        print(json.dumps(ids), flush=True)
        await asyncio.sleep(3600)

asyncio.run(main(*json.loads(sys.argv[1])))
"""


async def scenario_recovery(bench: Bench, template: str, params: dict[str, Any]) -> dict[str, Any]:
    """SIGKILL a service with ``n`` runs whose steps fork; this engine recovers them."""
    _, group_id = await bench.install(template, "recovery")
    n = int(params["n"])
    child = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        RECOVERY_CHILD,
        json.dumps([bench.env, group_id, n]),
        stdout=asyncio.subprocess.PIPE,
    )
    assert child.stdout is not None
    run_ids = json.loads(await child.stdout.readline())
    async with asyncio.timeout(60 + n):
        # Each run: the step's shell, a grandchild and a grandchild in its own session.
        procs = await descendants_named("sleep", 2 * n)
    mark("start")
    t0 = time.perf_counter()
    child.kill()
    await child.wait()
    outcomes = await asyncio.gather(*(bench.wait(rid) for rid in run_ids))
    final = max(t for _, t in outcomes)
    gone = None
    while time.perf_counter() - t0 < 60:
        if not any(alive(p) for p in procs):
            gone = time.perf_counter()
            break
        await asyncio.sleep(0.01)
    mark("stop")
    left = [p for p in procs if alive(p)]
    kill(left)
    states = [s for s, _ in outcomes]
    return {
        "runs": n,
        "lease_s": float(bench.env.get("FLOWSERV_RUN_LEASE", 30)),
        "final_s": final - t0,
        "gone_s": gone - t0 if gone is not None else None,
        "error_runs": sum(1 for s in states if s == "ERROR"),
        "survivors": len(left),
    }


async def scenario_api(bench: Bench, template: str, params: dict[str, Any]) -> dict[str, Any]:
    workflow_id, group_id = await bench.install(template, "api")
    run_ids = [await bench.start(group_id) for _ in range(int(params.get("runs", 5)))]
    for rid in run_ids:
        await bench.wait(rid)
    run_id = run_ids[0]
    reps = int(params["reps"])
    ops: list[tuple[str, Callable[[Any, int], Awaitable[Any]]]] = [
        ("get_workflow", lambda api, i: api.workflows().get_workflow(workflow_id)),
        ("list_groups", lambda api, i: api.groups().list_groups()),
        ("list_runs", lambda api, i: api.runs().list_runs(group_id)),
        ("get_run", lambda api, i: api.runs().get_run(run_id)),
        ("create_group", lambda api, i: api.groups().create_group(workflow_id, f"group-{i}")),
    ]
    result: dict[str, Any] = {"reps": reps}
    for name, op in ops:
        times: list[float] = []
        for i in range(reps):
            t0 = time.perf_counter()
            async with bench.factory() as api:
                await op(api, i)
            times.append(time.perf_counter() - t0)
        result.update(summary_ms(name, times))

    # Many calls at once: the reads above and writes (create_group), one session each.
    calls = int(params.get("concurrent_calls", 1000))

    async def one(i: int) -> None:
        _, op = ops[i % len(ops)]
        async with bench.factory() as api:
            await op(api, reps + i)

    async with LoopLag() as lag:
        t0 = time.perf_counter()
        outcomes = await asyncio.gather(*(one(i) for i in range(calls)), return_exceptions=True)
        wall = time.perf_counter() - t0
    errors = [o for o in outcomes if isinstance(o, BaseException)]
    result.update(
        {
            "concurrent_calls": calls,
            "concurrent_errors": len(errors),
            "concurrent_wall_s": wall,
            "concurrent_loop_lag_max_ms": lag.metrics()["loop_lag_max_ms"],
        }
    )
    if errors:
        result["concurrent_first_error"] = f"{type(errors[0]).__name__}: {errors[0]}"
    return result


async def scenario_helloworld(
    bench: Bench, template: str, params: dict[str, Any]
) -> dict[str, Any]:
    _, group_id = await bench.install(template, "helloworld")
    names = str(params["names"]).encode()
    fh = await bench.call(
        lambda api: api.uploads().upload_file(group_id, file=names, name="names.txt")
    )
    arguments = [
        {
            "name": "names",
            "value": {
                "type": "$file",
                "value": {"fileId": fh["id"], "targetPath": "data/names.txt"},
            },
        },
        {"name": "greeting", "value": "Hi"},
    ]
    state, _ = await bench.wait(await bench.start(group_id, arguments))
    if state != "SUCCESS":
        raise RuntimeError(f"hello-world warm-up run ended {state}")
    return await bench.run_many(group_id, int(params["n"]), arguments)


SCENARIOS: dict[str, Callable[[Bench, str, dict[str, Any]], Awaitable[dict[str, Any]]]] = {
    "concurrent": scenario_concurrent,
    "noop": scenario_noop,
    "cancel": scenario_cancel,
    "api": scenario_api,
    "helloworld": scenario_helloworld,
    "storm": scenario_storm,
    "recovery": scenario_recovery,
}


async def run_scenario(scenario: str, template: str, basedir: str, params: dict[str, Any]) -> Any:
    env = {"FLOWSERV_API_DIR": basedir, "FLOWSERV_AUTH": "open", "FLOWSERV_ASYNCENGINE": "true"}
    env.update(params.get("env", {}))
    postgres = os.environ.get(POSTGRES_VARIABLE)
    if not postgres:
        async with LocalAPIFactory(env=env) as factory:
            freeze_startup_heap()
            return await SCENARIOS[scenario](Bench(factory, env), template, params)
    # PostgreSQL: a fresh schema of the given database, dropped afterwards.
    schema = f"bench_{uuid.uuid4().hex}"
    admin = DB(postgres)
    try:
        async with admin.engine.begin() as conn:
            await conn.execute(text(f'CREATE SCHEMA "{schema}"'))
        db = DB(postgres, connect_args={"server_settings": {"search_path": schema}})
        try:
            await db.create_schema()
            async with LocalAPIFactory(env=env, db=db) as factory:
                freeze_startup_heap()
                return await SCENARIOS[scenario](Bench(factory, env), template, params)
        finally:
            await db.dispose()
            async with admin.engine.begin() as conn:
                await conn.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
    finally:
        await admin.dispose()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--scenario", required=True, choices=sorted(SCENARIOS))
    parser.add_argument("--template", required=True, help="template folder")
    parser.add_argument("--basedir", required=True, help="service base folder (created)")
    parser.add_argument("--params", default="{}", help="scenario parameters (JSON)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.ERROR, stream=sys.stderr)
    Path(args.basedir).mkdir(parents=True, exist_ok=True)
    if not Path(args.template).is_dir():
        parser.error(f"template folder {args.template} does not exist")
    try:
        metrics = asyncio.run(
            run_scenario(args.scenario, args.template, args.basedir, json.loads(args.params))
        )
    except Exception as exc:
        logging.exception("scenario %s failed", args.scenario)
        print("@result " + json.dumps({"error": f"{type(exc).__name__}: {exc}"}), flush=True)
        return 1
    metrics["version"] = __version__
    print("@result " + json.dumps(metrics), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
