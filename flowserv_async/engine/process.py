"""Local processes of container steps: command templates, spawning, output, killing.

Each command runs as one process in a new session (its own process group), without a
shell unless the command uses shell syntax. stdout and stderr are read as they come and
written line by line to the run log.

The process is started in a thread of its own pool: starting it (``fork_exec``, a vfork) suspends
the calling thread until the child has exec'd, which on a busy machine waits for the
scheduler, 1-2 ms per step; in the event loop's thread that stalls every other run. A
run in a cgroup has its commands started by the containment's launcher instead (they
are its children: it reports their exits). The event loop then watches the pipes and a
pidfd for the exit (Linux 5.3+; elsewhere one thread per running command waits for it),
or the launcher's reports, with plain reader callbacks: the output is
split into lines in the callback that reads it, with no reader task, stream object or
pipe transport per pipe (a burst of runs pays for each of those on the event loop, and
the garbage collector walks them as long as the steps run).

No process of a command outlives it in its process group: when the command's main
process exits, whatever it left running in its group is terminated, and when the task
running the command is cancelled (run cancelled, step timeout, sibling step failed) the
whole group gets SIGTERM, then SIGKILL after the grace period. That cleanup is shielded
from cancellation and bounded in time. Processes that leave the group are the run's
containment's to kill (:mod:`flowserv_async.engine.containment`).
"""

from __future__ import annotations

import asyncio
import codecs
import contextlib
import errno
import json
import os
import shlex
import shutil
import signal
import string
import subprocess
import sys
import threading
from collections import deque
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anyio

from flowserv_async._threads import ThreadPool, run_blocking
from flowserv_async.engine.containment import CgroupProcesses, RunProcesses
from flowserv_async.engine.log import RunLog

#: Longest line, in characters, written to the log; longer lines are split.
MAX_LINE_CHARS = 8192
#: How many stderr lines of a failed command its error message quotes.
STDERR_TAIL_LINES = 20

_CHUNK = 1 << 16
_POLL = 0.02
# After SIGKILL the kernel ends the group at once; this only bounds the wait for it.
_KILL_WAIT = 2.0
# How long output is still read after the process group ended: a process that left the
# group (setsid) may hold the pipes open forever.
_DRAIN_WAIT = 1.0
# Processes are started from these threads, at most this many at once (more would only
# queue in the kernel). They must outlive every process they started: the parent death
# signal (setpriv) fires when the THREAD that started a process ends, so anyio's worker
# threads, which end after 10 s idle, would kill long steps.
_spawner = ThreadPool(4, "flowserv-spawn")

_UNQUOTED_SHELL_CHARS = frozenset("|&;<>()$`\\*?[]{}~#!\n")
_QUOTED_SHELL_CHARS = frozenset("$`\\")
_SHELL_WORDS = frozenset(
    {
        ".", ":", "!", "{", "}", "[[", "alias", "bg", "break", "case", "cd", "command",
        "continue", "do", "done", "elif", "else", "esac", "eval", "exec", "exit", "export",
        "fg", "fi", "for", "function", "getopts", "hash", "if", "jobs", "local", "read",
        "readonly", "return", "select", "set", "shift", "source", "then", "time", "times",
        "trap", "type", "ulimit", "umask", "unalias", "unset", "until", "wait", "while",
    }
)  # fmt: skip


class _Placeholders(dict[str, str]):
    """Template values where an unknown name stands for itself (flowserv behaviour)."""

    def __missing__(self, key: str) -> str:
        return key


def expand_command(template: str, variables: Mapping[str, Any]) -> str:
    """Fill ``${name}`` (and ``$name``) placeholders; ``$$`` is a literal ``$``.

    An unknown ``${x}`` becomes ``x``, as in flowserv. Values are converted with ``str``.
    """
    values = _Placeholders({key: str(value) for key, value in variables.items()})
    return string.Template(template).safe_substitute(values).strip()


