"""Runs every scenario on flowserv-core 0.9.4 and on flowserv-async, side by side.

For each case the harness writes the workflow template into a fresh temporary folder,
runs the flowserv driver (with the Python of ``benchmarks/.venv-flowserv``) and then our
driver (with this interpreter), each in its own process and process group, while a
thread samples that process tree (``monitor``). It prints one table with both numbers,
their ratio and the SPEC 11 target, and writes everything to
``benchmarks/results/latest.json`` together with the machine, the date and each N.
A side that fails shows ``error: <message>`` in the table; the other side still runs.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import shutil
import signal
import subprocess
import sys
import tempfile
import textwrap
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psutil

from benchmarks.flowserv_env import FlowservEnvError, ensure_flowserv_venv
from benchmarks.monitor import TreeMonitor
from benchmarks.ours_driver import POSTGRES_VARIABLE
from benchmarks.templates import NAMES, write_template

BENCH_DIR = Path(__file__).resolve().parent
REPO_DIR = BENCH_DIR.parent
RESULTS_FILE = BENCH_DIR / "results" / "latest.json"

SIDES = ("flowserv", "ours")
SIDE_TITLES = {"flowserv": "flowserv-core 0.9.4", "ours": "flowserv-async"}
SCENARIOS = ("concurrent", "noop", "cancel", "api", "helloworld", "storm", "recovery")
DRIVER_TIMEOUT = 240.0
READ_OPS = ("get_workflow", "list_groups", "list_runs", "get_run")


@dataclass(frozen=True)
class Metric:
    """One row of the table: a key of the drivers' results and how to show it."""

    key: str
    label: str
    unit: str = ""
    target: str = ""
    ratio: bool = True  # show flowserv / ours (for times, sizes and counts)


@dataclass(frozen=True)
class Case:
    """One scenario with one set of parameters, run on both sides."""

    name: str
    scenario: str
    template: str
    params: Mapping[str, Mapping[str, Any]]
    metrics: tuple[Metric, ...]
    monitor: bool = False


def _both(params: Mapping[str, Any]) -> dict[str, Mapping[str, Any]]:
    return {side: params for side in SIDES}


def concurrent_case(n: int) -> Case:
    targets = {64: "<= 0.7 s (flowserv ~2 s)", 256: "<= 1.2 s"}
    return Case(
        name=f"concurrent N={n}",
        scenario="concurrent",
        template="sleep",
        params=_both({"n": n}),
        monitor=True,
        metrics=(
            Metric("wall_s", "first start_run to all final", "s", targets.get(n, "")),
            Metric("start_s", "all start_run calls returned", "s"),
            Metric("succeeded", "runs SUCCESS", ratio=False),
            Metric("procs_per_run", "processes spawned per run", "", "1 (flowserv: 3)"),
            Metric("peak_procs", "peak live processes below driver"),
            Metric("peak_pss_mb", "peak PSS of process tree", "MB"),
            Metric("peak_uss_mb", "peak USS of process tree", "MB"),
            Metric(
                "loop_lag_max_ms",
                "event-loop lag, max",
                "ms",
                "<= 20 ms" if n == 64 else "",
                ratio=False,
            ),
        ),
    )


