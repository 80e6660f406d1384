"""The volume contract, run on every volume type (``fs`` and ``s3``, see conftest)."""

from __future__ import annotations

import io
from collections.abc import AsyncIterator
from pathlib import Path

import anyio
import pytest

from flowserv_async.errors import ConstraintViolationError, FlowservError, UnknownFileError
from flowserv_async.volume import StorageVolume, volume_from_spec

from .conftest import Stored
from .test_keys import BAD_KEYS


async def chunks(*parts: bytes) -> AsyncIterator[bytes]:
    for part in parts:
        await anyio.sleep(0)
        yield part


async def failing_stream(good: int) -> AsyncIterator[bytes]:
    for _ in range(good):
        yield b"x" * 1000
    raise RuntimeError("source failed")


# -- Round trips -------------------------------------------------------------------


async def test_store_and_load_bytes(volume: StorageVolume) -> None:
    assert await volume.store("a/b/c.txt", b"hello") == 5
    assert await volume.load("a/b/c.txt") == b"hello"
    assert await volume.size("a/b/c.txt") == 5
    assert await volume.exists("a/b/c.txt")
    assert await volume.walk() == ["a/b/c.txt"]


async def test_store_accepts_bytearray_memoryview_and_file_objects(
    volume: StorageVolume,
) -> None:
    assert await volume.store("ba", bytearray(b"abc")) == 3
    assert await volume.store("mv", memoryview(b"defg")) == 4
    assert await volume.store("fo", io.BytesIO(b"x" * 600_000)) == 600_000
    assert await volume.load("ba") == b"abc"
    assert await volume.load("mv") == b"defg"
    assert await volume.load("fo") == b"x" * 600_000


async def test_store_streams_async_iterable(volume: StorageVolume) -> None:
    size = await volume.store("s.bin", chunks(b"ab", b"", b"cde"))
    assert size == 5
    assert await volume.load("s.bin") == b"abcde"


async def test_store_replaces_an_existing_file(volume: StorageVolume) -> None:
    await volume.store("f", b"old content")
    await volume.store("f", b"new")
    assert await volume.load("f") == b"new"


async def test_store_normalises_the_key(volume: StorageVolume) -> None:
    await volume.store("./a//b/", b"1")
    assert await volume.walk() == ["a/b"]
    assert await volume.load("a/b") == b"1"


async def test_iter_bytes_yields_chunks_of_the_given_size(volume: StorageVolume) -> None:
    data = bytes(range(256)) * 4
    await volume.store("d", data)
    parts = [part async for part in volume.iter_bytes("d", chunk_size=300)]
    assert [len(part) for part in parts] == [300, 300, 300, 124]
    assert b"".join(parts) == data


async def test_empty_file(volume: StorageVolume) -> None:
    assert await volume.store("empty", b"") == 0
    assert await volume.load("empty") == b""
    assert await volume.size("empty") == 0
    assert [part async for part in volume.iter_bytes("empty")] == []


async def test_store_file_copies_a_local_file(volume: StorageVolume, tmp_path: Path) -> None:
    local = tmp_path / "local.bin"
    await anyio.Path(local).write_bytes(b"z" * 700_000)
    assert await volume.store_file("copy/local.bin", local) == 700_000
    assert await volume.load("copy/local.bin") == b"z" * 700_000


async def test_store_file_missing_local_file(
    volume: StorageVolume, tmp_path: Path, stored: Stored
) -> None:
    with pytest.raises(UnknownFileError, match=r"missing\.txt"):
        await volume.store_file("x", tmp_path / "missing.txt")
    assert await stored() == []


async def test_walk_lists_sorted_keys_under_a_prefix(volume: StorageVolume) -> None:
    for key in ["b/2", "a/1", "b/1", "b/c/3", "bc/4"]:
        await volume.store(key, key.encode())
    assert await volume.walk() == ["a/1", "b/1", "b/2", "b/c/3", "bc/4"]
    assert await volume.walk("b") == ["b/1", "b/2", "b/c/3"]
    assert await volume.walk("b/") == ["b/1", "b/2", "b/c/3"]
    assert await volume.walk("b/c/3") == ["b/c/3"]
    assert await volume.walk("missing") == []


async def test_walk_of_a_missing_volume_is_empty(volume: StorageVolume) -> None:
    assert await volume.walk() == []


