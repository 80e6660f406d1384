"""HTTP throughput: flowserv-async's server side by side with rob-flask 0.6.0.

Usage: python -m benchmarks.bench_http [--duration 5] [--connections 32] [--rounds 2]
    [--sides robflask,ours] [--processes 1,2]

Both servers get the same data (a one-step workflow with a result schema, 10 groups with
one successful run each) and then serve ``GET runs/{id}`` and ``GET workflows/{id}/
leaderboard`` to ``wrk`` (Debian's package, installed here with apt-get when missing) at
32 connections, in one server process and in two:

- flowserv-async: ``flowserv-async serve --workers 1|2`` (uvicorn); one process on the
  embedded default (SQLite in the base folder), two on PostgreSQL (``serve`` runs
  several workers only on a database they can share: a new database on the server of
  ``BENCH_POSTGRES``, default ``postgresql://postgres@127.0.0.1:5432/test``, dropped
  after);
- rob-flask 0.6.0 on flowserv-core 0.9.4 (``benchmarks/.venv-robflask``, built on first
  use): one process is REST.md's launcher (``create_app().run(threaded=True)``), two
  processes are gunicorn with two workers of 16 threads.

Prints requests per second, p50/p99 latency, the server's CPU per request and (ours on
PostgreSQL) the database server's CPU per request, per case and round, with the
machine, the date and the load; writes everything to ``benchmarks/results/http.json``.
Other processes on the machine skew the numbers: compare the two sides of one run, and
repeat (``--rounds``).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import psutil
import yaml

from benchmarks.flowserv_env import ROBFLASK_VENV_DIR, ensure_robflask_venv

BENCH_DIR = Path(__file__).resolve().parent
RESULTS = BENCH_DIR / "results" / "http.json"
POSTGRES = os.environ.get("BENCH_POSTGRES", "postgresql://postgres@127.0.0.1:5432/test")
API_PATH = "/flowserv/api/v1"
GROUPS = 10

TEMPLATE: dict[str, Any] = {
    "workflow": {
        "files": {"outputs": ["results.json"]},
        "parameters": {"score": "$[[score]]"},
        "steps": [
            {
                "name": "score",
                "files": {"inputs": [], "outputs": ["results.json"]},
                "action": {
                    "environment": "ubuntu",
                    "commands": ["echo '{\"score\": ${score}}' > results.json"],
                },
            }
        ],
    },
    "parameters": [{"name": "score", "label": "Score", "dtype": "int"}],
    "results": {
        "file": "results.json",
        "schema": [{"name": "score", "label": "Score", "dtype": "int"}],
    },
}


def ensure_wrk() -> str:
    """The wrk binary; installed from Debian's packages when missing."""
    found = shutil.which("wrk")
    if found is None:
        print("installing wrk (apt-get) ...", flush=True)
        subprocess.run(["apt-get", "install", "-y", "-qq", "wrk"], check=True)
        found = shutil.which("wrk")
    if found is None:
        raise SystemExit("wrk is not available")
    return found


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextlib.contextmanager
def running(command: list[str], env: dict[str, str], url: str) -> Iterator[subprocess.Popen[bytes]]:
    """A server process (its own process group) that answers ``url``, stopped at exit."""
    proc = subprocess.Popen(
        command,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                httpx.get(url, timeout=2)
                break
            except httpx.TransportError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"server did not start: {command}") from None
                time.sleep(0.2)
        yield proc
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, 15)
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, 9)
            proc.wait()


def populate(base: str) -> dict[str, str]:
    """Register, log in, create the groups and run one scored run each; return ids."""
    with httpx.Client(base_url=base + "/", timeout=30) as client:
        body = {"username": "bench", "password": "pw", "verify": False}
        client.post("users/register", json=body).raise_for_status()
        r = client.post("users/login", json={"username": "bench", "password": "pw"})
        token = r.raise_for_status().json()["token"]
        headers = {"api_key": token}
        workflow_id = client.get("workflows").json()["workflows"][0]["id"]
        run_ids = []
        for i in range(GROUPS):
            r = client.post(
                f"workflows/{workflow_id}/groups", json={"name": f"g{i}"}, headers=headers
            )
            group_id = r.raise_for_status().json()["id"]
            arguments = [{"name": "score", "value": i}]
            r = client.post(
                f"groups/{group_id}/runs", json={"arguments": arguments}, headers=headers
            )
            run_ids.append(r.raise_for_status().json()["id"])
        for run_id in run_ids:
            for _ in range(600):
                state = client.get(f"runs/{run_id}", headers=headers).json()["state"]
                if state not in ("PENDING", "RUNNING"):
                    break
                time.sleep(0.1)
            if state != "SUCCESS":
                raise RuntimeError(f"run {run_id} ended {state}")
        ranking = client.get(f"workflows/{workflow_id}/leaderboard").json()["ranking"]
        if len(ranking) != GROUPS:
            raise RuntimeError(f"leaderboard has {len(ranking)} entries, not {GROUPS}")
    return {"token": token, "workflow": workflow_id, "run": run_ids[0]}


_UNITS = {"us": 0.001, "ms": 1.0, "s": 1000.0}


