"""Learn of step exits through pidfds on Python 3.11, as asyncio does from 3.12 on.

asyncio's default child watcher before 3.12 (``ThreadedChildWatcher``) starts one thread
per child process that blocks in ``waitpid`` and then wakes the event loop from that
thread: 256 running steps are 256 threads competing for the GIL. From 3.12 on the default
uses a pidfd per child, which the event loop's selector watches like a socket. This
module installs the same watcher on Python 3.11; on 3.12+ it does nothing (the default
already works that way, and the child watcher API is deprecated there).

The watcher of 3.11's standard library (``asyncio.PidfdChildWatcher``) is bound to the
one loop it was attached to; the one here, like 3.12's, uses the running loop of each
call, so any number of event loops (one per test, say) can use it.
"""

from __future__ import annotations

import asyncio
import logging
import os
import sys
import threading
from collections.abc import Callable
from types import TracebackType
from typing import Any, TypeVarTuple

logger = logging.getLogger(__name__)

_lock = threading.Lock()
_Ts = TypeVarTuple("_Ts")
_replaced: list[asyncio.AbstractChildWatcher] = []


class PidfdChildWatcher(asyncio.AbstractChildWatcher):
    """A child watcher that waits for each child on a pidfd in the running event loop."""

    def __enter__(self) -> PidfdChildWatcher:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        return None

    def is_active(self) -> bool:
        return True

    def close(self) -> None:
        return None

    def attach_loop(self, loop: asyncio.AbstractEventLoop | None) -> None:
        return None

    def add_child_handler(
        self, pid: int, callback: Callable[[int, int, *_Ts], object], *args: *_Ts
    ) -> None:
        loop = asyncio.get_running_loop()
        pidfd = os.pidfd_open(pid)
        loop.add_reader(pidfd, self._do_wait, loop, pid, pidfd, callback, args)

    def remove_child_handler(self, pid: int) -> bool:
        # asyncio never calls this for a child it still waits for.
        return True

    @staticmethod
    def _do_wait(
        loop: asyncio.AbstractEventLoop,
        pid: int,
        pidfd: int,
        callback: Callable[..., object],
        args: tuple[Any, ...],
    ) -> None:
        loop.remove_reader(pidfd)
        try:
            # The pidfd is readable: the child has exited, so this does not block.
            _, status = os.waitpid(pid, 0)
        except ChildProcessError:
            returncode = 255
            logger.warning("exit status of child process %d already read: 255", pid)
        else:
            returncode = os.waitstatus_to_exitcode(status)
        os.close(pidfd)
        callback(pid, returncode, *args)


def use_pidfd_child_watcher() -> bool:
    """Install :class:`PidfdChildWatcher` where it replaces asyncio's thread per child.

    Only on Python 3.11 with pidfd support (Linux 5.3+), and only in place of asyncio's
    default ``ThreadedChildWatcher``: a watcher that the application chose stays. Safe to
    call repeatedly and from any thread. True if this watcher is installed afterwards.
    """
    if sys.version_info >= (3, 12) or not hasattr(os, "pidfd_open"):
        return False
    policy = asyncio.get_event_loop_policy()
    if not isinstance(policy, asyncio.DefaultEventLoopPolicy):
        return False
    with _lock:
        current = policy.get_child_watcher()
        if isinstance(current, PidfdChildWatcher):
            return True
        if type(current) is not asyncio.ThreadedChildWatcher or not pidfd_works():
            return False
        # Its threads for children started before finish on their own; kept referenced
        # so that it is not collected (and warns) while they run.
        _replaced.append(current)
        policy.set_child_watcher(PidfdChildWatcher())
        return True


def pidfd_works() -> bool:
    """True if ``os.pidfd_open`` exists and works (it may be refused: old kernel, seccomp)."""
    if not hasattr(os, "pidfd_open"):
        return False
    try:
        os.close(os.pidfd_open(os.getpid()))
    except OSError:
        return False
    return True