def plan(quick: bool, only: Sequence[str], concurrency: Sequence[int] | None) -> list[Case]:
    """The cases to run, in order."""
    reps = 50 if quick else 200
    cases: list[Case] = []
    if "concurrent" in only:
        for n in concurrency or ((1, 8, 64) if quick else (1, 8, 64, 256)):
            cases.append(concurrent_case(n))
    if "noop" in only:
        cases.append(
            Case(
                name="no-op run",
                scenario="noop",
                template="noop",
                params=_both({"reps": reps}),
                metrics=(
                    Metric("latency_median_ms", "start_run to SUCCESS, median", "ms", "<= 10 ms"),
                    Metric("latency_p95_ms", "start_run to SUCCESS, p95", "ms"),
                    Metric("failed", "runs not SUCCESS", ratio=False),
                ),
            )
        )
    if "cancel" in only:
        # Each flowserv cancel waits the full second for processes that never go.
        cases.append(
            Case(
                name="cancel",
                scenario="cancel",
                template="cancel",
                params={
                    "flowserv": {"reps": 3 if quick else 10},
                    "ours": {"reps": 10 if quick else 20},
                },
                metrics=(
                    Metric("canceled_median_ms", "cancel_run to CANCELED, median", "ms"),
                    Metric("canceled_p95_ms", "cancel_run to CANCELED, p95", "ms"),
                    Metric(
                        "procs_gone_median_ms",
                        "all processes gone, median",
                        "ms",
                        "<= 100 ms after cancel_run",
                    ),
                    Metric("procs_gone_p95_ms", "all processes gone, p95", "ms"),
                    Metric("runs_with_survivors", "runs with processes left after 1 s", "", "0"),
                    Metric("survivors", "processes left after 1 s (killed)", ratio=False),
                    Metric("survivor_names", "their names", ratio=False),
                    Metric("procs_per_run", "processes of a running step", "", "1"),
                ),
            )
        )
    if "api" in only:
        metrics: list[Metric] = []
        for op in (*READ_OPS, "create_group"):
            target = "<= flowserv" if op in READ_OPS else ""
            metrics.append(Metric(f"{op}_median_ms", f"{op}, median", "ms", target))
            metrics.append(Metric(f"{op}_p95_ms", f"{op}, p95", "ms"))
        metrics += [
            Metric("concurrent_errors", "1,000 concurrent calls: errors", "", "0", ratio=False),
            Metric("concurrent_wall_s", "1,000 concurrent calls: wall", "s", ratio=False),
            Metric(
                "concurrent_loop_lag_max_ms", "1,000 concurrent calls: loop lag", "ms", ratio=False
            ),
        ]
        cases.append(
            Case(
                name="API latency",
                scenario="api",
                template="noop",
                params={
                    "flowserv": {"reps": reps, "runs": 5},
                    "ours": {"reps": reps, "runs": 5, "concurrent_calls": 1000},
                },
                metrics=tuple(metrics),
            )
        )
    if "helloworld" in only:
        cases.append(
            Case(
                name="hello world (2 steps, file arg)",
                scenario="helloworld",
                template="helloworld",
                params=_both({"n": 8 if quick else 32, "names": NAMES}),
                monitor=True,
                metrics=(
                    Metric("wall_s", "first start_run to all final", "s"),
                    Metric("start_s", "all start_run calls returned", "s"),
                    Metric("succeeded", "runs SUCCESS", ratio=False),
                    Metric("peak_pss_mb", "peak PSS of process tree", "MB"),
                ),
            )
        )
    if "storm" in only:
        for n in (50, 200) if quick else (200, 1000):
            cases.append(storm_case(n))
    if "recovery" in only:
        cases.append(recovery_case(10 if quick else 20))
    return cases


def recovery_case(n: int) -> Case:
    # flowserv-core has no recovery: a crashed service's runs stay RUNNING and their
    # processes live on; there is nothing to time on its side.
    env = {"FLOWSERV_HEARTBEAT": "0.5", "FLOWSERV_RUN_LEASE": "2"}
    return Case(
        name=f"crash recovery N={n}",
        scenario="recovery",
        template="forks",
        params={"ours": {"n": n, "env": env}},
        metrics=(
            Metric("lease_s", "run lease (FLOWSERV_RUN_LEASE)", "s", ratio=False),
            Metric("final_s", "SIGKILL to every run final", "s"),
            Metric("gone_s", "SIGKILL to every process gone", "s"),
            Metric("error_runs", "runs ERROR (interrupted)", ratio=False),
            Metric("survivors", "processes alive after 60 s", "", "0", ratio=False),
        ),
    )


def storm_case(n: int) -> Case:
    # flowserv-core runs each run in a process pool of its own: 1,000 at once would
    # need some 3,000 processes and tens of GB; its side runs only up to 200.
    params: dict[str, Mapping[str, Any]] = {"ours": {"n": n}}
    if n <= 200:
        params["flowserv"] = {"n": n}
    return Case(
        name=f"cancel storm N={n}",
        scenario="storm",
        template="storm",
        params=params,
        metrics=(
            Metric("calls_s", "all cancel_run calls returned", "s"),
            Metric("final_s", "all runs final", "s"),
            Metric("canceled", "runs CANCELED", ratio=False),
            Metric("other_final", "runs SUCCESS/ERROR instead", "", "0", ratio=False),
            Metric("errors", "cancel_run calls that raised", "", "0", ratio=False),
            Metric("survivors", "step processes alive 1 s later", "", "0", ratio=False),
        ),
    )