def needs_shell(command: str) -> bool:
    """True when the command uses shell syntax and must run under ``/bin/sh -c``.

    Conservative: quoting, redirection, pipes, expansions, globs, variable assignments
    and shell builtins all count; plain ``program arg 'quoted arg'`` does not.
    """
    quote: str | None = None
    for char in command:
        if quote == "'":
            if char == "'":
                quote = None
        elif quote == '"':
            if char == '"':
                quote = None
            elif char in _QUOTED_SHELL_CHARS:
                return True
        elif char in "'\"":
            quote = char
        elif char in _UNQUOTED_SHELL_CHARS:
            return True
    if quote is not None:
        return True
    words = shlex.split(command)
    if not words:
        return True
    head = words[0]
    return head in _SHELL_WORDS or ("=" in head and head.partition("=")[0].isidentifier())


# util-linux's setpriv sets the "parent death signal" and then execs the command: the
# step process gets SIGKILL when the engine's process dies, even by SIGKILL, instead of
# running on forever in its own session. (A preexec_fn would do the same, but it makes
# Python fork instead of vfork, which blocks the event loop for milliseconds per step.)
_SETPRIV = shutil.which("setpriv") if sys.platform == "linux" else None
_DIE_WITH_PARENT = [_SETPRIV, "--pdeathsig", "KILL", "--"] if _SETPRIV else []


@dataclass(frozen=True, slots=True)
class CommandResult:
    """Exit status of a command and the last lines it wrote to stderr."""

    returncode: int
    stderr_tail: tuple[str, ...]


async def run_command(
    command: str,
    *,
    cwd: Path,
    env: Mapping[str, str],
    log: RunLog,
    step: str,
    grace: float,
    processes: RunProcesses | None = None,
) -> CommandResult:
    """Run one expanded command in its own process group and capture its output.

    Args:
        command: The command line (placeholders already expanded).
        cwd: Working directory (the run folder).
        env: The complete environment of the process.
        log: Receives the stdout and stderr lines.
        step: Step name recorded with each log line.
        grace: Seconds between SIGTERM and SIGKILL when the process group is ended.
        processes: The containment of the run's processes, which the command starts in
            (processes that leave the group are killed with the run).

    Returns:
        The exit code (negative: killed by that signal; 126/127: could not be started).

    """
    command_argv = ["/bin/sh", "-c", command] if needs_shell(command) else shlex.split(command)
    launcher = processes if isinstance(processes, CgroupProcesses) else None
    # The launcher's commands die with the engine without a parent death signal.
    argv = command_argv if launcher is not None else [*_DIE_WITH_PARENT, *command_argv]
    if processes is not None:
        env = {**env, **processes.environment()}
    capture = _OutputCapture(log, step)
    try:
        # Shielded so that a cancellation can never lose the handle of a started process
        # (and so that the run's cgroup is never killed while the launcher is in it).
        with anyio.CancelScope(shield=True):
            child = await _ChildProcess.start(
                argv, cwd=cwd, env=dict(env), output=capture, launcher=launcher
            )
    except OSError as exc:
        reason = f"cannot run {command_argv[0]!r}: {exc}"
        log.append(step, "stderr", reason)
        return CommandResult(126 if isinstance(exc, PermissionError) else 127, (reason,))
    pgid = child.pid
    try:
        await child.exited.wait()
        # Processes left in the group would hold the pipes open: end them.
        await terminate_process_group(pgid, grace)
        if not child.drained.is_set():  # usually it is: no cancel scope to make then
            with anyio.move_on_after(_DRAIN_WAIT):
                await child.drained.wait()
    except BaseException:
        with anyio.CancelScope(shield=True):
            await terminate_process_group(pgid, grace)
            with anyio.move_on_after(_KILL_WAIT):
                await child.exited.wait()
            child.close()
        raise
    child.close()
    returncode = child.returncode
    assert returncode is not None, "set before exited is"
    return CommandResult(returncode, tuple(capture.stderr_tail))


async def terminate_process_group(pgid: int, grace: float) -> None:
    """End a process group: SIGTERM, then SIGKILL if anything lives after ``grace`` s.

    Returns at once when no live process is left in the group. Not shielded: callers
    that clean up after a cancellation shield it.
    """
    if not await process_group_alive(pgid):
        return
    _signal_group(pgid, signal.SIGTERM)
    with anyio.move_on_after(grace):
        await _wait_until_gone(pgid)
        return
    _signal_group(pgid, signal.SIGKILL)
    with anyio.move_on_after(_KILL_WAIT):
        await _wait_until_gone(pgid)


