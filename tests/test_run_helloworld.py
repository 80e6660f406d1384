"""The hello-world runner (the README's fallback main job) works on a fresh folder."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path


def run(basedir: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "flowserv_async.examples.run_helloworld",
            "--basedir",
            str(basedir),
            *args,
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_runs_hello_world_end_to_end_and_reuses_the_install(tmp_path: Path) -> None:
    first = run(tmp_path / "fresh", "--greeting", "Hi")
    assert first.returncode == 0, first.stderr
    assert "SUCCESS" in first.stdout
    assert "Hi, Alice!" in first.stdout
    assert "1. local" in first.stdout
    second = run(tmp_path / "fresh", "--greeting", "Hello there")
    assert second.returncode == 0, second.stderr
    assert "Hello there, Alice!" in second.stdout
    # One workflow, one group, two ranked runs.
    assert "2. local" not in second.stdout  # best run per group only
    assert len(list((tmp_path / "fresh").glob("*/static"))) == 1
