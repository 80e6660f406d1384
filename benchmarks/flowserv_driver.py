"""Scenario driver for flowserv-core 0.9.4 (the reference side of the benchmarks).

Run by the harness with the Python of ``benchmarks/.venv-flowserv`` (flowserv-core 0.9.4,
pyyaml-include<2, psutil); it imports nothing but flowserv, psutil and the standard
library, so it is a standalone script rather than a module of the package::

    python flowserv_driver.py --scenario noop --template DIR --basedir DIR --params '{}'

Protocol (shared with ``ours_driver``): ``@mark start`` / ``@mark stop`` lines on stdout
frame the measured window (the harness samples the process tree in between), and the
last line is ``@result {json}``: the metrics, or ``{"error": "..."}``.

flowserv has no way to wait for a run; a client polls ``get_run``. To measure flowserv's
own latency rather than a poll interval, the driver wraps the serial engine's completion
callback (``flowserv.controller.serial.engine.base.callback_function``, which writes the
final state from the multiprocessing pool's result thread) and records when it returns.
The state is then read back through the API, so a run the callback failed to finish is
reported, not counted as done. This is flowserv's best case.
"""

from __future__ import annotations

import argparse
import io
import json
import logging
import os
import sys
import threading
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import flowserv.controller.serial.engine.base as serial_engine
import psutil
from flowserv.config import Config
from flowserv.service.local import LocalAPIFactory
from flowserv.version import __version__ as flowserv_version
from flowserv.volume.base import IOBuffer
from flowserv.volume.fs import FStore

# Run as a script by flowserv's interpreter: make the benchmarks package importable.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from benchmarks.driverlib import (
    CancelTally,
    alive,
    count_named,
    kill,
    mark,
    names,
    storm_result,
    summary_ms,
)

FINAL_STATES = frozenset({"SUCCESS", "ERROR", "CANCELED"})
SPECFILE = "benchmark.yaml"


# -- Helpers ------------------------------------------------------------------------------


