"""The CLI as a user runs it: real processes, real signals."""

from __future__ import annotations

import os
import queue
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

import psutil
import pytest
from runs_helpers import descendants

from flowserv_async.examples.run_helloworld import HERE as HELLOWORLD


def cli_command(basedir: Path, *args: str) -> list[str]:
    return [sys.executable, "-m", "flowserv_async.cli", "--basedir", str(basedir), *args]


def test_run_hello_world_on_a_fresh_folder(tmp_path: Path, names_file: Path) -> None:
    result = subprocess.run(
        cli_command(
            tmp_path / "fresh",
            "run",
            str(HELLOWORLD),
            "--file",
            f"names={names_file}",
            "--arg",
            "greeting=Hi",
        ),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr
    assert "SUCCESS" in result.stdout
    assert result.stderr == ""
    written = sorted((tmp_path / "flowserv-results").glob("*/results/*"))
    assert [p.name for p in written] == ["analytics.json", "greetings.txt"]
    for path in written:
        assert str(path) in result.stdout
    assert "Hi, Alice!" in (written[1]).read_text()


def _lines(stream: object, into: queue.Queue[str]) -> None:
    for line in stream:  # type: ignore[attr-defined]
        into.put(line)


def _wait_for_line(lines: queue.Queue[str], text: str, seen: list[str], limit: float) -> None:
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        try:
            line = lines.get(timeout=0.1)
        except queue.Empty:
            continue
        seen.append(line)
        if text in line:
            return
    raise AssertionError(f"no line with {text!r} in {limit} s: {seen}")


def _sleep_child(cli: psutil.Process, limit: float) -> psutil.Process:
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        for child in descendants(cli):
            try:
                if child.cmdline() == ["sleep", "60"]:
                    return child
            except psutil.NoSuchProcess:
                continue
        time.sleep(0.05)
    raise AssertionError("the step process 'sleep 60' did not start")


@pytest.mark.parametrize(
    ("signum", "code"),
    [(signal.SIGINT, 130), (signal.SIGHUP, 129)],
    ids=["ctrl-c", "hangup"],
)
def test_signal_cancels_the_run_and_leaves_no_process(
    tmp_path: Path, template: Callable[..., Path], signum: signal.Signals, code: int
) -> None:
    folder = template("sleeper", ["sleep 60"])
    env = {k: v for k, v in os.environ.items() if not k.startswith("FLOWSERV_")}
    lines: queue.Queue[str] = queue.Queue()
    seen: list[str] = []
    with subprocess.Popen(
        cli_command(tmp_path / "home", "run", str(folder)),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=tmp_path,
        env=env,
    ) as proc:
        reader = threading.Thread(target=_lines, args=(proc.stdout, lines), daemon=True)
        reader.start()
        try:
            _wait_for_line(lines, ": RUNNING", seen, limit=20)
            step = _sleep_child(psutil.Process(proc.pid), limit=10)
            pgid = os.getpgid(step.pid)
            assert pgid != os.getpgid(proc.pid)  # the step has a process group of its own
            proc.send_signal(signum)
            status = proc.wait(timeout=20)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        reader.join(timeout=5)
        stderr = proc.stderr.read() if proc.stderr else ""
    while not lines.empty():
        seen.append(lines.get())
    output = "".join(seen)
    assert status == code, (output, stderr)
    assert "CANCELED" in output
    assert f"interrupted by {signum.name}" in output
    assert "Traceback" not in stderr
    assert not psutil.pid_exists(step.pid) or step.status() == psutil.STATUS_ZOMBIE
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        pass
    else:
        raise AssertionError(f"process group {pgid} of the step still has processes")
