"""Streaming keeps memory bounded: measured with tracemalloc (allocations, not time).

On the ``fs`` volume only: the moto S3 server runs in the test process, and tracemalloc
would count the objects it keeps.
"""

from __future__ import annotations

import tracemalloc
from collections.abc import AsyncIterator
from contextlib import aclosing

import anyio
import pytest

from flowserv_async.volume import FileSystemVolume, archive

MIB = 1024 * 1024


@pytest.fixture
def volume(fs_volume: FileSystemVolume) -> FileSystemVolume:
    return fs_volume


async def generated_chunks(count: int) -> AsyncIterator[bytes]:
    """Yield ``count`` distinct chunks of 1 MiB, each made when it is asked for."""
    for index in range(count):
        yield bytes([index % 251]) * MIB


async def test_storing_a_200_mb_stream_keeps_memory_bounded(volume: FileSystemVolume) -> None:
    tracemalloc.start()
    try:
        before, _ = tracemalloc.get_traced_memory()
        tracemalloc.reset_peak()
        size = await volume.store("big.bin", generated_chunks(200))
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    print(f"store 200 MiB stream: tracemalloc peak growth {(peak - before) / MIB:.1f} MiB")
    assert size == 200 * MIB
    assert (await anyio.Path(volume.path("big.bin")).stat()).st_size == 200 * MIB
    assert peak - before < 50 * MIB


async def test_archiving_a_large_file_keeps_memory_bounded(volume: FileSystemVolume) -> None:
    await volume.store("big.bin", generated_chunks(64))
    compressed = 0
    tracemalloc.start()
    try:
        before, _ = tracemalloc.get_traced_memory()
        tracemalloc.reset_peak()
        async with aclosing(archive(volume, [("big.bin", "big.bin")])) as stream:
            async for chunk in stream:
                compressed += len(chunk)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    print(f"archive 64 MiB file: tracemalloc peak growth {(peak - before) / MIB:.1f} MiB")
    assert 0 < compressed < 64 * MIB
    assert peak - before < 16 * MIB
