from __future__ import annotations

import io
import random
import tarfile
from collections.abc import AsyncGenerator
from contextlib import aclosing
from pathlib import Path

import anyio
import pytest

from flowserv_async.errors import ConstraintViolationError, FlowservError, UnknownFileError
from flowserv_async.volume import (
    CHUNK_SIZE,
    DownloadHandle,
    FileSystemVolume,
    archive,
    guess_mime_type,
)

from .conftest import Tree


def _members(data: bytes) -> dict[str, bytes]:
    """Extract every member of a tar.gz (run in a worker thread)."""
    result: dict[str, bytes] = {}
    with tarfile.open(fileobj=io.BytesIO(data), mode="r:gz") as tar:
        for member in tar.getmembers():
            assert member.isfile()
            extracted = tar.extractfile(member)
            assert extracted is not None
            result[member.name] = extracted.read()
    return result


async def members(data: bytes) -> dict[str, bytes]:
    return await anyio.to_thread.run_sync(_members, data)


async def collect(stream: AsyncGenerator[bytes, None]) -> bytes:
    async with aclosing(stream) as chunks:
        return b"".join([chunk async for chunk in chunks])


class CountingVolume(FileSystemVolume):
    """Counts the chunks read through iter_bytes."""

    chunks_read = 0

    async def iter_bytes(
        self, key: str, chunk_size: int = CHUNK_SIZE
    ) -> AsyncGenerator[bytes, None]:
        async with aclosing(super().iter_bytes(key, chunk_size)) as chunks:
            async for chunk in chunks:
                self.chunks_read += 1
                yield chunk


@pytest.fixture
def contents() -> dict[str, bytes]:
    rnd = random.Random(7)
    return {
        "results/analytics.json": b'{"avg": 1.5}',
        "results/empty.txt": b"",
        "block.bin": b"b" * 512,
        "random.bin": rnd.randbytes(3 * 1024 * 1024 + 17),
        "deep/" + "x" * 120 + "/long-name-" + "y" * 100 + ".txt": b"long",
    }


async def test_archive_round_trips_through_tarfile(
    volume: FileSystemVolume, contents: dict[str, bytes]
) -> None:
    for name, data in contents.items():
        await volume.store(f"wf/runs/r1/{name}", data)
    files = [(f"wf/runs/r1/{name}", name) for name in contents]
    data = await collect(archive(volume, files, chunk_size=64 * 1024))
    assert data[:2] == b"\x1f\x8b"
    assert await members(data) == contents


async def test_archive_of_no_files_is_a_valid_empty_archive(volume: FileSystemVolume) -> None:
    assert await members(await collect(archive(volume, []))) == {}


async def test_archive_missing_key(volume: FileSystemVolume) -> None:
    with pytest.raises(UnknownFileError, match="'wf/missing'"):
        await collect(archive(volume, [("wf/missing", "missing")]))


@pytest.mark.parametrize(("key", "name"), [("k", "../k"), ("k", "/etc/k"), ("../k", "k")])
async def test_archive_refuses_bad_keys_and_names(
    volume: FileSystemVolume, key: str, name: str
) -> None:
    await volume.store("k", b"1")
    with pytest.raises(ConstraintViolationError):
        await collect(archive(volume, [(key, name)]))


class ShrinkingVolume(FileSystemVolume):
    """Reports a size larger than the content it streams."""

    async def size(self, key: str) -> int:
        return await super().size(key) + 1


class GrowingVolume(FileSystemVolume):
    """Reports a size smaller than the content it streams."""

    async def size(self, key: str) -> int:
        return await super().size(key) - 1


@pytest.mark.parametrize("volume_class", [ShrinkingVolume, GrowingVolume])
async def test_archive_detects_a_file_changing_size(
    basedir: Path, volume_class: type[FileSystemVolume]
) -> None:
    volume = volume_class(basedir)
    await volume.store("f", b"content")
    with pytest.raises(FlowservError, match="'f' changed while it was archived"):
        await collect(archive(volume, [("f", "f")]))


