"""Step processes under uvloop (the loop uvicorn picks): each pipe is closed once.

uvloop's pipe transports close their descriptor later, in the loop. Closing the pipe
object as well closed the number at once, so a file opened in between (a socket, a
directory that a run folder's removal walks) lost its descriptor when the transport's
close came: the server failed with EBADF under concurrent runs.
"""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import pytest

from flowserv_async.engine.log import RunLog
from flowserv_async.engine.process import _ChildProcess, _OutputCapture

uvloop = pytest.importorskip("uvloop", reason="uvloop comes with the server extra")


def test_closing_a_step_process_leaves_descriptors_opened_afterwards_alone(
    tmp_path: Path,
) -> None:
    async def main() -> None:
        output = _OutputCapture(RunLog(), "s")
        child = await _ChildProcess.start(
            ["true"], cwd=tmp_path, env=dict(os.environ), output=output
        )
        await child.exited.wait()
        child.close()
        # New descriptors, which take the lowest free numbers: the pipes' if they are free.
        fds = [fd for _ in range(2) for fd in os.pipe()]
        await asyncio.sleep(0.1)  # the transports' own close has run by now
        try:
            for fd in fds:
                os.fstat(fd)
        finally:
            for fd in fds:
                os.close(fd)

    uvloop.run(main())
