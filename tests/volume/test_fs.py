"""What only the ``fs`` volume has: local paths, temporary files, links, permissions.

The volume contract itself is tested on every volume type in ``test_volume.py``.
"""

from __future__ import annotations

import os
from pathlib import Path

import anyio
import pytest

from flowserv_async.errors import ConstraintViolationError, FlowservError
from flowserv_async.volume import FileSystemVolume, volume_from_spec

from .conftest import Tree


@pytest.fixture
def volume(fs_volume: FileSystemVolume) -> FileSystemVolume:
    return fs_volume


async def test_store_writes_the_local_file(volume: FileSystemVolume) -> None:
    await volume.store("a/b/c.txt", b"hello")
    assert await anyio.Path(volume.path("a/b/c.txt")).read_bytes() == b"hello"


async def test_walk_skips_temporary_files(volume: FileSystemVolume, basedir: Path) -> None:
    await volume.store("a/x", b"1")
    await anyio.Path(basedir / "a" / (".~tmp-" + "0" * 32)).write_bytes(b"partial")
    assert await volume.walk() == ["a/x"]


async def test_an_empty_folder_does_not_exist(volume: FileSystemVolume, basedir: Path) -> None:
    await volume.store("d/e/f.txt", b"1")
    await anyio.Path(basedir / "empty").mkdir()
    assert not await volume.exists("empty")


async def test_erase_removes_the_volume(volume: FileSystemVolume, basedir: Path) -> None:
    await volume.store("a/b", b"1")
    await volume.erase()
    assert not await anyio.Path(basedir).exists()
    await volume.erase()


async def test_to_dict_round_trips_through_the_factory(volume: FileSystemVolume) -> None:
    await volume.store("k", b"v")
    copy = await volume_from_spec(volume.to_dict())
    assert isinstance(copy, FileSystemVolume)
    assert copy.identifier == "test"
    assert copy.basedir == volume.basedir
    assert await copy.load("k") == b"v"


def test_path_returns_the_local_path(volume: FileSystemVolume, basedir: Path) -> None:
    assert volume.path("a//b/c.txt") == basedir / "a" / "b" / "c.txt"
    with pytest.raises(ConstraintViolationError):
        volume.path("../x")


def test_default_identifier_is_unique(basedir: Path) -> None:
    first, second = FileSystemVolume(basedir), FileSystemVolume(basedir)
    assert first.identifier != second.identifier
    assert "FileSystemVolume(" in repr(first)


def _make_escape_links(basedir: Path, outside: Path) -> None:
    basedir.mkdir()
    outside.mkdir()
    (outside / "secret.txt").write_bytes(b"secret")
    (basedir / "inside.txt").write_bytes(b"inside")
    os.symlink(outside, basedir / "dirlink")
    os.symlink(outside / "secret.txt", basedir / "filelink")
    os.symlink(basedir / "inside.txt", basedir / "goodlink")


async def test_symlinks_leaving_the_root_are_refused(
    volume: FileSystemVolume, basedir: Path, tmp_path: Path, tree: Tree
) -> None:
    outside = tmp_path / "outside"
    await anyio.to_thread.run_sync(_make_escape_links, basedir, outside)
    for key in ["dirlink/new.txt", "dirlink/secret.txt", "filelink", "dirlink"]:
        with pytest.raises(ConstraintViolationError) as info:
            await volume.store(key, b"overwrite")
        assert type(info.value) is ConstraintViolationError
        assert f"'{key}'" in info.value.message
        assert "symbolic link" in info.value.message
        for operation in (volume.load, volume.size, volume.exists, volume.delete, volume.walk):
            with pytest.raises(ConstraintViolationError, match="symbolic link"):
                await operation(key)
    assert await tree(outside) == ["secret.txt"]
    assert await anyio.Path(outside / "secret.txt").read_bytes() == b"secret"
    # Links inside the root work; walk lists neither escaping link.
    assert await volume.load("goodlink") == b"inside"
    assert await volume.walk() == ["goodlink", "inside.txt"]
    await volume.delete("goodlink")
    assert await volume.walk() == ["inside.txt"]


async def test_unwritable_folder_raises_flowserv_error(
    volume: FileSystemVolume, basedir: Path
) -> None:
    if await anyio.to_thread.run_sync(os.geteuid) == 0:
        pytest.skip("root ignores file permissions")
    await anyio.Path(basedir).mkdir()
    await anyio.Path(basedir).chmod(0o500)
    try:
        with pytest.raises(FlowservError, match="cannot write 'f'"):
            await volume.store("f", b"1")
    finally:
        await anyio.Path(basedir).chmod(0o700)


async def test_os_errors_are_translated_and_leave_nothing(
    volume: FileSystemVolume, tmp_path: Path, tree: Tree
) -> None:
    key = "a/" + "x" * 300
    with pytest.raises(FlowservError) as info:
        await volume.store(key, b"1")
    assert type(info.value) is FlowservError
    assert f"cannot write '{key}'" in info.value.message
    assert "too long" in info.value.message
    assert await tree(tmp_path) == []