async def process_group_alive(pgid: int) -> bool:
    """True while the process group has a member that is not a zombie."""
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    if sys.platform != "linux":
        return True
    # Exited members stay zombies until reaped, which no parent may ever do for
    # orphans when PID 1 is not an init; only /proc tells them apart.
    return await run_blocking(_has_live_member, pgid)


async def _wait_until_gone(pgid: int) -> None:
    # Members are not our children, so nothing notifies us when they exit: poll.
    while True:
        if not await process_group_alive(pgid):
            return
        await anyio.sleep(_POLL)


@dataclass(frozen=True, slots=True)
class ProcessStat:
    """What ``/proc/{pid}/stat`` tells of a process: its state, parent and group."""

    pid: int
    state: bytes
    ppid: int
    pgid: int


def list_processes() -> Iterator[ProcessStat]:
    """Read ``/proc`` (Linux, blocking): every process that exists right now."""
    with os.scandir("/proc") as entries:
        pids = [entry.name for entry in entries if entry.name.isdigit()]
    for pid in pids:
        try:
            with open(f"/proc/{pid}/stat", "rb") as stat:
                data = stat.read()
        except OSError:
            continue
        # Format: "pid (comm) state ppid pgrp ..."; comm may hold spaces and parens.
        fields = data[data.rfind(b")") + 2 :].split()
        if len(fields) > 2:
            yield ProcessStat(int(pid), fields[0], int(fields[1]), int(fields[2]))


def _has_live_member(pgid: int) -> bool:
    return any(proc.pgid == pgid and proc.state not in (b"Z", b"X") for proc in list_processes())


def _signal_group(pgid: int, sig: signal.Signals) -> None:
    # PermissionError: a member changed its user id (setuid); nothing more can be done.
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, sig)


def _popen(
    argv: list[str], cwd: Path, env: dict[str, str]
) -> tuple[subprocess.Popen[bytes], int, int, int | None]:
    """Start the process (in the spawner pool).

    Returns:
        The process, the read ends of its stdout and stderr pipes (non-blocking), and a
        pidfd for its exit, if the machine gives one.

    """
    # Raw pipes rather than Popen's: the event loop reads the descriptors itself.
    # (Like every descriptor Python opens, they are not inherited by other processes.)
    stdout, stdout_w = os.pipe()
    stderr, stderr_w = os.pipe()
    try:
        # The command comes from the workflow template: running it is the point.
        process = subprocess.Popen(  # noqa: S603
            argv,
            stdin=subprocess.DEVNULL,
            stdout=stdout_w,
            stderr=stderr_w,
            cwd=cwd,
            env=env,
            start_new_session=True,
        )
    except BaseException:
        os.close(stdout)
        os.close(stderr)
        raise
    finally:
        os.close(stdout_w)
        os.close(stderr_w)
    os.set_blocking(stdout, False)
    os.set_blocking(stderr, False)
    if not _PIDFD:
        return process, stdout, stderr, None
    try:
        # Not reaped yet, so the pid cannot have been reused.
        return process, stdout, stderr, os.pidfd_open(process.pid)
    except OSError:  # refused (seccomp, old kernel): a thread waits for this one
        return process, stdout, stderr, None


def _launch(
    launcher: CgroupProcesses, argv: list[str], cwd: Path, env: dict[str, str]
) -> tuple[int, int, int, int, bytes]:
    """Start the process through the run's launcher (in the spawner pool).

    Returns:
        Its pid, the read ends of its stdout and stderr pipes and of the launcher's
        reports on it (all non-blocking), and what was read of the reports beyond the
        first one.

    Raises:
        OSError: the command cannot start (as raised by ``subprocess.Popen``), or the
            launcher does not run.

    """
    stdout, stdout_w = os.pipe()
    stderr, stderr_w = os.pipe()
    reports, reports_w = os.pipe()
    try:
        try:
            launcher.launch(argv, cwd, env, (stdout_w, stderr_w, reports_w))
        finally:
            # Only the launcher holds them now: their ends are seen when it lets go.
            os.close(stdout_w)
            os.close(stderr_w)
            os.close(reports_w)
        pid, rest = _started(reports)
    except BaseException:
        os.close(stdout)
        os.close(stderr)
        os.close(reports)
        raise
    for fd in (stdout, stderr, reports):
        os.set_blocking(fd, False)
    return pid, stdout, stderr, reports, rest


