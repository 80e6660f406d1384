"""flowserv-core 0.9.4's own remote client drives a whole session against the server."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
from serverutil import LiveServer

from benchmarks.flowserv_env import ensure_flowserv_venv

DRIVER = Path(__file__).with_name("remote_session.py")


@pytest.fixture(scope="session")
def flowserv_python() -> Path:
    """The interpreter of the cached flowserv-core 0.9.4 venv (built on first use)."""
    python, version = ensure_flowserv_venv(log=False)
    assert version == "0.9.4"
    return python


def test_flowservs_remote_client_session(live_server: LiveServer, flowserv_python: Path) -> None:
    done = subprocess.run(
        [str(flowserv_python), str(DRIVER), live_server.url],
        capture_output=True,
        text=True,
        timeout=120,
        env={"PATH": "/usr/bin:/bin"},
    )
    assert done.returncode == 0, done.stderr
    seen = json.loads(done.stdout)
    assert seen == {
        "login": "remote-alice",
        "token_set": True,
        "whoami": "remote-alice",
        "workflow": "Hello World",
        "groups": ["remote-team"],
        "group_members": ["remote-alice", "remote-bob"],
        "renamed": "remote-renamed",
        "upload_size": 10,
        "files": ["names.txt"],
        "uploaded_content": "Ada\nGrace\n",
        "run_state": "SUCCESS",
        "runs": ["SUCCESS"],
        "greetings": "Hello, Ada!\nHello, Grace!\n",
        "archive": ["results/analytics.json", "results/greetings.txt"],
        "ranking": [True],
        "ranking_ordered": 1,
        "canceled": "CANCELED",
        "cancel_reason": ["stop"],
        "files_after_delete": [],
        "groups_after_delete": [],
        "logout": "remote-alice",
    }
