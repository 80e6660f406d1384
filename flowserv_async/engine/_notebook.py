"""Run one notebook step with papermill, as a step process of its own.

``python -m flowserv_async.engine._notebook NOTEBOOK OUTPUT PARAMETERS_JSON`` executes
NOTEBOOK (relative to the working directory, the run folder) with the given parameters
and writes the executed notebook to OUTPUT. The cells' stdout and stderr are passed on
as they come (the worker starts this with ``python -u``), so they reach the run log live.

papermill's kernel starts in a session of its own, out of reach of the signal that ends
this step's process group. On SIGTERM this process therefore kills the sessions of its
children (the kernel and whatever the kernel started in its group) before it exits. A
kernel orphaned otherwise (this process killed outright) still exits on its own: it
watches its parent (``JPY_PARENT_PID``).

Exit codes: 0 success, 1 the notebook failed, 3 papermill or ipykernel is missing.
"""

from __future__ import annotations

import json
import os
import signal
import sys
from types import FrameType

MISSING_EXTRA = (
    "notebook steps need papermill and ipykernel: pip install 'flowserv-async[notebooks]'"
)


def _children(parent: int) -> list[int]:
    """The ids of the live child processes of ``parent`` (from ``/proc``)."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", "rb") as stat:
                fields = stat.read().rsplit(b")", 1)[1].split()
        except OSError:
            continue  # the process ended meanwhile
        if int(fields[1]) == parent:  # fields: state, ppid, ...
            found.append(int(entry))
    return found


def _kill_child_sessions(signum: int, frame: FrameType | None) -> None:
    own_group = os.getpgid(0)
    for pid in _children(os.getpid()):
        try:
            group = os.getpgid(pid)
            if group != own_group:
                os.killpg(group, signal.SIGKILL)
        except ProcessLookupError:
            continue
    os._exit(128 + signum)


def main(argv: list[str]) -> int:
    """Execute the notebook; the exit code."""
    signal.signal(signal.SIGTERM, _kill_child_sessions)
    notebook, output, parameters = argv[1], argv[2], json.loads(argv[3])
    try:
        import ipykernel  # noqa: F401  (the kernel papermill starts)
        import papermill
    except ImportError:
        sys.stderr.write(MISSING_EXTRA + "\n")
        return 3
    try:
        # papermill needs the output's folder (flowserv left that to the template).
        os.makedirs(os.path.dirname(output) or ".", exist_ok=True)
        papermill.execute_notebook(
            notebook,
            output,
            parameters=parameters,
            progress_bar=False,
            stdout_file=sys.stdout,
            stderr_file=sys.stderr,
        )
    except Exception as exc:
        sys.stderr.write(f"notebook '{notebook}' failed: {type(exc).__name__}: {exc}\n")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