# -- Running the drivers ------------------------------------------------------------------


def _kill_group(pgid: int) -> None:
    # The driver leads its own process group (start_new_session); flowserv's orphaned
    # step processes stay in it after the driver is gone.
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, signal.SIGKILL)


def _tail(path: Path, lines: int = 8) -> str:
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return ""
    return "\n".join(text.strip().splitlines()[-lines:])


def _count_errors(path: Path) -> int:
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return 0
    return sum(1 for line in text.splitlines() if line.startswith(("ERROR", "Traceback")))


def _driver_env(side: str, postgres: str | None = None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("FLOWSERV_")}
    env.pop(POSTGRES_VARIABLE, None)
    if side == "ours" and postgres:
        env[POSTGRES_VARIABLE] = postgres
    if side == "flowserv":
        for name in ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV"):
            env.pop(name, None)
    return env


def run_driver(
    command: list[str],
    case: Case,
    side: str,
    workdir: Path,
    template: Path,
    postgres: str | None = None,
) -> Any:
    """Run one side of one case; return its metrics (or ``{"error": ...}``)."""
    stderr_path = workdir / f"{side}.stderr"
    args = [
        *command,
        *("--scenario", case.scenario, "--template", str(template)),
        *("--basedir", str(workdir / side), "--params", json.dumps(dict(case.params[side]))),
    ]
    with stderr_path.open("w", encoding="utf-8") as stderr:
        proc = subprocess.Popen(
            args,
            cwd=REPO_DIR if side == "ours" else workdir,
            env=_driver_env(side, postgres),
            stdout=subprocess.PIPE,
            stderr=stderr,
            text=True,
            start_new_session=True,
        )
    monitor = TreeMonitor(proc.pid, measure=case.monitor)
    monitor.start()
    timed_out = threading.Event()

    def on_timeout() -> None:
        timed_out.set()
        _kill_group(proc.pid)

    killer = threading.Timer(DRIVER_TIMEOUT, on_timeout)
    killer.start()
    result: Any = None
    try:
        assert proc.stdout is not None
        for line in proc.stdout:
            if line.startswith("@mark start"):
                monitor.open_window()
            elif line.startswith("@mark stop"):
                monitor.close_window()
            elif line.startswith("@result "):
                result = json.loads(line.removeprefix("@result "))
        proc.wait()
    finally:
        killer.cancel()
        monitor.stop()
        leftovers = monitor.kill_leftovers()
        _kill_group(proc.pid)
    if timed_out.is_set():
        return {"error": f"timed out after {DRIVER_TIMEOUT:.0f} s", "stderr": _tail(stderr_path)}
    if not isinstance(result, dict):
        return {
            "error": f"driver exited {proc.returncode} without a result",
            "stderr": _tail(stderr_path),
        }
    # flowserv logs engine failures (e.g. a callback that lost the race with the commit
    # of start_run) instead of raising; count them so that they are not missed.
    result["log_errors"] = _count_errors(stderr_path)
    if "error" in result:
        result["stderr"] = _tail(stderr_path)
    elif case.monitor:
        result.update(monitor.stats.to_dict(result.get("runs")))
    if leftovers:
        result["leftover_processes_killed"] = len(leftovers)
    return result


# -- Machine, table, JSON -----------------------------------------------------------------


def _cpu_model() -> str:
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text(encoding="utf-8").splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


def machine_info() -> dict[str, Any]:
    return {
        "cpu": _cpu_model(),
        "cores_logical": os.cpu_count(),
        "cores_physical": psutil.cpu_count(logical=False),
        "ram_gb": round(psutil.virtual_memory().total / 2**30, 1),
        "python": f"{platform.python_implementation()} {platform.python_version()}",
        "os": platform.platform(),
        "load_avg_at_start": [round(x, 2) for x in os.getloadavg()],
    }


