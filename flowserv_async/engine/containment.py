"""Containment of a run's processes: every process a run starts can be found and killed.

A step's command runs in a process group of its own, but a process may leave the group
(``setsid()``, a daemon's double fork) and outlive the run, the engine, or both. So each
run is contained as a whole, by the first mechanism the machine offers:

``cgroup``
    Linux cgroup v2 with ``cgroup.kill`` (kernel 5.14+) in a hierarchy this process can
    write: each run gets the cgroup ``<own cgroup>/flowserv-async/run-<run id>``. Its
    commands are started by the launcher, a small process per engine process (started
    with the first run cgroup, detached: it is not the engine's child). The launcher
    moves itself into the run's cgroup, starts the command there (a vfork: the command
    is in the cgroup before its first instruction, and so is everything it forks,
    however it detaches; no process can leave a cgroup it cannot write to), and moves
    back. It reports each command's pid and exit status on a pipe of the command's own.
    Killing writes ``cgroup.kill``: the kernel kills every member at once, forks in
    flight included. Each run cgroup records the process that made it (attribute
    ``user.flowserv.owner``): an engine that opens removes the empty ones of makers that
    are gone (engines that were killed). The launcher is also the watchdog: when the
    engine's process dies, however it dies, the launcher kills the run cgroups that
    process made, and ends (it waits on a socket whose other end only the engine's
    process holds). So commands in a cgroup need no parent death signal of their own
    (``setpriv``, about 1 ms of CPU per command), nor a shell that moves them into the
    cgroup before it execs them (0.7 ms). Where the launcher cannot start, runs get
    the tag.
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
import json
import os
import select
import signal
import socket
import subprocess
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
# How long the start of the launcher may take before runs get the tag after all.
_LAUNCHER_START = 10.0
# Extended attribute of a run cgroup: "<pid>:<start time>" of the process that made it.
_OWNER = "user.flowserv.owner"
# The launcher (see the module docstring): says it runs (a byte on its stdout), then
# starts the commands that arrive on its stdin, a socket (see _Launcher.send), until the
# socket ends: the engine's process is gone. Then it kills the run cgroups that process
# made. A command's own pipe gets {"pid": n} once the command runs (or the error that
# kept it from starting), then {"exit": code}. argv: root, owner.
_LAUNCHER = r"""
import json, os, selectors, signal, socket, subprocess, sys
root, owner = sys.argv[1], sys.argv[2]
# Started in the background by a shell, which ignores these: commands would inherit that.
signal.signal(signal.SIGINT, signal.SIG_DFL)
signal.signal(signal.SIGQUIT, signal.SIG_DFL)
os.close(os.pidfd_open(os.getpid()))  # exits cannot be watched: do not say it runs


def enter(cgroup):
    fd = os.open(os.path.join(cgroup, "cgroup.procs"), os.O_WRONLY)
    try:
        os.write(fd, b"0")
    finally:
        os.close(fd)


def report(pipe, message):
    try:
        os.write(pipe, json.dumps(message).encode() + b"\n")
    except OSError:
        pass  # the engine stopped listening (it closed its end)


def launch(request, stdout, stderr):
    command = json.loads(request)
    enter(command["cgroup"])
    try:
        return subprocess.Popen(
            command["argv"], stdin=subprocess.DEVNULL, stdout=stdout, stderr=stderr,
            cwd=command["cwd"], env=command["env"], start_new_session=True,
        )
    finally:
        # Never stay in a run cgroup: killing it would kill the launcher too.
        enter(os.path.dirname(root))


def serve(engine):
    watched = selectors.DefaultSelector()
    watched.register(engine, selectors.EVENT_READ)
    while True:
        for key, _ in watched.select():
            if key.fileobj is not engine:
                child, pipe = key.data
                watched.unregister(key.fd)
                os.close(key.fd)
                report(pipe, {"exit": child.wait()})
                os.close(pipe)
                continue
            request, fds, _, _ = socket.recv_fds(engine, 1 << 20, 3)
            if not request:
                return
            stdout, stderr, pipe = fds
            try:
                child = launch(request, stdout, stderr)
            except OSError as exc:
                error = {"errno": exc.errno, "strerror": exc.strerror, "filename": exc.filename}
                report(pipe, error)
                os.close(pipe)
            else:
                report(pipe, {"pid": child.pid})
                watched.register(os.pidfd_open(child.pid), selectors.EVENT_READ, (child, pipe))
            finally:
                os.close(stdout)
                os.close(stderr)


os.write(1, b"+")
os.dup2(os.open(os.devnull, os.O_WRONLY), 1)
serve(socket.socket(fileno=0))
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

    def __init__(self, tag: str) -> None:
        self.tag = tag
        self.closed = False

    def environment(self) -> dict[str, str]:
        """Variables to add to the environment of every command of the run."""
        return {RUN_TAG: self.tag}

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

    def __init__(self, tag: str, path: Path) -> None:
        super().__init__(tag)
        self.path = path

    def launch(
        self,
        argv: Sequence[str],
        cwd: Path,
        env: Mapping[str, str],
        pipes: tuple[int, int, int],
    ) -> None:
        """Have the launcher start ``argv`` in the run's cgroup (blocking).

        ``pipes`` are the write ends of the command's stdout, stderr and reports: the
        launcher writes ``{"pid": n}`` (or ``{"errno": ...}``) and later ``{"exit": code}``
        to the third, one JSON document a line.

        Raises:
            OSError: the launcher does not run, and cannot be started again.

        """
        _launcher.send(self.path, argv, cwd, env, pipes)

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
    path = await run_blocking(_make_run_cgroup, run_id)
    if path is None:
        return TaggedProcesses(run_id)
    return CgroupProcesses(run_id, path)


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


