"""Containment of a run's processes: every process a run starts can be found and killed.

A step's command runs in a process group of its own, but a process may leave the group
(``setsid()``, a daemon's double fork) and outlive the run, the engine, or both. So each
run is contained as a whole, by the first mechanism the machine offers:

``cgroup``
    Linux cgroup v2 with ``cgroup.kill`` (kernel 5.14+) in a hierarchy this process can
    write: each run gets the cgroup ``<own cgroup>/flowserv-async/run-<run id>``. A
    command starts through a tiny ``sh`` wrapper that moves itself into the cgroup before
    it execs the command, so everything the command forks is in it, however it detaches;
    no process can leave a cgroup it cannot write to. Killing writes ``cgroup.kill``:
    the kernel kills every member at once, forks in flight included. Each run cgroup
    records the process that made it (attribute ``user.flowserv.owner``): an engine
    that opens removes the empty ones of makers that are gone (engines that were killed).
    A watchdog process (one per engine process, started with its first run cgroup,
    detached: it is not the engine's child) kills the run cgroups of that process when
    it dies, however it dies: it waits for the end of a pipe that only the engine's
    process holds, and ends then. So commands in a cgroup need
    no parent death signal of their own (``setpriv``, about 1 ms of CPU per command).
``tag``
    Elsewhere every process of a run carries ``FLOWSERV_RUN_TAG=<run id>`` in its
    environment, which forks and execs inherit; killing sends SIGKILL to each process
    whose ``/proc/<pid>/environ`` holds the tag, until none is left. A process that
    replaces its environment (``env -i``) escapes this mechanism.

Neither refers to a process by pid alone, so a recycled pid is never killed. The
:meth:`RunProcesses.record` of a run is what another engine needs to kill what an
interrupted run left behind (:func:`kill_leftovers`).
"""

from __future__ import annotations

import contextlib
import errno
import os
import select
import signal
import sys
import threading
from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from functools import cache
from pathlib import Path
from typing import Any

import anyio

from flowserv_async._threads import run_blocking

#: Environment variable that marks the processes of a run (both mechanisms set it).
RUN_TAG = "FLOWSERV_RUN_TAG"
CGROUP = "cgroup"
TAG = "tag"
#: Choices of ``FLOWSERV_CONTAINMENT``: ``auto`` (a cgroup where the machine allows it,
#: else the tag) or ``tag`` (always the tag: no cgroup migration per command).
CONTAINMENTS = ("auto", TAG)

_CGROUP_PARENT = "flowserv-async"
# How long killing waits for the members to be gone; SIGKILL cannot be ignored, so this
# only bounds a wait for the kernel.
_KILL_WAIT = 5.0
_POLL = 0.02
# How long the start of the watchdog may take before commands get setpriv after all.
_WATCHDOG_START = 10.0
# Moves the shell into the cgroup given as $0, then replaces it with the command.
_ENTER_CGROUP = 'echo 0 > "$0/cgroup.procs" && exec "$@"'
# Extended attribute of a run cgroup: "<pid>:<start time>" of the process that made it.
_OWNER = "user.flowserv.owner"
# The watchdog: says it runs (a byte on descriptor 4), reads its stdin until EOF (the
# engine's process is gone: only it held the pipe), then kills the run cgroups that
# process made. argv: root, owner.
_WATCHDOG = """
import os, sys
root, owner = sys.argv[1], sys.argv[2]
os.write(4, b"+")
os.close(4)
while os.read(0, 512):
    pass
for name in os.listdir(root):
    path = os.path.join(root, name)
    try:
        if name.startswith("run-") and os.getxattr(path, "user.flowserv.owner").decode() == owner:
            with open(os.path.join(path, "cgroup.kill"), "w") as kill:
                kill.write("1")
    except OSError:
        pass
"""


