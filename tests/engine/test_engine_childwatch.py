"""The pidfd child watcher that the engine installs on Python 3.11."""

from __future__ import annotations

import asyncio
import logging
import os
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from flowserv_async.controller import EngineContext, EngineLimits
from flowserv_async.engine._childwatch import PidfdChildWatcher, use_pidfd_child_watcher
from flowserv_async.engine.controller import AsyncioEngine
from flowserv_async.engine.memory import MemoryRunStore
from flowserv_async.volume import FileSystemVolume

pytestmark = pytest.mark.skipif(
    sys.version_info >= (3, 12) or not hasattr(os, "pidfd_open"),
    reason="Python 3.12+ uses pidfd child watching by default",
)


async def _spawn(script: str) -> int:
    """Start ``sh -c script``; return its pid (no Popen object that would reap it)."""
    argv = ["/bin/sh", "-c", script]
    return await asyncio.to_thread(os.posix_spawn, argv[0], argv, dict(os.environ))


@pytest.fixture
def default_watcher() -> Iterator[None]:
    """Start from asyncio's default watcher; put back what was installed before."""
    policy = asyncio.get_event_loop_policy()
    before = policy.get_child_watcher()
    policy.set_child_watcher(asyncio.ThreadedChildWatcher())
    yield
    policy.set_child_watcher(before)


@pytest.mark.usefixtures("default_watcher")
async def test_installed_in_place_of_the_thread_per_child_watcher() -> None:
    assert use_pidfd_child_watcher()
    assert isinstance(asyncio.get_child_watcher(), PidfdChildWatcher)
    assert use_pidfd_child_watcher()  # idempotent
    proc = await asyncio.create_subprocess_exec(
        "/bin/sh", "-c", "sleep 0.2; exit 3", stdout=subprocess.DEVNULL
    )
    # ThreadedChildWatcher would run a thread asyncio-waitpid-N until the child exits.
    assert not [t for t in threading.enumerate() if "waitpid-" in t.name]
    assert await proc.wait() == 3


@pytest.mark.usefixtures("default_watcher")
async def test_a_watcher_the_application_chose_stays() -> None:
    chosen = asyncio.SafeChildWatcher()
    asyncio.set_child_watcher(chosen)
    assert not use_pidfd_child_watcher()
    assert asyncio.get_child_watcher() is chosen


@pytest.mark.usefixtures("default_watcher")
async def test_engine_open_installs_it(tmp_path: Path) -> None:
    engine = AsyncioEngine()
    volume = FileSystemVolume(tmp_path / "store")
    await engine.open(EngineContext(MemoryRunStore(), volume, tmp_path / "runs", EngineLimits()))
    try:
        assert isinstance(asyncio.get_child_watcher(), PidfdChildWatcher)
    finally:
        await engine.aclose()


async def test_serves_a_new_event_loop_each_time() -> None:
    watcher = PidfdChildWatcher()

    async def exit_code() -> int:
        loop = asyncio.get_running_loop()
        pid = await _spawn("exit 5")
        done = loop.create_future()
        watcher.add_child_handler(pid, lambda pid, code: done.set_result(code))
        return await done

    assert await exit_code() == 5
    assert await asyncio.to_thread(asyncio.run, exit_code()) == 5


async def test_a_child_reaped_elsewhere_reports_255(caplog: pytest.LogCaptureFixture) -> None:
    pid = await _spawn("exit 0")
    pidfd = os.pidfd_open(pid)
    await asyncio.to_thread(os.waitpid, pid, 0)  # reaped here, behind the watcher's back
    codes: list[int] = []
    with caplog.at_level(logging.WARNING):
        PidfdChildWatcher._do_wait(
            asyncio.get_running_loop(), pid, pidfd, lambda pid, code: codes.append(code), ()
        )
    assert codes == [255]
    assert "already read" in caplog.text
    with pytest.raises(OSError, match="Bad file descriptor"):
        os.fstat(pidfd)  # closed
