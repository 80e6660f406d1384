"""Cleans up after a Dask worker process that died: ``python -m ...reaper PARENT_PID``.

A step's main process dies with its worker (the runner's parent-death signal), but what
that process started (``sleep 60 &`` under a shell) would live on in the step's process
group. One reaper per worker process watches it: every :data:`INTERVAL` seconds it notes
the process groups led by the worker's children (each command runs in a group of its
own), and when its stdin reaches end of file, which happens when the worker process
ends however it ends, it kills those groups, removes the worker's run folders
(:func:`run_root`) and exits. Blocking: it is a process of its own. (Commands in a run
cgroup are the children of the worker's launcher, which kills their cgroups itself:
:mod:`flowserv_async.engine.containment`.)
"""

from __future__ import annotations

import contextlib
import os
import select
import shutil
import signal
import sys
import tempfile
from pathlib import Path

from flowserv_async.engine.process import list_processes

INTERVAL = 0.2
"""Seconds between two looks at the worker's process groups."""


def run_root(worker: int) -> Path:
    """The folder under which worker process ``worker`` makes its run folders."""
    return Path(tempfile.gettempdir(), f"flowserv-dask-{worker}")


def step_groups(parent: int) -> set[int]:
    """The process groups led by children of ``parent`` (the step commands it runs)."""
    return {proc.pid for proc in list_processes() if proc.ppid == parent and proc.pgid == proc.pid}


def watch(parent: int) -> None:
    """Note the worker's step groups until stdin closes, then kill them and remove its runs.

    Writes ``ready`` to stdout once it has looked the first time.
    """
    groups = step_groups(parent) - {os.getpid()}
    sys.stdout.write("ready\n")
    sys.stdout.flush()
    stdin = sys.stdin.buffer.fileno()
    while True:
        readable, _, _ = select.select([stdin], [], [], INTERVAL)
        if readable and not os.read(stdin, 4096):
            break
        # The reaper is a child of the worker that leads a group of its own, too.
        groups = step_groups(parent) - {os.getpid()}
    for pgid in groups:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pgid, signal.SIGKILL)
    # A worker that ends normally has removed each run folder already; one that was
    # killed leaves them here, and nothing else would ever remove them.
    shutil.rmtree(run_root(parent), ignore_errors=True)


if __name__ == "__main__":
    watch(int(sys.argv[1]))