class RunProcesses(ABC):
    """The processes of one run: how to start them contained, and how to kill them all."""

    mechanism: str
    #: True when the processes die with the engine's process without a parent death
    #: signal of their own.
    dies_with_engine = False

    def __init__(self, tag: str) -> None:
        self.tag = tag
        self.closed = False

    def environment(self) -> dict[str, str]:
        """Variables to add to the environment of every command of the run."""
        return {RUN_TAG: self.tag}

    def wrap(self, argv: Sequence[str]) -> list[str]:
        """The command line that starts ``argv`` inside the run's containment."""
        return list(argv)

    @abstractmethod
    def record(self) -> dict[str, str]:
        """JSON-ready description that :func:`kill_leftovers` accepts."""

    @abstractmethod
    async def kill(self) -> None:
        """Kill every process of the run and wait (bounded) until they are gone."""

    async def close(self) -> None:
        """Kill every process of the run and release what the containment holds.

        Only the first call does anything: no command of the run starts after it.
        """
        if not self.closed:
            self.closed = True
            await self._close()

    async def _close(self) -> None:
        await self.kill()


class CgroupProcesses(RunProcesses):
    """A run in a cgroup v2 of its own (see the module docstring)."""

    mechanism = CGROUP

    def __init__(self, tag: str, path: Path, *, dies_with_engine: bool = False) -> None:
        super().__init__(tag)
        self.path = path
        self.dies_with_engine = dies_with_engine

    def wrap(self, argv: Sequence[str]) -> list[str]:
        """``sh -c 'enter the cgroup; exec "$@"' <cgroup> argv...``."""
        return ["/bin/sh", "-c", _ENTER_CGROUP, str(self.path), *argv]

    def record(self) -> dict[str, str]:
        """``{mechanism: cgroup, path, tag}``."""
        return {"mechanism": CGROUP, "path": str(self.path), "tag": self.tag}

    async def kill(self) -> None:
        """Write ``cgroup.kill`` and wait until the cgroup is empty."""
        if not await run_blocking(_kill_cgroup, self.path):
            return  # empty, or gone
        # Nothing notifies us when the members are gone (they are not our children).
        with anyio.move_on_after(_KILL_WAIT):
            while True:
                if not await run_blocking(_populated, self.path):
                    return
                await anyio.sleep(_POLL)

    async def _close(self) -> None:
        """Kill the members, then remove the cgroup."""
        # Usually the cgroup is empty by now: one trip to a worker thread removes it.
        if await run_blocking(_remove_empty_cgroup, self.path):
            return
        await self.kill()
        await run_blocking(_remove_cgroup, self.path)


class TaggedProcesses(RunProcesses):
    """A run whose processes are known by the tag in their environment."""

    mechanism = TAG

    def record(self) -> dict[str, str]:
        """``{mechanism: tag, tag}``."""
        return {"mechanism": TAG, "tag": self.tag}

    async def kill(self) -> None:
        """SIGKILL every tagged process until a look at /proc finds none."""
        # Repeated, because a process may have forked between the look and the kill.
        with anyio.move_on_after(_KILL_WAIT):
            while True:
                if not await run_blocking(_kill_tagged, self.tag):
                    return
                await anyio.sleep(_POLL)


async def contain_run(run_id: str, choice: str = "auto") -> RunProcesses:
    """Containment for a new run: a cgroup where the machine allows it, else the tag.

    ``choice`` is one of :data:`CONTAINMENTS`; ``tag`` skips the cgroup.
    """
    if choice == TAG:
        return TaggedProcesses(run_id)
    made = await run_blocking(_make_run_cgroup, run_id)
    if made is None:
        return TaggedProcesses(run_id)
    path, watched = made
    return CgroupProcesses(run_id, path, dies_with_engine=watched)


async def remove_stale_cgroups() -> None:
    """Remove the empty run cgroups whose maker is gone (an engine that was killed).

    A cgroup is a live engine's while the process that made it runs: its steps enter
    and leave it, so it is empty between them. One without a recorded maker (it is being
    made) is left alone too; a cgroup with processes in it cannot be removed.
    """
    await run_blocking(_remove_stale_cgroups)