async def test_exists(volume: StorageVolume) -> None:
    await volume.store("d/e/f.txt", b"1")
    assert await volume.exists("d/e/f.txt")
    assert await volume.exists("d")
    assert await volume.exists("d/e/")
    assert not await volume.exists("d/e/g.txt")
    assert not await volume.exists("d/e/f")
    assert not await volume.exists("nothing/here")


async def test_erase_removes_every_file(volume: StorageVolume, stored: Stored) -> None:
    await volume.store("a/b", b"1")
    await volume.store("c", b"2")
    await volume.erase()
    assert await stored() == []
    assert await volume.walk() == []
    await volume.erase()


async def test_to_dict_round_trips_through_the_factory(volume: StorageVolume) -> None:
    await volume.store("k", b"v")
    async with await volume_from_spec(volume.to_dict()) as copy:
        assert type(copy) is type(volume)
        assert copy.identifier == "test"
        assert copy.to_dict() == volume.to_dict()
        assert await copy.load("k") == b"v"


async def test_delete_file_and_folder(volume: StorageVolume, stored: Stored) -> None:
    for key in ["wf/runs/1/a", "wf/runs/1/b/c", "wf/runs/2/a", "wf/static/s"]:
        await volume.store(key, b"x")
    await volume.delete("wf/runs/1")
    assert await volume.walk() == ["wf/runs/2/a", "wf/static/s"]
    assert await stored() == [
        "wf/",
        "wf/runs/",
        "wf/runs/2/",
        "wf/runs/2/a",
        "wf/static/",
        "wf/static/s",
    ]
    await volume.delete("wf/static/s")
    assert await volume.walk() == ["wf/runs/2/a"]


async def test_delete_missing_is_a_no_op(volume: StorageVolume) -> None:
    await volume.delete("missing")
    await volume.delete("missing/folder/file")
    assert await volume.walk() == []


# -- Missing keys --------------------------------------------------------------------


async def test_reading_a_missing_key_raises_unknown_file(volume: StorageVolume) -> None:
    await volume.store("folder/file", b"1")
    for key in ["missing", "folder", "folder/file/below"]:
        with pytest.raises(UnknownFileError) as info:
            await volume.load(key)
        assert info.value.message == f"unknown file '{key}'"
        with pytest.raises(UnknownFileError, match=key):
            await volume.size(key)
        with pytest.raises(UnknownFileError, match=key):
            async for _ in volume.iter_bytes(key):
                pass


# -- Refused keys --------------------------------------------------------------------


@pytest.mark.parametrize("key", BAD_KEYS)
async def test_refused_keys_create_nothing(volume: StorageVolume, key: str, stored: Stored) -> None:
    with pytest.raises(ConstraintViolationError) as info:
        await volume.store(key, b"data")
    assert type(info.value) is ConstraintViolationError
    assert repr(key) in info.value.message
    with pytest.raises(ConstraintViolationError):
        await volume.store(key, chunks(b"data"))
    for operation in (volume.load, volume.size, volume.exists, volume.delete):
        with pytest.raises(ConstraintViolationError):
            await operation(key)
    assert await stored() == []


# -- Size limits and failures leave nothing behind -----------------------------------


async def test_max_size_from_bytes(volume: StorageVolume, stored: Stored) -> None:
    with pytest.raises(ConstraintViolationError) as info:
        await volume.store("up/load/data.bin", b"x" * 11, max_size=10)
    assert type(info.value) is ConstraintViolationError
    assert "'up/load/data.bin'" in info.value.message
    assert "10 bytes" in info.value.message
    assert await stored() == []
    assert await volume.store("up/load/data.bin", b"x" * 10, max_size=10) == 10


async def test_max_size_from_a_stream(volume: StorageVolume, stored: Stored) -> None:
    await volume.store("keep.txt", b"keep")
    stream = chunks(*[b"y" * 4096] * 10)
    with pytest.raises(ConstraintViolationError, match="size limit of 10000 bytes"):
        await volume.store("a/b/big.bin", stream, max_size=10_000)
    assert await stored() == ["keep.txt"]


async def test_max_size_from_store_file(
    volume: StorageVolume, tmp_path: Path, stored: Stored
) -> None:
    local = tmp_path / "local.bin"
    await anyio.Path(local).write_bytes(b"z" * 1000)
    with pytest.raises(ConstraintViolationError, match="size limit of 999 bytes"):
        await volume.store_file("x/local.bin", local, max_size=999)
    assert await stored() == []


