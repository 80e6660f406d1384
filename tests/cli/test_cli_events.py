"""``events``, ``runs wait`` and ``runs logs --follow`` on a run of another process."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

from click.testing import Result

Invoke = Callable[..., Result]

CLI = [sys.executable, "-m", "flowserv_async.cli"]


def test_events_wait_and_follow_see_a_run_of_another_process(
    invoke: Invoke, template: Callable[..., Path], cli_dir: Path
) -> None:
    folder = template("slow", ["echo a", "sleep 1", "echo b"])
    base = ["--basedir", str(cli_dir)]
    # The run's process creates the database; the stream replays from its start.
    runner = subprocess.Popen([*CLI, *base, "run", str(folder)], stdout=subprocess.DEVNULL)
    watcher = subprocess.Popen(
        [*CLI, *base, "events", "--json", "--after", "0"], stdout=subprocess.PIPE, text=True
    )
    try:
        assert watcher.stdout is not None
        created = json.loads(watcher.stdout.readline())
        assert created["type"] == "run.created"
        run_id = created["runId"]
        followed = invoke("--json", "runs", "logs", run_id, "--follow")
        assert followed.exit_code == 0, followed.output
        log = json.loads(followed.stdout)
        assert log["state"] == "SUCCESS"
        assert [line["text"] for line in log["lines"]] == ["a", "b"]
        waited = invoke("--json", "runs", "wait", run_id)
        assert waited.exit_code == 0
        assert json.loads(waited.stdout)["state"] == "SUCCESS"
        kinds = []
        while "SUCCESS" not in kinds:
            event = json.loads(watcher.stdout.readline())
            assert event["runId"] == run_id
            kinds.append(event["data"].get("state", event["type"]))
        assert kinds[0] == "RUNNING" and "run.log" in kinds
        assert runner.wait(timeout=30) == 0
    finally:
        runner.kill()
        runner.wait()
        watcher.send_signal(signal.SIGINT)
        assert watcher.wait(timeout=30) == 130
        assert watcher.stdout is not None
        watcher.stdout.close()


def test_runs_wait_errors(invoke: Invoke, template: Callable[..., Path]) -> None:
    failing = template("failing", ["exit 3"])
    run = invoke("--json", "run", str(failing))
    run_id = json.loads(run.stdout)["id"]
    waited = invoke("--json", "runs", "wait", run_id, "--timeout", "5")
    assert waited.exit_code == 1
    assert json.loads(waited.stdout)["state"] == "ERROR"
    unknown = invoke("runs", "wait", "nope")
    assert (unknown.exit_code, unknown.stderr) == (1, "error: unknown run 'nope'\n")


def test_events_with_unknown_filters_fail_with_one_line(invoke: Invoke) -> None:
    unknown = invoke("events", "--workflow", "nope")
    assert (unknown.exit_code, unknown.stderr) == (1, "error: unknown workflow 'nope'\n")
    bad = invoke("events", "--after", "-1")
    assert bad.exit_code == 2
