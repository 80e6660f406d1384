"""The library's thread pools: results, errors, cancellation, threads started early."""

from __future__ import annotations

import threading
import time

import anyio
import anyio.to_thread
import pytest

from flowserv_async._threads import ThreadPool, run_blocking, start_pools


def _thread_names() -> set[str]:
    return {thread.name for thread in threading.enumerate()}


def _current() -> str:
    return threading.current_thread().name


async def test_a_call_returns_its_result_from_a_pool_thread() -> None:
    assert await run_blocking(lambda a, b: a + b, 1, 2) == 3
    name = await run_blocking(_current)
    assert name.startswith("flowserv-files_")
    assert name != threading.current_thread().name


def _fail() -> None:
    raise KeyError("missing")


async def test_an_error_in_the_thread_is_raised_to_the_caller() -> None:
    with pytest.raises(KeyError, match="missing"):
        await run_blocking(_fail)
    assert await run_blocking(_current)  # the thread survived the error


async def test_a_cancelled_caller_waits_until_the_call_has_finished() -> None:
    finished = threading.Event()

    def slow() -> None:
        time.sleep(0.2)
        finished.set()

    with anyio.CancelScope() as scope:
        scope.cancel()
        await run_blocking(slow)
        assert finished.is_set()  # not abandoned: the caller waited for it
        await anyio.sleep(0)  # the cancellation takes effect at the next checkpoint
    assert scope.cancelled_caught


async def test_start_pools_starts_every_thread_of_every_pool_ahead_of_calls() -> None:
    pool = ThreadPool(3, "flowserv-test-pool")
    assert not pool.started
    await anyio.to_thread.run_sync(start_pools)
    assert pool.started
    names = await anyio.to_thread.run_sync(_thread_names)
    assert {f"flowserv-test-pool_{n}" for n in range(3)} <= names
    assert await pool.run(_current) in names
