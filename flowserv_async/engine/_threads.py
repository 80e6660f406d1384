"""The engine's threads for blocking file system work: one small pool.

A run's containment, staging, result files and clean-up are blocking calls on the path
of every run. They run here rather than in anyio's worker threads: a hand-off through
``loop.run_in_executor`` costs about a third of the CPU of ``anyio.to_thread.run_sync``
(measured: 33 vs 104 us per call, 16 concurrent callers), and a few threads do not
compete for the GIL like the dozens that a burst of runs starts in anyio's pool.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import os
from collections.abc import Callable
from typing import Any, TypeVar

import anyio

T = TypeVar("T")

_THREADS = 4
_pool = concurrent.futures.ThreadPoolExecutor(_THREADS, thread_name_prefix="flowserv-files")


def _new_pool() -> None:
    # A forked child has none of the pool's threads, but the pool would think it has.
    global _pool
    _pool = concurrent.futures.ThreadPoolExecutor(_THREADS, thread_name_prefix="flowserv-files")


os.register_at_fork(after_in_child=_new_pool)


async def run_blocking(func: Callable[..., T], *args: Any) -> T:
    """Run ``func(*args)`` in the pool and return its result.

    Like ``anyio.to_thread.run_sync``, the call is not abandoned when the caller is
    cancelled: the caller waits for it, and the cancellation takes effect afterwards.
    """
    future = asyncio.get_running_loop().run_in_executor(_pool, func, *args)
    with anyio.CancelScope(shield=True):
        result = await future
    return result