async def kill_leftovers(record: Mapping[str, Any]) -> None:
    """Kill what a run described by :meth:`RunProcesses.record` left running.

    Unknown or malformed records are ignored: there is nothing they could name.
    """
    tag = record.get("tag")
    if not isinstance(tag, str) or not tag:
        return
    processes: RunProcesses
    path = record.get("path")
    if record.get("mechanism") == CGROUP and isinstance(path, str):
        # Only a run cgroup of ours, never another path that a record might hold.
        if Path(path).name != f"run-{tag}" or Path(path).parent.name != _CGROUP_PARENT:
            return
        processes = CgroupProcesses(tag, Path(path))
    else:
        processes = TaggedProcesses(tag)
    await processes.close()


def mechanism() -> str:
    """The mechanism new runs get on this machine: ``cgroup`` or ``tag`` (reads /proc)."""
    return CGROUP if cgroup_root() is not None else TAG


@cache
def cgroup_root() -> Path | None:
    """The folder of run cgroups, or None when cgroup v2 with ``cgroup.kill`` is unusable.

    Found once per process: the cgroup v2 mount, the cgroup this process is in, and
    ``flowserv-async`` below it, created if needed.
    """
    if sys.platform != "linux":
        return None
    mount = _cgroup2_mount()
    own = _own_cgroup()
    if mount is None or own is None:
        return None
    root = mount / own.lstrip("/") / _CGROUP_PARENT
    try:
        root.mkdir(exist_ok=True)
    except OSError:
        return None
    return root if (root / "cgroup.kill").exists() else None


def _cgroup2_mount() -> Path | None:
    try:
        with open("/proc/self/mounts", encoding="utf-8") as mounts:
            for line in mounts:
                fields = line.split()
                if len(fields) > 2 and fields[2] == "cgroup2":
                    return Path(fields[1])
    except OSError:
        return None
    return None


def _own_cgroup() -> str | None:
    try:
        with open("/proc/self/cgroup", encoding="utf-8") as groups:
            for line in groups:
                if line.startswith("0::"):
                    return line[3:].strip()
    except OSError:
        return None
    return None


def _make_run_cgroup(run_id: str) -> tuple[Path, bool] | None:
    """Make the cgroup of a run; return it, and whether the watchdog watches it."""
    root = cgroup_root()
    if root is None:
        return None
    path = root / f"run-{run_id}"
    try:
        # An empty one left by a dead engine is made anew: until its maker is recorded
        # below it has none, and so it is never taken for a stale one meanwhile.
        _remove_empty_cgroup(path)
        path.mkdir(exist_ok=True)
    except OSError:
        return None
    owner = _process_identity(os.getpid())
    try:
        os.setxattr(path, _OWNER, owner.encode())
    except OSError:
        return path, False  # the watchdog would not know it for ours
    return path, _watchdog.start(root, owner)