def _git_commit() -> str | None:
    proc = subprocess.run(
        ["git", "-C", str(REPO_DIR), "rev-parse", "--short", "HEAD"],
        capture_output=True,
        text=True,
        check=False,
    )
    return proc.stdout.strip() or None


def fmt_value(value: Any, unit: str) -> str:
    if value is None:
        return "-"
    if isinstance(value, list):
        return ", ".join(map(str, value)) or "-"
    if isinstance(value, bool) or not isinstance(value, int | float):
        return str(value)
    if unit == "s":
        return f"{value:.3f} s"
    if unit in ("ms", "MB"):
        return f"{value:.1f} {unit}"
    return str(value) if isinstance(value, int) else f"{value:.2f}"


def fmt_ratio(metric: Metric, fs: Any, ours: Any) -> str:
    numeric = all(isinstance(v, int | float) and not isinstance(v, bool) for v in (fs, ours))
    if not metric.ratio or not numeric or ours <= 0:
        return ""
    return f"{fs / ours:.2f}x"


def _params_text(case: Case) -> str:
    parts = []
    for side in SIDES:
        if side not in case.params:
            continue
        shown = {k: v for k, v in case.params[side].items() if k != "names"}
        parts.append(f"{side}: " + ", ".join(f"{k}={v}" for k, v in shown.items()))
    return "; ".join(parts)


def render_table(cases: Sequence[Case], results: Mapping[str, Mapping[str, Any]]) -> str:
    widths = (40, 22, 22, 8)
    head = ("metric", SIDE_TITLES["flowserv"], SIDE_TITLES["ours"], "fs/ours", "SPEC 11 target")
    lines = ["  ".join(h.ljust(w) for h, w in zip(head, (*widths, 0), strict=True)).rstrip()]
    lines.append("-" * (sum(widths) + 2 * len(widths) + 26))
    for case in cases:
        lines.append(f"{case.name}  [{_params_text(case)}]")
        sides = results.get(case.name, {})
        for i, metric in enumerate(case.metrics):
            cells = []
            for side in SIDES:
                res = sides.get(side)
                if res is None:
                    cells.append("(not run)" if i == 0 else "")
                elif "error" in res:
                    # The error text runs down the rows this side has no numbers for.
                    wrapped = textwrap.wrap("error: " + str(res["error"]), widths[1])
                    cells.append(wrapped[i] if i < len(wrapped) else "")
                else:
                    cells.append(fmt_value(res.get(metric.key), metric.unit))
            fs_val = (sides.get("flowserv") or {}).get(metric.key)
            ours_val = (sides.get("ours") or {}).get(metric.key)
            row = (
                "  " + metric.label,
                *cells,
                fmt_ratio(metric, fs_val, ours_val),
                metric.target,
            )
            lines.append("  ".join(c.ljust(w) for c, w in zip(row, (*widths, 0), strict=True)))
        lines[-1] = lines[-1].rstrip()
    return "\n".join(line.rstrip() for line in lines)


def render_errors(cases: Sequence[Case], results: Mapping[str, Mapping[str, Any]]) -> str:
    out = []
    for case in cases:
        for side in SIDES:
            res = results.get(case.name, {}).get(side)
            if res and "error" in res:
                out.append(f"{case.name} / {SIDE_TITLES[side]}: {res['error']}")
    return "\n".join(out)


