"""Constants and helpers of the server tests (imported by tests and their conftest)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import anyio
import httpx
from runs_helpers import PY, step
from sqlalchemy import func, select

import flowserv_async.examples
from flowserv_async import LocalAPIFactory

HELLOWORLD = Path(flowserv_async.examples.__file__).parent / "helloworld"
API_PATH = "/flowserv/api/v1"
BASE_URL = f"http://testserver{API_PATH}"

Login = Callable[..., Awaitable[tuple[str, dict[str, str]]]]


async def count_rows(factory: LocalAPIFactory, model: Any) -> int:
    """The number of rows of an ORM model's table."""
    async with factory.db.session() as session:
        return int(await session.scalar(select(func.count()).select_from(model)) or 0)


async def stored_files(folder: Path) -> list[str]:
    """Every file below ``folder`` (relative paths), read off the event loop."""

    def walk() -> list[str]:
        return sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file())

    return await anyio.to_thread.run_sync(walk)


# Run by the live server's process: bind a port-0 socket, report the port, serve.
LIVE_SERVER = """
import socket, sys, uvicorn
sock = socket.socket()
sock.bind(("127.0.0.1", 0))
print(sock.getsockname()[1], flush=True)
config = uvicorn.Config(
    "flowserv_async.server:create_app", factory=True, log_level="warning", lifespan="on"
)
uvicorn.Server(config).run(sockets=[sock])
"""


class LiveServer:
    """A uvicorn process serving the app; ``env`` reaches its database and files."""

    def __init__(self, env: dict[str, str]) -> None:
        self.env = env
        self.process: subprocess.Popen[str] | None = None
        self.url = ""

    def start(self) -> None:
        """Start the process and wait until it answers."""
        self.process = subprocess.Popen(
            [sys.executable, "-c", LIVE_SERVER],
            env={**os.environ, **self.env},
            stdout=subprocess.PIPE,
            text=True,
        )
        assert self.process.stdout is not None
        port = self.process.stdout.readline().strip()
        if not port:
            self.stop()
            raise RuntimeError("the live server did not start")
        self.url = f"http://127.0.0.1:{port}{API_PATH}"
        deadline = time.monotonic() + 30
        while True:
            try:
                if httpx.get(f"{self.url}/").status_code == 200:
                    return
            except httpx.TransportError:
                if time.monotonic() > deadline:
                    self.stop()
                    raise
            time.sleep(0.1)

    def stop(self) -> None:
        """Stop the process (SIGTERM, then SIGKILL)."""
        if self.process is None:
            return
        self.process.terminate()
        try:
            self.process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        if self.process.stdout is not None:
            self.process.stdout.close()


# Two steps that print (the helloworld workflow prints nothing): the run's log lines.
TALKER_STEPS = [
    step("first", f"{PY} -c \"print('one'); print('two')\""),
    step("second", f"{PY} -c \"import time; time.sleep(0.5); print('three')\""),
]


def write_talker(folder: Path) -> Path:
    """Write the talker workflow's template into ``folder`` (made if missing)."""
    folder.mkdir(parents=True, exist_ok=True)
    spec = {"workflow": {"steps": TALKER_STEPS}, "parameters": []}
    (folder / "spec.json").write_text(json.dumps(spec))
    return folder


async def start_run(client: httpx.AsyncClient, group_id: str, headers: dict[str, str]) -> str:
    """Start a run of the group's workflow (no arguments) over HTTP; return its id."""
    r = await client.post(f"groups/{group_id}/runs", json={}, headers=headers)
    assert r.status_code == 201, r.text
    return str(r.json()["id"])


async def read_sse(
    source: httpx.Response | AsyncIterator[str], count: int | None = None
) -> list[dict[str, str]]:
    """The Server-Sent Events of a response (comments skipped), until it ends or ``count``.

    Pass the response's ``aiter_lines()`` instead of the response to read on later.
    """
    events: list[dict[str, str]] = []
    fields: dict[str, str] = {}
    lines = source.aiter_lines() if isinstance(source, httpx.Response) else source
    async for line in lines:
        if not line:
            if fields:
                events.append(fields)
                fields = {}
                if len(events) == count:
                    break
        elif not line.startswith(":"):
            name, _, value = line.partition(":")
            fields[name] = value.removeprefix(" ")
    return events