async def test_cancelling_the_consumer_stops_the_archive(
    basedir: Path, tmp_path: Path, tree: Tree
) -> None:
    volume = CountingVolume(basedir)
    await volume.store("big.bin", random.Random(1).randbytes(8 * 1024 * 1024))
    chunk_size = 64 * 1024
    received = 0
    async with aclosing(archive(volume, [("big.bin", "big.bin")], chunk_size=chunk_size)) as s:
        with anyio.CancelScope() as scope:
            async for _ in s:
                received += 1
                if received == 3:
                    scope.cancel()
        assert scope.cancelled_caught
    read_when_cancelled = volume.chunks_read
    await anyio.sleep(0.1)
    assert volume.chunks_read == read_when_cancelled
    assert read_when_cancelled < (8 * 1024 * 1024) // chunk_size
    assert await tree(tmp_path) == ["store/", "store/big.bin"]


async def test_closing_the_archive_early_stops_reading(basedir: Path) -> None:
    volume = CountingVolume(basedir)
    await volume.store("big.bin", random.Random(2).randbytes(4 * 1024 * 1024))
    async with aclosing(archive(volume, [("big.bin", "b")], chunk_size=64 * 1024)) as stream:
        await anext(stream)
    read = volume.chunks_read
    await anyio.sleep(0.05)
    assert volume.chunks_read == read < 64


# -- Download handles --------------------------------------------------------------


async def test_download_handle_for_a_key(volume: FileSystemVolume) -> None:
    await volume.store("wf/groups/g/files/f1/data.csv", b"a,b\n1,2\n")
    handle = await DownloadHandle.from_key(volume, "wf/groups/g/files/f1/data.csv")
    assert (handle.name, handle.mime_type, handle.size) == ("data.csv", "text/csv", 8)
    assert await handle.read() == b"a,b\n1,2\n"
    assert await collect(handle.iter_bytes(chunk_size=3)) == b"a,b\n1,2\n"
    async with aclosing(handle.iter_bytes(chunk_size=3)) as chunks:
        assert [len(chunk) async for chunk in chunks] == [3, 3, 2]
    assert "data.csv" in repr(handle)


async def test_download_handle_with_given_name_and_type(volume: FileSystemVolume) -> None:
    await volume.store("wf/groups/g/files/f1", b"{}")
    handle = await DownloadHandle.from_key(
        volume, "wf/groups/g/files/f1", name="upload.json", mime_type="text/plain"
    )
    assert (handle.name, handle.mime_type) == ("upload.json", "text/plain")
    handle = await DownloadHandle.from_key(volume, "wf/groups/g/files/f1", name="upload.json")
    assert handle.mime_type == "application/json"


async def test_download_handle_for_a_missing_key_names_the_file_not_the_key(
    volume: FileSystemVolume,
) -> None:
    with pytest.raises(UnknownFileError, match=r"^unknown file 'nothing'$"):
        await DownloadHandle.from_key(volume, "wf/nothing")
    with pytest.raises(UnknownFileError, match=r"^unknown file 'data\.csv'$"):
        await DownloadHandle.from_key(volume, "wf/groups/g/files/f9", name="data.csv")


async def test_download_handle_for_an_archive(
    volume: FileSystemVolume, contents: dict[str, bytes]
) -> None:
    for name, data in contents.items():
        await volume.store(f"wf/runs/r1/{name}", data)
    files = [(f"wf/runs/r1/{name}", name) for name in contents]
    handle = await DownloadHandle.from_archive(volume, files, name="run.r1.tar.gz")
    assert (handle.name, handle.mime_type, handle.size) == (
        "run.r1.tar.gz",
        "application/gzip",
        None,
    )
    assert await members(await handle.read()) == contents
    # Each stream starts from the beginning.
    assert await members(await collect(handle.iter_bytes())) == contents


async def test_download_handle_for_an_archive_checks_keys_first(
    volume: FileSystemVolume,
) -> None:
    await volume.store("wf/runs/r1/a", b"1")
    with pytest.raises(UnknownFileError, match=r"^unknown file 'b'$"):
        await DownloadHandle.from_archive(
            volume, [("wf/runs/r1/a", "a"), ("wf/runs/r1/b", "b")], name="run.tar.gz"
        )


@pytest.mark.parametrize(
    ("name", "mime_type"),
    [
        ("results.csv", "text/csv"),
        ("a/b/analytics.json", "application/json"),
        ("run.1.tar.gz", "application/gzip"),
        ("data.csv.gz", "application/gzip"),
        ("data.txt.bz2", "application/x-bzip2"),
        ("image.PNG", "image/png"),
        ("README", "application/octet-stream"),
        ("file.unknownext", "application/octet-stream"),
    ],
)
def test_guess_mime_type(name: str, mime_type: str) -> None:
    assert guess_mime_type(name) == mime_type
