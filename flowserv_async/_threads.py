"""The library's own threads: small pools that live as long as the process.

Blocking file system work of runs (containment, staging, result files, clean-up) runs in
:func:`run_blocking`'s pool rather than in anyio's worker threads: a few threads do not
compete for the GIL like the dozens that a burst of runs starts in anyio's pool, and
anyio's threads end after 10 s idle, so every burst started them again from the event
loop's thread (``Thread.start`` waits there until the new thread runs: 2-3 ms each on a
busy machine). A call is handed over as one queue entry and comes back as one
``call_soon_threadsafe``, without the ``concurrent.futures`` future and its chaining of
``loop.run_in_executor``. Steps are started from a pool of their own
(:mod:`flowserv_async.engine.process`). :func:`start_pools` starts every pool's threads
ahead of the first call (the engine does when it opens).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import queue
import threading
from collections.abc import Callable
from typing import Any, TypeVar

import anyio

T = TypeVar("T")

# A call waiting for a thread: the function, its arguments, and where its result goes.
_Call = tuple[Callable[..., Any], tuple[Any, ...], asyncio.AbstractEventLoop, "asyncio.Future[Any]"]

_pools: list[ThreadPool] = []


class ThreadPool:
    """A fixed number of threads that are never ended while the process lives.

    The threads start with :meth:`start`, or with the first call. A forked child gets new
    ones: it has none of the parent's threads, but the pool would think it has.
    """

    def __init__(self, size: int, name: str) -> None:
        self._size = size
        self._name = name
        self._renew()
        _pools.append(self)
        os.register_at_fork(after_in_child=self._renew)

    def _renew(self) -> None:
        self._calls: queue.SimpleQueue[_Call] = queue.SimpleQueue()
        self._threads: list[threading.Thread] = []
        self._lock = threading.Lock()

    @property
    def started(self) -> bool:
        """True once every thread of the pool runs."""
        return len(self._threads) == self._size

    def start(self) -> None:
        """Start the pool's threads (blocking: each start waits for its thread)."""
        with self._lock:
            while len(self._threads) < self._size:
                # Daemon threads: a call is awaited by the event loop, so by the time the
                # interpreter exits (after its loop closed) no thread has work left.
                thread = threading.Thread(
                    target=self._work, name=f"{self._name}_{len(self._threads)}", daemon=True
                )
                thread.start()
                self._threads.append(thread)

    async def run(self, func: Callable[..., T], *args: Any) -> T:
        """Run ``func(*args)`` in a thread of the pool and return its result.

        Like ``anyio.to_thread.run_sync``, the call is not abandoned when the caller is
        cancelled: the caller waits for it, and the cancellation takes effect afterwards.
        """
        if not self.started:
            self.start()
        loop = asyncio.get_running_loop()
        future: asyncio.Future[T] = loop.create_future()
        self._calls.put((func, args, loop, future))
        with anyio.CancelScope(shield=True):
            result = await future
        return result

    def _work(self) -> None:
        while True:
            func, args, loop, future = self._calls.get()
            try:
                result = func(*args)
            except BaseException as exc:  # handed to the caller, who re-raises it
                _deliver(loop, _set_exception, future, exc)
            else:
                _deliver(loop, _set_result, future, result)
            del func, args, future  # do not keep the last call's objects alive


def _deliver(
    loop: asyncio.AbstractEventLoop,
    setter: Callable[[asyncio.Future[Any], Any], None],
    future: asyncio.Future[Any],
    value: Any,
) -> None:
    with contextlib.suppress(RuntimeError):  # the loop was closed meanwhile
        loop.call_soon_threadsafe(setter, future, value)


def _set_result(future: asyncio.Future[Any], result: Any) -> None:
    if not future.done():
        future.set_result(result)


def _set_exception(future: asyncio.Future[Any], exc: BaseException) -> None:
    if not future.done():
        future.set_exception(exc)


def start_pools() -> None:
    """Start the threads of every pool (blocking: call it from a worker thread)."""
    for pool in list(_pools):
        pool.start()


_files = ThreadPool(4, "flowserv-files")


async def run_blocking(func: Callable[..., T], *args: Any) -> T:
    """Run blocking file system work in the library's file threads."""
    return await _files.run(func, *args)