def server_cpu(pid: int) -> float:
    """CPU seconds (user and system) of a server process and its descendants.

    The children's counters include the finished processes they waited for (the steps
    of runs). CPU per request depends much less on other load on the machine than
    requests per second do.
    """
    total = 0.0
    root = psutil.Process(pid)
    for process in [root, *root.children(recursive=True)]:
        with contextlib.suppress(psutil.NoSuchProcess):
            times = process.cpu_times()
            total += times.user + times.system + times.children_user + times.children_system
    return total


def postgres_cpu(database: str) -> float:
    """CPU seconds (user and system) of the PostgreSQL backends serving ``database``.

    The server shares the machine's cores with the HTTP servers; its backends show the
    database in their process title (``postgres: ... user database host(port) state``).
    A backend that exits during a round takes its counts with it: the servers keep
    their pooled connections open, so theirs do not.
    """
    name = f" {database.rsplit('/', 1)[-1]} "
    total = 0.0
    for process in psutil.process_iter(["cmdline"]):
        title = " ".join(process.info["cmdline"] or ())
        if title.startswith("postgres:") and name in title:
            with contextlib.suppress(psutil.NoSuchProcess):
                times = process.cpu_times()
                total += times.user + times.system
    return total


def wrk(binary: str, url: str, token: str, duration: int, connections: int) -> dict[str, Any]:
    """Run wrk; return requests/s, p50 and p99 in ms, and the error counts."""
    out = subprocess.run(
        [
            binary,
            *("-t", "2", "-c", str(connections), "-d", f"{duration}s", "--latency"),
            *("-H", f"api_key: {token}", url),
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]
    requests = int(re.search(r"(\d+) requests in", out).group(1))  # type: ignore[union-attr]
    latency = {}
    for pct in ("50", "99"):
        value, unit = re.search(rf"\s{pct}%\s+([\d.]+)(us|ms|s)", out).groups()  # type: ignore[union-attr]
        latency[pct] = float(value) * _UNITS[unit]
    bad = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", out)
    errors = re.search(r"Socket errors:.*", out)
    return {
        "rps": rps,
        "requests": requests,
        "p50_ms": latency["50"],
        "p99_ms": latency["99"],
        "non_2xx": int(bad.group(1)) if bad else 0,
        "socket_errors": errors.group(0) if errors else "",
    }


def clean_env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith(("FLOWSERV_", "ROB_"))}


def measure(
    side: str,
    processes: int,
    basedir: Path,
    wrk_bin: str,
    args: argparse.Namespace,
    database: str | None = None,
) -> list[dict[str, Any]]:
    port = free_port()
    base = f"http://127.0.0.1:{port}{API_PATH}"
    env = server_env(database)
    if side == "ours":
        command = [
            *(sys.executable, "-m", "flowserv_async.cli", "--basedir", str(basedir)),
            *("serve", "--port", str(port), "--workers", str(processes)),
        ]
    elif processes == 1:
        command = [
            str(ROBFLASK_VENV_DIR / "bin" / "python"),
            *(str(BENCH_DIR / "robflask_launcher.py"), "serve", str(basedir), str(port)),
        ]
    else:
        env["BENCH_BASEDIR"] = str(basedir)
        command = [
            str(ROBFLASK_VENV_DIR / "bin" / "gunicorn"),
            # gunicorn drops headers with underscores (api_key) unless told otherwise.
            *("--header-map", "dangerous"),
            *("-w", str(processes), "--threads", "16", "-b", f"127.0.0.1:{port}"),
            *("--chdir", str(BENCH_DIR), "robflask_launcher:wsgi_app()"),
        ]
    ids = json.loads((basedir / "ids.json").read_text())
    rows = []
    with running(command, env, base + "/") as proc:
        for name, path in (
            ("GET runs/{id}", f"runs/{ids['run']}"),
            ("GET leaderboard", f"workflows/{ids['workflow']}/leaderboard"),
        ):
            url = f"{base}/{path}"
            wrk(wrk_bin, url, ids["token"], 1, args.connections)  # warm-up
            for round_ in range(args.rounds):
                cpu = server_cpu(proc.pid)
                pg_cpu = postgres_cpu(database) if database else 0.0
                result = wrk(wrk_bin, url, ids["token"], args.duration, args.connections)
                cpu = server_cpu(proc.pid) - cpu
                requests = max(result["requests"], 1)
                result["cpu_ms_per_request"] = 1000 * cpu / requests
                if database:
                    pg_cpu = postgres_cpu(database) - pg_cpu
                    result["postgres_cpu_ms_per_request"] = 1000 * pg_cpu / requests
                result["load"] = os.getloadavg()[0]
                rows.append(
                    {"side": side, "processes": processes, "endpoint": name, "round": round_}
                    | result
                )
    return rows


def server_env(database: str | None) -> dict[str, str]:
    """The servers' environment: ours on ``database`` when given (else SQLite)."""
    env = clean_env()
    if database is not None:
        env["FLOWSERV_DATABASE"] = database
    return env