class _Watchdog:
    """The watchdog of this process's run cgroups (see the module docstring)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        # The write end of its pipe: held open, never written, as long as we live.
        self._pipe: int | None = None
        self._running = False
        os.register_at_fork(after_in_child=self._forget)

    def start(self, root: Path, owner: str) -> bool:
        """Start the watchdog unless it runs (blocking); True when it runs."""
        with self._lock:
            if self._pipe is None:
                self._pipe, self._running = _spawn_watchdog(root, owner)
            return self._running

    def _forget(self) -> None:
        # A forked child is another process, with cgroups of its own: it starts its own
        # watchdog, and must not keep the parent's pipe open (that would keep the
        # parent's watchdog waiting after the parent died).
        self._lock = threading.Lock()
        if self._pipe is not None:
            with contextlib.suppress(OSError):
                os.close(self._pipe)
        self._pipe, self._running = None, False


def _spawn_watchdog(root: Path, owner: str) -> tuple[int | None, bool]:
    """Start a watchdog process.

    Returns:
        The write end of its pipe (None when none is held), and True once the watchdog
        said that it runs.

    """
    # The ends are not inherited by other processes (Python's default): no command of a
    # run can hold the pipe open. The watchdog gets the read end as its stdin, and the
    # write end of a second pipe on which it says that it runs.
    read, write = os.pipe()
    ready, ready_write = os.pipe()
    watchdog = [sys.executable, "-I", "-S", "-c", _WATCHDOG, str(root), owner]
    try:
        # Started by a shell that exits at once: the watchdog is nobody's child here (no
        # zombie to reap, not among this process's children), in a session of its own
        # (killing the engine's process group spares it). The explicit redirection
        # keeps the shell from giving the background command /dev/null as stdin.
        shell = os.posix_spawn(
            "/bin/sh",
            ["/bin/sh", "-c", '"$@" <&3 3<&- &', "sh", *watchdog],
            {},
            file_actions=[
                (os.POSIX_SPAWN_DUP2, read, 3),
                (os.POSIX_SPAWN_DUP2, ready_write, 4),
                (os.POSIX_SPAWN_OPEN, 0, os.devnull, os.O_RDONLY, 0),
                (os.POSIX_SPAWN_OPEN, 1, os.devnull, os.O_WRONLY, 0),
                (os.POSIX_SPAWN_OPEN, 2, os.devnull, os.O_WRONLY, 0),
            ],
            setsid=True,
        )
        os.waitpid(shell, 0)
    except OSError:
        os.close(write)
        os.close(ready)
        return None, False
    finally:
        os.close(read)
        os.close(ready_write)
    try:
        said = os.read(ready, 1) if select.select([ready], [], [], _WATCHDOG_START)[0] else None
    finally:
        os.close(ready)
    if said == b"":  # it ended (or never started): nothing reads the pipe
        os.close(write)
        return None, False
    # Not said in time: the pipe stays open, so that a late watchdog never takes this
    # process for dead; commands keep their parent death signal.
    return write, said == b"+"


_watchdog = _Watchdog()


def _process_identity(pid: int) -> str:
    """``<pid>:<start time>`` (a recycled pid has another start time); "" when gone."""
    try:
        with open(f"/proc/{pid}/stat", encoding="utf-8") as stat:
            # The command name may hold spaces and parentheses: fields follow the last ")".
            fields = stat.read().rpartition(")")[2].split()
    except OSError:
        return ""
    return f"{pid}:{fields[19]}"


def _remove_stale_cgroups() -> None:
    root = cgroup_root()
    if root is None:
        return
    for path in root.glob("run-*"):
        try:
            owner = os.getxattr(path, _OWNER).decode()
        except OSError:
            continue  # gone, or its maker is not recorded yet
        pid, _, _ = owner.partition(":")
        if pid.isdigit() and _process_identity(int(pid)) == owner:
            continue
        with contextlib.suppress(OSError):
            _remove_empty_cgroup(path)


def _kill_cgroup(path: Path) -> bool:
    """Write ``cgroup.kill`` unless the cgroup is empty; True when it had members."""
    if not _populated(path):
        return False
    try:
        (path / "cgroup.kill").write_text("1")
    except FileNotFoundError:
        return False
    return True


def _populated(path: Path) -> bool:
    try:
        events = (path / "cgroup.events").read_text()
    except FileNotFoundError:
        return False
    return "populated 1" in events


def _remove_empty_cgroup(path: Path) -> bool:
    """Remove the cgroup if nothing is in it; True when it is gone."""
    try:
        path.rmdir()
    except FileNotFoundError:
        return True
    except OSError as err:
        if err.errno == errno.EBUSY:
            return False
        raise
    return True


def _remove_cgroup(path: Path) -> None:
    try:
        path.rmdir()
    except FileNotFoundError:
        pass
    except OSError as err:
        # Still busy after the bounded wait: the next sweep of the engine tries again.
        if err.errno != errno.EBUSY:
            raise


def _kill_tagged(tag: str) -> int:
    """SIGKILL the processes whose environment holds the tag; return how many."""
    marker = f"\0{RUN_TAG}={tag}\0".encode()
    own = os.getpid()
    killed = 0
    with os.scandir("/proc") as entries:
        pids = [int(entry.name) for entry in entries if entry.name.isdigit()]
    for pid in pids:
        if pid == own:
            continue
        try:
            with open(f"/proc/{pid}/environ", "rb") as environ:
                data = b"\0" + environ.read()
        except OSError:
            continue  # gone, a zombie, or not ours to read
        if marker in data:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, signal.SIGKILL)
                killed += 1
    return killed