def _started(reports: int) -> tuple[int, bytes]:
    """Read (blocking) the launcher's first report on a command: the pid, or the error.

    Returns:
        The pid, and what was read of the reports beyond the first.

    """
    report = b""
    while b"\n" not in report:
        data = os.read(reports, 512)
        if not data:
            raise OSError(errno.EPIPE, "the launcher of run commands ended")
        report += data
    line, _, rest = report.partition(b"\n")
    first = json.loads(line)
    if "pid" not in first:
        raise OSError(first["errno"], first["strerror"], first["filename"])
    pid: int = first["pid"]
    return pid, rest


def _pidfd_works() -> bool:
    """True if ``os.pidfd_open`` exists and works (it may be refused: old kernel, seccomp)."""
    if not hasattr(os, "pidfd_open"):
        return False
    try:
        os.close(os.pidfd_open(os.getpid()))
    except OSError:
        return False
    return True


_PIDFD = sys.platform == "linux" and _pidfd_works()


class _ChildProcess:
    """A started command: its pid, an event set when it exits, one when its output ends.

    Only the main process's exit counts: waiting for the pipes to close as well could
    take forever when a process left running in the background holds them. The output
    goes to ``output`` from reader callbacks of the event loop, as it comes. The exit is
    learnt from a pidfd (Linux 5.3+, elsewhere a thread waits), or for a command that the
    run's launcher started (its child, not ours) from the launcher's reports.
    """

    def __init__(self, pid: int, pipes: dict[int, str], output: _OutputCapture) -> None:
        self._output = output
        self._loop = asyncio.get_running_loop()
        # Open read ends of the pipes and the stream each one carries.
        self._pipes = pipes
        self.pid = pid
        #: Exit code once exited (negative: killed by that signal).
        self.returncode: int | None = None
        self.exited = asyncio.Event()
        self.drained = asyncio.Event()
        # The launcher's reports on the command, while they are read.
        self._reports: int | None = None
        self._report = b""

    @classmethod
    async def start(
        cls,
        argv: list[str],
        *,
        cwd: Path,
        env: dict[str, str],
        output: _OutputCapture,
        launcher: CgroupProcesses | None,
    ) -> _ChildProcess:
        """Start ``argv`` from the spawner pool and read its output into ``output``.

        Started by the ``launcher`` of the run's cgroup when given, else by this process.
        """
        child: _ChildProcess
        if launcher is None:
            process, stdout, stderr, pidfd = await _spawner.run(_popen, argv, cwd, env)
            child = cls(process.pid, {stdout: "stdout", stderr: "stderr"}, output)
            child._watch_child(process, pidfd)
        else:
            pid, stdout, stderr, reports, report = await _spawner.run(
                _launch, launcher, argv, cwd, env
            )
            child = cls(pid, {stdout: "stdout", stderr: "stderr"}, output)
            child._reports, child._report = reports, report
            child._loop.add_reader(reports, child._read_report)
        try:
            for fd, stream in list(child._pipes.items()):
                child._loop.add_reader(fd, child._read, fd, stream)
        except BaseException:
            _signal_group(child.pid, signal.SIGKILL)
            child.close()
            raise
        return child

    def close(self) -> None:
        """Stop reading and close the pipes; kill the main process if it still runs.

        A line the output was still writing is kept. The process is reaped later.
        """
        for fd in list(self._pipes):
            self._close_pipe(fd)
        if not self.exited.is_set():
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.pid, signal.SIGKILL)
        self._stop_reports()

    def _read(self, fd: int, stream: str) -> None:
        try:
            data = os.read(fd, _CHUNK)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            data = b""  # the pipe broke: nothing more will come
        if data:
            self._output.feed(stream, data)
            return
        self._close_pipe(fd)
        if not self._pipes:
            self.drained.set()

    def _close_pipe(self, fd: int) -> None:
        stream = self._pipes.pop(fd)
        # Unwatched before closed: the number may belong to a new file right after.
        self._loop.remove_reader(fd)
        os.close(fd)
        self._output.finish(stream)

    def _exit(self, returncode: int) -> None:
        self.returncode = returncode
        self.exited.set()

    def _watch_child(self, process: subprocess.Popen[bytes], pidfd: int | None) -> None:
        if pidfd is not None:
            self._loop.add_reader(pidfd, self._reap, process, pidfd)
        else:
            threading.Thread(
                target=self._wait_in_thread,
                args=(process,),
                name=f"flowserv-wait-{self.pid}",
                daemon=True,
            ).start()

    def _reap(self, process: subprocess.Popen[bytes], pidfd: int) -> None:
        # The pidfd is readable: the process has exited, so this does not block.
        try:
            pid, status = os.waitpid(self.pid, os.WNOHANG)
        except ChildProcessError:  # reaped by someone else; the status is lost
            returncode = 255
        else:
            if pid == 0:
                return
            returncode = os.waitstatus_to_exitcode(status)
        # Known to the Popen object too, which would otherwise wait for the pid again
        # when it is collected (by then maybe another process's).
        process.returncode = returncode
        self._loop.remove_reader(pidfd)
        os.close(pidfd)
        self._exit(returncode)

    def _wait_in_thread(self, process: subprocess.Popen[bytes]) -> None:
        returncode = process.wait()
        with contextlib.suppress(RuntimeError):  # the loop was closed meanwhile
            self._loop.call_soon_threadsafe(self._exit, returncode)

    def _read_report(self) -> None:
        assert self._reports is not None, "read only while watched"
        try:
            data = os.read(self._reports, 512)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            data = b""
        self._report += data
        if data and b"\n" not in self._report:
            return
        self._stop_reports()
        line, end, _ = self._report.partition(b"\n")
        if end:
            self._exit(json.loads(line)["exit"])
            return
        # The launcher ended before the command did (it was killed): nothing can tell
        # the command's exit any more, so it is ended here.
        _signal_group(self.pid, signal.SIGKILL)
        self._exit(-signal.SIGKILL)

    def _stop_reports(self) -> None:
        if self._reports is not None:
            self._loop.remove_reader(self._reports)
            os.close(self._reports)
            self._reports = None


