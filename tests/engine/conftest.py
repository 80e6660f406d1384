"""Helpers for engine tests: look at real processes with psutil, off the event loop."""

from __future__ import annotations

import os

import anyio
import psutil
import pytest
from runs_helpers import command_processes


def _live_members(pgid: int) -> list[int]:
    members = []
    for proc in psutil.process_iter(["status"]):
        try:
            if os.getpgid(proc.pid) == pgid and proc.info["status"] != psutil.STATUS_ZOMBIE:
                members.append(proc.pid)
        except (ProcessLookupError, psutil.Error):
            continue
    return members


def _alive(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def _group_leaders() -> list[int]:
    """Our child processes that lead their own process group (the steps' processes).

    Commands in a run cgroup are the children of our launcher, not ours: they count.
    """
    leaders = []
    for child in command_processes():
        try:
            if os.getpgid(child.pid) == child.pid and child.status() != psutil.STATUS_ZOMBIE:
                leaders.append(child.pid)
        except (ProcessLookupError, psutil.Error):
            continue
    return leaders


class ProcessProbe:
    """Asks the OS which processes exist (psutil runs in a thread: it reads /proc)."""

    async def members(self, pgid: int) -> list[int]:
        """Processes of the group that are alive (zombies do not count)."""
        return await anyio.to_thread.run_sync(_live_members, pgid)

    async def alive(self, pid: int) -> bool:
        """True while the process exists and is not a zombie."""
        return await anyio.to_thread.run_sync(_alive, pid)

    async def leaders(self) -> list[int]:
        """Our live child processes that lead a process group of their own."""
        return await anyio.to_thread.run_sync(_group_leaders)

    async def leader(self) -> int:
        """Wait for the single step process this test started; return its pid (= pgid)."""
        with anyio.fail_after(10):
            while True:
                leaders = await anyio.to_thread.run_sync(_group_leaders)
                if leaders:
                    assert len(leaders) == 1, leaders
                    return leaders[0]
                await anyio.sleep(0.02)

    async def wait_members(self, pgid: int, count: int) -> list[int]:
        """Wait until the group has at least ``count`` live processes."""
        with anyio.fail_after(10):
            while len(members := await self.members(pgid)) < count:
                await anyio.sleep(0.02)
            return members


@pytest.fixture
def probe() -> ProcessProbe:
    return ProcessProbe()
