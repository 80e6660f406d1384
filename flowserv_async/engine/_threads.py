"""The engine's own threads: small pools that live as long as the process.

Blocking file system work of runs (containment, staging, result files, clean-up) runs in
:func:`run_blocking`'s pool rather than in anyio's worker threads: a hand-off through
``loop.run_in_executor`` costs about a third of the CPU of ``anyio.to_thread.run_sync``
(measured: 33 vs 104 us per call, 16 concurrent callers), and a few threads do not
compete for the GIL like the dozens that a burst of runs starts in anyio's pool. Steps
are started from a pool of their own (:mod:`flowserv_async.engine.process`).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import os
from collections.abc import Callable
from typing import Any, TypeVar

import anyio

T = TypeVar("T")


class ThreadPool:
    """A fixed number of threads that are never ended while the process lives.

    A forked child gets new ones: it has none of the parent's threads, but the pool
    would think it has.
    """

    def __init__(self, size: int, name: str) -> None:
        self._size = size
        self._name = name
        self._executor = self._new_executor()
        os.register_at_fork(after_in_child=self._renew)

    def _new_executor(self) -> concurrent.futures.ThreadPoolExecutor:
        return concurrent.futures.ThreadPoolExecutor(self._size, thread_name_prefix=self._name)

    def _renew(self) -> None:
        self._executor = self._new_executor()

    async def run(self, func: Callable[..., T], *args: Any) -> T:
        """Run ``func(*args)`` in a thread of the pool and return its result.

        Like ``anyio.to_thread.run_sync``, the call is not abandoned when the caller is
        cancelled: the caller waits for it, and the cancellation takes effect afterwards.
        """
        future = asyncio.get_running_loop().run_in_executor(self._executor, func, *args)
        with anyio.CancelScope(shield=True):
            result = await future
        return result


_files = ThreadPool(4, "flowserv-files")


async def run_blocking(func: Callable[..., T], *args: Any) -> T:
    """Run blocking file system work of a run in the engine's file threads."""
    return await _files.run(func, *args)