class _OutputCapture:
    r"""Splits a process's stdout and stderr into lines and writes them to the run log.

    Fed with the bytes of each stream as they are read; undecodable bytes become U+FFFD,
    ``\r\n`` counts as a line end, lines over :data:`MAX_LINE_CHARS` are split.
    """

    def __init__(self, log: RunLog, step: str) -> None:
        self.log = log
        self.step = step
        self.stderr_tail: deque[str] = deque(maxlen=STDERR_TAIL_LINES)
        self._decoders = {
            stream: codecs.getincrementaldecoder("utf-8")(errors="replace")
            for stream in ("stdout", "stderr")
        }
        self._pending = {"stdout": "", "stderr": ""}

    def feed(self, stream: str, data: bytes) -> None:
        """Write the lines that ``data`` completes; keep the incomplete rest."""
        text = self._pending[stream] + self._decoders[stream].decode(data)
        self._pending[stream] = self._write_lines(stream, text)

    def finish(self, stream: str) -> None:
        """The stream ended: write its incomplete last line, if any."""
        rest = self._pending[stream] + self._decoders[stream].decode(b"", final=True)
        self._pending[stream] = ""
        if rest:
            self._write_lines(stream, rest + "\n")

    def _write_lines(self, stream: str, text: str) -> str:
        """Write the complete lines of ``text``; return the incomplete rest."""
        *lines, rest = text.split("\n")
        for line in lines:
            self._write(stream, line.removesuffix("\r"))
        while len(rest) > MAX_LINE_CHARS:
            self._write(stream, rest[:MAX_LINE_CHARS])
            rest = rest[MAX_LINE_CHARS:]
        return rest

    def _write(self, stream: str, line: str) -> None:
        for start in range(0, max(len(line), 1), MAX_LINE_CHARS):
            part = line[start : start + MAX_LINE_CHARS]
            self.log.append(self.step, stream, part)
            if stream == "stderr":
                self.stderr_tail.append(part)
