"""``flowserv-async serve``: uvicorn with token authentication, printing the URL."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_serve_prints_the_url_and_serves_with_tokens(tmp_path: Path) -> None:
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("FLOWSERV_")}
    proc = subprocess.Popen(
        [
            *(sys.executable, "-m", "flowserv_async.cli", "--basedir", str(tmp_path / "d")),
            *("serve", "--port", str(port)),
        ],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        url = f"http://localhost:{port}/flowserv/api/v1"
        assert line.strip() == f"flowserv REST API at {url}/ (docs: {url}/docs)"
        base = f"http://127.0.0.1:{port}/flowserv/api/v1"
        for _ in range(100):
            try:
                r = httpx.get(f"{base}/")
                break
            except httpx.TransportError:
                time.sleep(0.1)
        assert r.json()["url"] == url
        # Token authentication, not the CLI's open access: no group without a login.
        assert httpx.get(f"{base}/groups").status_code == 403
        assert (tmp_path / "d" / "flowserv.db").is_file()
    finally:
        proc.send_signal(signal.SIGINT)
        proc.wait(timeout=20)
        for stream in (proc.stdout, proc.stderr):
            if stream is not None:
                stream.close()
    assert proc.returncode == 0


def test_several_workers_need_postgresql_and_the_database_queue(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("FLOWSERV_")}
    postgres = "postgresql+asyncpg://postgres@127.0.0.1:5432/test"
    for extra, message in (
        ({}, "error: serve --workers above 1 needs PostgreSQL: set FLOWSERV_DATABASE"),
        (
            {"FLOWSERV_DATABASE": postgres, "FLOWSERV_RUN_QUEUE": "memory"},
            "error: serve --workers above 1 needs FLOWSERV_RUN_QUEUE=database (it is memory):"
            " runs are shared through the database",
        ),
    ):
        done = subprocess.run(
            [
                *(sys.executable, "-m", "flowserv_async.cli", "--basedir", str(tmp_path / "d")),
                *("serve", "--port", str(free_port()), "--workers", "2"),
            ],
            env={**env, **extra},
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert done.returncode == 1
        assert done.stderr.strip() == message
        assert not (tmp_path / "d").exists()


def test_the_served_app_freezes_the_start_up_heap_and_importing_the_library_does_not(
    tmp_path: Path,
) -> None:
    # In a child process: gc.freeze is process-wide, so it must not touch the test run's.
    script = (
        "import gc, flowserv_async\n"
        "from flowserv_async.cli.serve import served_app\n"
        "before = gc.get_freeze_count()\n"
        "served_app()\n"
        "print(before, gc.get_freeze_count() > 0)\n"
    )
    env = {**os.environ, "FLOWSERV_API_DIR": str(tmp_path)}
    done = subprocess.run(
        [sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["0", "True"]