async def test_failing_stream_leaves_nothing(volume: StorageVolume, stored: Stored) -> None:
    await volume.store("a/existing", b"old")
    with pytest.raises(RuntimeError, match="source failed"):
        await volume.store("a/new/file", failing_stream(3))
    with pytest.raises(RuntimeError, match="source failed"):
        await volume.store("a/existing", failing_stream(3))
    assert await stored() == ["a/", "a/existing"]
    assert await volume.load("a/existing") == b"old"


@pytest.mark.parametrize(
    "before", [[b"first"], [b"z" * 1024 * 1024] * 6], ids=["small", "multipart"]
)
async def test_cancelled_store_leaves_nothing(
    volume: StorageVolume, stored: Stored, before: list[bytes]
) -> None:
    """Cancelled while the source waits: after a small part, or after full S3 parts."""
    chunks_read = anyio.Event()

    async def endless() -> AsyncIterator[bytes]:
        for chunk in before:
            yield chunk
        chunks_read.set()
        await anyio.sleep_forever()
        yield b"never"

    async with anyio.create_task_group() as tg:
        tg.start_soon(volume.store, "x/y/z", endless())
        await chunks_read.wait()
        await anyio.sleep(0.05)
        tg.cancel_scope.cancel()
    assert await stored() == []


async def test_a_file_or_folder_in_the_way(volume: StorageVolume, stored: Stored) -> None:
    await volume.store("file", b"1")
    await volume.store("folder/x", b"2")
    with pytest.raises(ConstraintViolationError, match=r"'file/below'.*in the way"):
        await volume.store("file/below", b"3")
    with pytest.raises(ConstraintViolationError, match=r"'folder'.*in the way"):
        await volume.store("folder", b"4")
    assert await stored() == ["file", "folder/", "folder/x"]


async def test_concurrent_stores_into_new_folders(volume: StorageVolume, stored: Stored) -> None:
    async def store(index: int) -> None:
        if index % 2:
            with pytest.raises(RuntimeError):
                await volume.store(f"new/deep/{index}", failing_stream(1))
        else:
            await volume.store(f"new/deep/{index}", chunks(b"a", b"b"))

    async with anyio.create_task_group() as tg:
        for index in range(40):
            tg.start_soon(store, index)
    assert await volume.walk() == sorted(f"new/deep/{i}" for i in range(0, 40, 2))
    expected = sorted(f"new/deep/{i}" for i in range(0, 40, 2))
    assert await stored() == ["new/", "new/deep/", *expected]


# -- Large contents (several S3 upload parts) -----------------------------------------

MIB = 1024 * 1024


async def test_large_stream_round_trips(volume: StorageVolume) -> None:
    parts = [bytes([index]) * MIB for index in range(11)]
    assert await volume.store("big/file", chunks(*parts)) == 11 * MIB
    assert await volume.size("big/file") == 11 * MIB
    assert await volume.load("big/file") == b"".join(parts)


async def test_large_failing_stream_leaves_nothing(volume: StorageVolume, stored: Stored) -> None:
    with pytest.raises(RuntimeError, match="source failed"):
        await volume.store("big/file", failing_stream(12_000))
    assert await stored() == []


async def test_large_stream_over_the_size_limit_leaves_nothing(
    volume: StorageVolume, stored: Stored
) -> None:
    with pytest.raises(ConstraintViolationError, match="size limit"):
        await volume.store("big/file", chunks(*[b"q" * MIB] * 8), max_size=7 * MIB)
    assert await stored() == []


async def test_an_interrupted_source_is_not_a_failed_write(
    volume: StorageVolume, stored: Stored
) -> None:
    async def dropped() -> AsyncIterator[bytes]:
        yield b"x" * 1000
        raise ConnectionResetError("peer went away")

    with pytest.raises(FlowservError) as info:
        await volume.store("up/file", dropped(), name="names.txt")
    assert type(info.value) is FlowservError
    assert info.value.message.startswith("'names.txt' was not stored: the upload was interrupted")
    with pytest.raises(ConstraintViolationError, match=r"'names\.txt' exceeds"):
        await volume.store("up/file", b"x" * 11, max_size=10, name="names.txt")
    assert await stored() == []