def _make_run_cgroup(run_id: str) -> Path | None:
    """Make the cgroup of a run; None where runs cannot have one (or no launcher runs)."""
    root = cgroup_root()
    if root is None:
        return None
    owner = _own_identity()
    if not _launcher.start(root, owner):
        return None
    path = root / f"run-{run_id}"
    try:
        try:
            path.mkdir()
        except FileExistsError:
            # An empty one left by a dead engine is made anew: until its maker is
            # recorded below it has none, and so it is never taken for a stale one
            # meanwhile.
            _remove_empty_cgroup(path)
            path.mkdir(exist_ok=True)
    except OSError:
        return None
    try:
        os.setxattr(path, _OWNER, owner.encode())
    except OSError:
        # The launcher would not know it for ours when this process dies.
        _remove_cgroup(path)
        return None
    return path


class _Launcher:
    """The launcher of this process's commands in run cgroups (see the module docstring)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        # Our end of its socket: held open as long as we live.
        self._socket: socket.socket | None = None
        self._running = False
        self._made_for: tuple[Path, str] | None = None
        os.register_at_fork(after_in_child=self._forget)

    def start(self, root: Path, owner: str) -> bool:
        """Start the launcher unless it runs (blocking); True when it runs."""
        with self._lock:
            if self._made_for is None:
                self._made_for = (root, owner)
                self._socket, self._running = _spawn_launcher(root, owner)
            return self._running

    def send(
        self,
        cgroup: Path,
        argv: Sequence[str],
        cwd: Path,
        env: Mapping[str, str],
        pipes: tuple[int, int, int],
    ) -> None:
        """Hand a command to the launcher (blocking); start a new one if it ended."""
        command = {"cgroup": str(cgroup), "argv": list(argv), "cwd": str(cwd), "env": dict(env)}
        message = json.dumps(command).encode()
        with self._lock:
            try:
                self._send(message, pipes)
            except ConnectionError:
                # It ended (killed?). A new one starts the command, and kills the run
                # cgroups of this process in its place when the process dies.
                assert self._made_for is not None, "sent to after it started"
                if self._socket is not None:
                    self._socket.close()
                self._socket, self._running = _spawn_launcher(*self._made_for)
                self._send(message, pipes)

    def _send(self, message: bytes, pipes: tuple[int, int, int]) -> None:
        if self._socket is None or not self._running:
            raise OSError(errno.ESRCH, "the launcher of run commands does not run")
        socket.send_fds(self._socket, [message], list(pipes))

    def _forget(self) -> None:
        # A forked child is another process, with cgroups of its own: it starts its own
        # launcher, and must not keep the parent's socket open (that would keep the
        # parent's launcher waiting after the parent died).
        self._lock = threading.Lock()
        if self._socket is not None:
            with contextlib.suppress(OSError):
                self._socket.close()
        self._socket, self._running, self._made_for = None, False, None


def _spawn_launcher(root: Path, owner: str) -> tuple[socket.socket | None, bool]:
    """Start a launcher process.

    Returns:
        Our end of its socket (None when none is held), and True once the launcher
        said that it runs.

    """
    # Neither the socket nor the pipe is inherited by other processes (Python's
    # default): no command of a run can hold the socket open. The launcher gets its end
    # as stdin, and the write end of a pipe on which it says that it runs as stdout.
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    ready, ready_write = os.pipe()
    launcher = [sys.executable, "-I", "-S", "-c", _LAUNCHER, str(root), owner]
    try:
        # Started by a shell that exits at once: the launcher is nobody's child here (no
        # zombie to reap, not among this process's children), in a session of its own
        # (killing the engine's process group spares it). The explicit redirection
        # keeps the shell from giving the background command /dev/null as stdin. Not
        # os.posix_spawn: glibc's leaves its internal signals ignored in the child, and
        # the commands would inherit that.
        subprocess.run(  # noqa: S603 - our own interpreter and script, no user input
            ["/bin/sh", "-c", 'exec 3<&0; "$@" <&3 3<&- &', "sh", *launcher],
            stdin=theirs.fileno(),
            stdout=ready_write,
            stderr=subprocess.DEVNULL,
            env={},
            start_new_session=True,
            check=False,
        )
    except OSError:
        ours.close()
        os.close(ready)
        return None, False
    finally:
        theirs.close()
        os.close(ready_write)
    try:
        said = os.read(ready, 1) if select.select([ready], [], [], _LAUNCHER_START)[0] else None
    finally:
        os.close(ready)
    if said == b"":  # it ended (or never started): nothing reads the socket
        ours.close()
        return None, False
    # Not said in time: the socket stays open, so that a late launcher never takes this
    # process for dead; runs get the tag.
    return ours, said == b"+"


_launcher = _Launcher()


def _own_identity() -> str:
    """:func:`_process_identity` of this process, read from /proc once per process."""
    pid = os.getpid()  # a forked child has a pid of its own, and reads its own identity
    identity = _own_identities.get(pid)
    if identity is None:
        identity = _process_identity(pid)
        if identity:
            _own_identities[pid] = identity
    return identity


# The identity of this process by pid (see _own_identity).
_own_identities: dict[int, str] = {}


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