# -- Entry point --------------------------------------------------------------------------


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks",
        description="flowserv-async vs flowserv-core 0.9.4, side by side (SPEC 11).",
    )
    parser.add_argument("--quick", action="store_true", help="fewer runs and repetitions")
    parser.add_argument(
        "--only",
        action="append",
        metavar="SCENARIO",
        help=f"run only these scenarios (repeat or comma-separate): {', '.join(SCENARIOS)}",
    )
    parser.add_argument(
        "--side", choices=("both", *SIDES), default="both", help="run one side only"
    )
    parser.add_argument(
        "--concurrency", metavar="N,N,...", help="run counts of the concurrent scenario"
    )
    parser.add_argument(
        "--output", type=Path, default=RESULTS_FILE, help=f"JSON output (default {RESULTS_FILE})"
    )
    parser.add_argument(
        "--postgres",
        metavar="URL",
        help="run flowserv-async on this PostgreSQL database (a schema per driver run)",
    )
    args = parser.parse_args(argv)
    only = [s.strip() for item in (args.only or [",".join(SCENARIOS)]) for s in item.split(",")]
    unknown = sorted(set(only) - set(SCENARIOS))
    if unknown:
        parser.error(
            f"unknown scenario(s) {', '.join(unknown)}; choose from {', '.join(SCENARIOS)}"
        )
    args.only = [s for s in SCENARIOS if s in only]
    try:
        args.concurrency = (
            [int(n) for n in args.concurrency.split(",")] if args.concurrency else None
        )
    except ValueError:
        parser.error(f"--concurrency expects integers like 1,8,64, got {args.concurrency!r}")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    if args.postgres:
        SIDE_TITLES["ours"] = "flowserv-async (PG)"
    began = time.perf_counter()
    sides = SIDES if args.side == "both" else (args.side,)
    cases = plan(args.quick, args.only, args.concurrency)
    commands: dict[str, list[str]] = {"ours": [sys.executable, "-m", "benchmarks.ours_driver"]}
    versions: dict[str, str | None] = {"flowserv_async": None, "flowserv_core": None}
    env_error = None
    if "flowserv" in sides:
        try:
            python, versions["flowserv_core"] = ensure_flowserv_venv()
            commands["flowserv"] = [str(python), str(BENCH_DIR / "flowserv_driver.py")]
        except FlowservEnvError as exc:
            env_error = f"flowserv-core venv: {exc}"

    machine = machine_info()
    date = datetime.now(UTC).isoformat(timespec="seconds")
    print(f"flowserv-async benchmarks, {date}")
    print(
        f"machine: {machine['cpu']}, {machine['cores_logical']} logical cores, "
        f"{machine['ram_gb']} GB RAM, {machine['python']}, {machine['os']}, "
        f"load {machine['load_avg_at_start']}"
    )
    results: dict[str, dict[str, Any]] = {}
    root = Path(tempfile.mkdtemp(prefix="flowserv-bench-"))
    try:
        for index, case in enumerate(cases, start=1):
            workdir = root / f"case-{index}"
            template = write_template(case.template, workdir / "template")
            results[case.name] = {}
            for side in sides:
                print(f"[{index}/{len(cases)}] {case.name} on {SIDE_TITLES[side]} ...", end="")
                print("", end="", flush=True)
                t0 = time.perf_counter()
                if side not in case.params:
                    print(" not run (see the case's note)", flush=True)
                    continue
                if side == "flowserv" and env_error:
                    res: Any = {"error": env_error}
                else:
                    res = run_driver(commands[side], case, side, workdir, template, args.postgres)
                results[case.name][side] = res
                status = f"error: {res['error']}" if "error" in res else "ok"
                print(f" {time.perf_counter() - t0:.1f} s, {status}", flush=True)
                if versions["flowserv_async"] is None and side == "ours" and "version" in res:
                    versions["flowserv_async"] = res["version"]
            shutil.rmtree(workdir, ignore_errors=True)
    finally:
        shutil.rmtree(root, ignore_errors=True)

    duration = time.perf_counter() - began
    machine["load_avg_at_end"] = [round(x, 2) for x in os.getloadavg()]
    print()
    print(render_table(cases, results))
    errors = render_errors(cases, results)
    if errors:
        print("\nErrors:\n" + errors)
    print(
        f"\nfs/ours = flowserv-core value / flowserv-async value (above 1: flowserv-async is"
        f" lower). Total {duration:.0f} s; load average now {machine['load_avg_at_end']}."
    )

    report = {
        "date": date,
        "duration_s": round(duration, 1),
        "machine": machine,
        "versions": versions,
        "commit": _git_commit(),
        "args": {
            "quick": args.quick,
            "only": args.only,
            "side": args.side,
            "concurrency": args.concurrency,
            "postgres": args.postgres,
        },
        "cases": [
            {
                "name": case.name,
                "scenario": case.scenario,
                "params": {side: dict(case.params[side]) for side in sides if side in case.params},
                "targets": {m.key: m.target for m in case.metrics if m.target},
                **{side: results.get(case.name, {}).get(side) for side in sides},
            }
            for case in cases
        ],
    }
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    print(f"Results written to {args.output}")
    return 0