class Completions:
    """Times at which flowserv's engine callback finished writing a run's final state."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._done: dict[str, float] = {}

    def install(self) -> None:
        original = serial_engine.callback_function

        def callback(result: Any, lock: Any, tasks: Any, service: Any) -> None:
            try:
                original(result, lock, tasks, service)
            finally:
                with self._cond:
                    self._done[result[0]] = time.perf_counter()
                    self._cond.notify_all()

        # exec_workflow builds partial(callback_function, ...) from the module global.
        serial_engine.callback_function = callback

    def wait(self, run_ids: Iterable[str], timeout: float) -> dict[str, float]:
        """Completion times of ``run_ids`` (those that completed within ``timeout``)."""
        wanted = set(run_ids)
        deadline = time.monotonic() + timeout
        with self._cond:
            while not wanted <= self._done.keys():
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    break
                self._cond.wait(remaining)
            return {rid: self._done[rid] for rid in wanted if rid in self._done}


class Bench:
    """One flowserv service (SQLite, file store and run folders under ``basedir``)."""

    def __init__(self, basedir: str) -> None:
        env = (
            Config()
            .basedir(basedir)
            # The file store does not follow the base dir by default (flowserv bug).
            .volume(FStore(basedir=basedir))
            .open_access()
            .run_async()
        )
        self.factory = LocalAPIFactory(env=env)
        self.completions = Completions()
        self.completions.install()

    def call(self, fn: Callable[[Any], Any]) -> Any:
        """Run ``fn(api)`` in its own session, as a request handler would."""
        with self.factory() as api:
            return fn(api)

    def install(self, template: str, name: str) -> tuple[str, str]:
        """Install the template and create one group; return (workflow id, group id)."""
        # flowserv looks a source that is not a folder up in its online repository;
        # the benchmarks must never reach beyond the machine.
        if not os.path.isdir(template):
            raise FileNotFoundError(f"template folder {template} does not exist")
        wf = self.call(
            lambda api: api.workflows().create_workflow(
                source=template, name=name, specfile=SPECFILE
            )
        )
        group = self.call(lambda api: api.groups().create_group(wf["id"], "bench"))
        return wf["id"], group["id"]

    def start(self, group_id: str, arguments: list[dict[str, Any]] | None = None) -> str:
        handle = self.call(lambda api: api.runs().start_run(group_id, arguments=arguments or []))
        return str(handle["id"])

    def states(self, run_ids: Iterable[str]) -> dict[str, str]:
        with self.factory() as api:
            return {rid: api.runs().get_run(rid)["state"] for rid in run_ids}

    def run_many(
        self, group_id: str, n: int, arguments: list[dict[str, Any]] | None = None
    ) -> dict[str, Any]:
        """Start ``n`` runs one after another (flowserv's API is synchronous); wait for all."""
        mark("start")
        t0 = time.perf_counter()
        run_ids = [self.start(group_id, arguments) for _ in range(n)]
        started = time.perf_counter()
        done = self.completions.wait(run_ids, timeout=60 + n)
        end = max(done.values()) if len(done) == n else time.perf_counter()
        mark("stop")
        states = self.states(run_ids)
        return {
            "runs": n,
            "wall_s": end - t0,
            "start_s": started - t0,
            "succeeded": sum(1 for s in states.values() if s == "SUCCESS"),
            "not_final": sum(1 for s in states.values() if s not in FINAL_STATES),
        }


def step_processes(command: str, timeout: float = 10.0) -> list[psutil.Process]:
    """The driver's descendants, once a process named ``command`` is among them."""
    me = psutil.Process()
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        procs = [p for p in me.children(recursive=True) if alive(p)]
        if command in names(procs):
            return procs
        time.sleep(0.002)
    raise TimeoutError(f"no {command!r} process appeared within {timeout} s")


# -- Scenarios ----------------------------------------------------------------------------


def scenario_concurrent(bench: Bench, template: str, params: dict[str, Any]) -> dict[str, Any]:
    _, group_id = bench.install(template, "sleep")
    warm = bench.start(group_id)
    bench.completions.wait([warm], timeout=30)
    return bench.run_many(group_id, int(params["n"]))


def scenario_noop(bench: Bench, template: str, params: dict[str, Any]) -> dict[str, Any]:
    _, group_id = bench.install(template, "noop")
    latencies: list[float] = []
    failed = 0
    reps = int(params["reps"])
    mark("start")
    for i in range(reps + 1):  # the first run warms up and is not counted
        t0 = time.perf_counter()
        run_id = bench.start(group_id)
        done = bench.completions.wait([run_id], timeout=30)
        if i == 0:
            continue
        if run_id in done and bench.states([run_id])[run_id] == "SUCCESS":
            latencies.append(done[run_id] - t0)
        else:
            failed += 1
    mark("stop")
    return {"runs": reps, "failed": failed, **summary_ms("latency", latencies)}


def scenario_cancel(bench: Bench, template: str, params: dict[str, Any]) -> dict[str, Any]:
    _, group_id = bench.install(template, "cancel")
    reps = int(params["reps"])
    grace = float(params.get("grace_s", 1.0))
    tally = CancelTally(reps)
    for i in range(reps + 1):  # the first cancel warms up and is not counted
        run_id = bench.start(group_id)
        procs = step_processes("sleep")
        t0 = time.perf_counter()
        handle = bench.call(lambda api, rid=run_id: api.runs().cancel_run(rid))
        t1 = time.perf_counter()
        state = handle["state"]
        while state != "CANCELED" and time.perf_counter() - t1 < 5:
            time.sleep(0.001)
            state = bench.states([run_id])[run_id]
        t2 = time.perf_counter()
        gone_at = None
        while time.perf_counter() - t1 < grace:
            if not any(alive(p) for p in procs):
                gone_at = time.perf_counter()
                break
            time.sleep(0.001)
        left = [p for p in procs if alive(p)]
        left_names = names(left)
        kill(left)
        psutil.wait_procs(left, timeout=2)
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


def scenario_storm(bench: Bench, template: str, params: dict[str, Any]) -> dict[str, Any]:
    """``n`` running runs cancelled at once, one thread and session each (the API is sync)."""
    _, group_id = bench.install(template, "storm")
    n = int(params["n"])
    run_ids = [bench.start(group_id) for _ in range(n)]
    me = psutil.Process()
    deadline = time.monotonic() + 60 + n / 5
    procs: list[psutil.Process] = []
    while time.monotonic() < deadline:
        procs = me.children(recursive=True)
        if count_named(procs, "sleep") >= n:
            break
        time.sleep(0.05)
    else:
        raise TimeoutError(f"{n} 'sleep' processes did not appear")
    errors: list[str] = []

    def cancel(run_id: str) -> None:
        try:
            bench.call(lambda api: api.runs().cancel_run(run_id))
        except Exception as exc:
            errors.append(f"{type(exc).__name__}: {exc}")

    threads = [threading.Thread(target=cancel, args=(rid,)) for rid in run_ids]
    mark("start")
    t0 = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    t1 = time.perf_counter()
    mark("stop")
    # cancel_run writes CANCELED itself: the states are final once the calls returned.
    states = bench.states(run_ids)
    time.sleep(max(0.0, t1 + 1.0 - time.perf_counter()))
    left = [p for p in procs if alive(p)]
    kill(left)
    final = t1 - t0 if all(s in FINAL_STATES for s in states.values()) else None
    return storm_result(n, t1 - t0, final, states.values(), errors, len(left))


def scenario_api(bench: Bench, template: str, params: dict[str, Any]) -> dict[str, Any]:
    workflow_id, group_id = bench.install(template, "api")
    run_ids = [bench.start(group_id) for _ in range(int(params.get("runs", 5)))]
    bench.completions.wait(run_ids, timeout=30)
    run_id = run_ids[0]
    reps = int(params["reps"])
    ops: list[tuple[str, Callable[[Any, int], Any]]] = [
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
            with bench.factory() as api:
                op(api, i)
            times.append(time.perf_counter() - t0)
        result.update(summary_ms(name, times))
    return result


def scenario_helloworld(bench: Bench, template: str, params: dict[str, Any]) -> dict[str, Any]:
    _, group_id = bench.install(template, "helloworld")
    names = params["names"].encode()
    fh = bench.call(
        lambda api: api.uploads().upload_file(
            group_id=group_id, file=IOBuffer(io.BytesIO(names)), name="names.txt"
        )
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
    warm = bench.start(group_id, arguments)
    bench.completions.wait([warm], timeout=30)
    if (state := bench.states([warm])[warm]) != "SUCCESS":
        raise RuntimeError(f"hello-world warm-up run ended {state}")
    return bench.run_many(group_id, int(params["n"]), arguments)


SCENARIOS: dict[str, Callable[[Bench, str, dict[str, Any]], dict[str, Any]]] = {
    "concurrent": scenario_concurrent,
    "noop": scenario_noop,
    "cancel": scenario_cancel,
    "api": scenario_api,
    "helloworld": scenario_helloworld,
    "storm": scenario_storm,
}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scenario", required=True, choices=sorted(SCENARIOS))
    parser.add_argument("--template", required=True, help="template folder")
    parser.add_argument("--basedir", required=True, help="flowserv base folder (created)")
    parser.add_argument("--params", default="{}", help="scenario parameters (JSON)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.ERROR, stream=sys.stderr)
    os.makedirs(args.basedir, exist_ok=True)
    try:
        bench = Bench(args.basedir)
        metrics = SCENARIOS[args.scenario](bench, args.template, json.loads(args.params))
    except Exception as exc:
        logging.exception("scenario %s failed", args.scenario)
        print("@result " + json.dumps({"error": f"{type(exc).__name__}: {exc}"}), flush=True)
        return 1
    metrics["version"] = flowserv_version
    print("@result " + json.dumps(metrics), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