@contextlib.contextmanager
def postgres_database() -> Iterator[str]:
    """A new, empty database on the server of BENCH_POSTGRES (dropped afterwards)."""
    name = f"bench_http_{uuid.uuid4().hex[:12]}"
    server = POSTGRES.replace("+asyncpg", "")
    subprocess.run(["psql", server, "-qc", f'CREATE DATABASE "{name}"'], check=True)
    try:
        yield f"{server.rsplit('/', 1)[0]}/{name}"
    finally:
        subprocess.run(["psql", server, "-qc", f'DROP DATABASE "{name}" WITH (FORCE)'], check=True)


def prepare(side: str, basedir: Path, template: Path, database: str | None = None) -> None:
    """Install the workflow and populate the server's data (one process)."""
    env = server_env(database)
    if side == "ours":
        code = (
            "import anyio, sys\n"
            "from flowserv_async import LocalAPIFactory\n"
            "async def main():\n"
            "    env = {'FLOWSERV_API_DIR': sys.argv[1]}\n"
            "    async with LocalAPIFactory(env=env) as f, f() as api:\n"
            "        await api.workflows().create_workflow(\n"
            "            source=sys.argv[2], name='bench', specfile='benchmark.yaml')\n"
            "anyio.run(main)\n"
        )
        subprocess.run(
            [sys.executable, "-c", code, str(basedir), str(template)], env=env, check=True
        )
        port = free_port()
        command = [
            *(sys.executable, "-m", "flowserv_async.cli", "--basedir", str(basedir)),
            *("serve", "--port", str(port)),
        ]
    else:
        python = str(ROBFLASK_VENV_DIR / "bin" / "python")
        launcher = str(BENCH_DIR / "robflask_launcher.py")
        subprocess.run(
            [python, launcher, "init", str(basedir), str(template)],
            env=env,
            check=True,
            stdout=subprocess.DEVNULL,
        )
        port = free_port()
        command = [python, launcher, "serve", str(basedir), str(port)]
    base = f"http://127.0.0.1:{port}{API_PATH}"
    with running(command, env, base + "/"):
        ids = populate(base)
    (basedir / "ids.json").write_text(json.dumps(ids))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=int, default=5, help="seconds per measurement")
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--sides", default="robflask,ours", help="robflask, ours or both")
    parser.add_argument("--processes", default="1,2", help="1, 2 or both")
    args = parser.parse_args(argv)
    sides = [s for s in ("robflask", "ours") if s in args.sides.split(",")]
    counts = [n for n in (1, 2) if str(n) in args.processes.split(",")]
    wrk_bin = ensure_wrk()
    ensure_robflask_venv()
    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="bench-http-") as tmp:
        template = Path(tmp, "template")
        template.mkdir()
        (template / "benchmark.yaml").write_text(yaml.safe_dump(TEMPLATE, sort_keys=False))
        for side in sides:
            basedir = Path(tmp, side)
            if side == "robflask" or 1 in counts:
                prepare(side, basedir, template)
            if 1 in counts:
                rows.extend(measure(side, 1, basedir, wrk_bin, args))
            if 2 not in counts:
                continue
            if side == "robflask":
                rows.extend(measure(side, 2, basedir, wrk_bin, args))
                continue
            with postgres_database() as database:
                basedir = Path(tmp, "ours-postgres")
                prepare(side, basedir, template, database)
                rows.extend(measure(side, 2, basedir, wrk_bin, args, database))
    info = {
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": f"{platform.node()} {platform.machine()} {os.cpu_count()} CPUs",
        "python": platform.python_version(),
        "load": os.getloadavg(),
        "duration_s": args.duration,
        "connections": args.connections,
        "rounds": args.rounds,
        "groups": GROUPS,
    }
    print(
        f"{info['date']}  {info['machine']}  load {info['load'][0]:.2f}  "
        f"wrk -c{args.connections} -d{args.duration}s, {args.rounds} rounds, "
        f"leaderboard of {GROUPS}"
    )
    print(
        f"{'endpoint':<17}{'procs':>6}{'side':>10}{'req/s':>10}{'p50 ms':>9}{'p99 ms':>9}"
        f"{'CPU ms/req':>12}{'PG CPU':>8}{'load':>6}"
    )
    for endpoint in ("GET runs/{id}", "GET leaderboard"):
        for processes in counts:
            for side in sides:
                for row in rows:
                    if (row["endpoint"], row["processes"], row["side"]) == (
                        endpoint,
                        processes,
                        side,
                    ):
                        print(
                            f"{endpoint:<17}{processes:>6}{side:>10}{row['rps']:>10.0f}"
                            f"{row['p50_ms']:>9.2f}{row['p99_ms']:>9.2f}"
                            f"{row['cpu_ms_per_request']:>12.2f}"
                            + (
                                f"{row['postgres_cpu_ms_per_request']:>8.2f}"
                                if "postgres_cpu_ms_per_request" in row
                                else f"{'':>8}"
                            )
                            + f"{row['load']:>6.1f}"
                            + (f"  non-2xx {row['non_2xx']}" if row["non_2xx"] else "")
                        )
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps({"info": info, "rows": rows}, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
