"""Instructions per request of the ASGI app, counted by callgrind (no timing noise).

Usage (the data folder is made on first use with ``bench_http``'s data, over HTTP):

    valgrind --tool=callgrind --instr-atstart=no --callgrind-out-file=OUT \\
        .venv/bin/python -m benchmarks.http_instructions board|run [N] [DATA] [TASKS]
    grep '^totals' OUT    # divide by N

With ``BENCH_POSTGRES`` set (a database URL) the app runs on that database instead of
SQLite (created and populated on first use, with the data folder ``DATA-pg``).

Calls the app in this process with raw ASGI messages (no HTTP client, no server), N
times after 30 warm-up calls, and switches callgrind's instrumentation on only around
the N calls (``callgrind_control``), so imports and start-up are not counted. The
count includes aiosqlite's thread. Without valgrind it prints the CPU time per call
(``time.process_time``; on PostgreSQL also the CPU of the database's backends), which
the machine's load skews. It also prints the statements
the app sent per call, and the transaction commands among them (``BEGIN``, ``COMMIT``,
``ROLLBACK``; counted on PostgreSQL only: SQLite's adapter sends them inside its calls),
and how many database connections the pool opened meanwhile. ``TASKS`` (default 1)
makes that many tasks share the N calls, as concurrent requests to a server would.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import anyio
import anyio.lowlevel
import yaml
from sqlalchemy import event

from benchmarks.bench_http import API_PATH, TEMPLATE, postgres_cpu, prepare
from flowserv_async.server import create_app

WARM_UP = 30


def data_folder(folder: Path, database: str | None) -> dict[str, str]:
    """The folder's ids (token, workflow, run), populating it first when needed."""
    if not (folder / "ids.json").exists():
        if database is not None:
            server, name = database.replace("+asyncpg", "").rsplit("/", 1)
            subprocess.run(["psql", f"{server}/postgres", "-qc", f'CREATE DATABASE "{name}"'])
        template = Path(tempfile.mkdtemp(prefix="bench-template-"))
        (template / "benchmark.yaml").write_text(yaml.safe_dump(TEMPLATE, sort_keys=False))
        prepare("ours", folder, template, database)
    ids: dict[str, str] = json.loads((folder / "ids.json").read_text())
    return ids


class Sent:
    """Statements the app sends, and transaction commands (asyncpg's query logger)."""

    def __init__(self, engine: Any) -> None:
        self.statements = 0
        self.commands = 0
        self.connections = 0

        @event.listens_for(engine, "before_cursor_execute")
        def _statement(*args: Any) -> None:
            self.statements += 1

        @event.listens_for(engine.pool, "connect")
        def _connect(*args: Any) -> None:
            self.connections += 1

        @event.listens_for(engine.pool, "checkout")
        def _checkout(dbapi_connection: Any, *args: Any) -> None:
            if hasattr(dbapi_connection.driver_connection, "add_query_logger"):
                dbapi_connection.driver_connection.add_query_logger(self._command)

    def _command(self, query: Any) -> None:
        self.commands += 1


async def call(app: Any, path: str, token: str) -> None:
    """One GET request as uvicorn would pass it; checks for 200."""
    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "GET",
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "query_string": b"",
        "root_path": "",
        "headers": [(b"host", b"127.0.0.1"), (b"api_key", token.encode())],
        "client": ("127.0.0.1", 50000),
        "server": ("127.0.0.1", 5000),
    }
    status: list[int] = []

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        if message["type"] == "http.response.start":
            status.append(message["status"])

    await app(scope, receive, send)
    if status != [200]:
        raise RuntimeError(f"GET {path} answered {status}")


async def spread(calls: Callable[[int], Awaitable[None]], count: int, tasks: int) -> None:
    """Make ``count`` calls in ``tasks`` concurrent tasks."""
    async with anyio.create_task_group() as tg:
        for i in range(tasks):
            tg.start_soon(calls, count // tasks + (i < count % tasks))


def instrument(on: bool) -> None:
    """Switch callgrind's instrumentation of this process (no-op outside valgrind)."""
    control = shutil.which("callgrind_control")
    if control is not None and "valgrind" in os.environ.get("LD_PRELOAD", ""):
        state = "on" if on else "off"
        subprocess.run([control, "-i", state, str(os.getpid())], check=True, capture_output=True)


async def main(
    endpoint: str, count: int, folder: Path, database: str | None, tasks: int = 1
) -> None:
    ids = data_folder(folder, database)
    env = {"FLOWSERV_API_DIR": str(folder)}
    if database is not None:
        env["FLOWSERV_DATABASE"] = database
    app = create_app(env=env)
    paths = {
        "run": f"{API_PATH}/runs/{ids['run']}",
        "board": f"{API_PATH}/workflows/{ids['workflow']}/leaderboard",
    }
    path = paths[endpoint]

    async def calls(n: int) -> None:
        for _ in range(n):
            await call(app, path, ids["token"])

    async with app.router.lifespan_context(app):
        await spread(calls, WARM_UP, tasks)
        sent = Sent(app.state.flowserv_factory.db.engine.sync_engine)
        pg_started = postgres_cpu(database) if database else 0.0
        instrument(True)
        started = time.process_time()
        await spread(calls, count, tasks)
        cpu = time.process_time() - started
        instrument(False)
        pg_cpu = postgres_cpu(database) - pg_started if database else 0.0
        await anyio.lowlevel.checkpoint()  # the query logger's calls
    print(
        f"GET {endpoint}: {1000 * cpu / count:.3f} ms CPU per call ({count} calls, {tasks} "
        "tasks), "
        + (f"PostgreSQL {1000 * pg_cpu / count:.3f} ms, " if database else "")
        + f"{sent.statements / count:.2f} statements and {sent.commands / count:.2f} "
        f"transaction commands per call, {sent.connections} connections opened"
    )


if __name__ == "__main__":
    name = sys.argv[1] if len(sys.argv) > 1 else "board"
    n = int(sys.argv[2]) if len(sys.argv) > 2 else 100
    data = Path(sys.argv[3] if len(sys.argv) > 3 else tempfile.gettempdir()) / "bench-http-data"
    postgres = os.environ.get("BENCH_POSTGRES")
    if postgres:
        data = data.with_name(data.name + "-pg")
    concurrency = int(sys.argv[4]) if len(sys.argv) > 4 else 1
    anyio.run(main, name, n, data, postgres, concurrency)
