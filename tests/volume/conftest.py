"""Fixtures for the volume tests.

``volume`` runs a test on each volume type: ``fs`` in a temporary folder and ``s3`` on
the session's moto server (objects under the prefix ``store``). ``stored`` lists what a
volume holds in the same shape for both, so that "nothing left behind" means the same:
files and their folders (``name/``), plus ``upload:{key}`` for an unfinished S3 upload.
On ``fs`` the real tree is listed, so an empty folder or a temporary file shows too.
``fs_volume`` is for the tests of what only a file system has (links, permissions).
"""

from __future__ import annotations

import os
import posixpath
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import anyio
import pytest
from s3util import MotoS3

from flowserv_async.volume import FileSystemVolume, StorageVolume
from flowserv_async.volume.s3 import S3Volume

Tree = Callable[[Path], Awaitable[list[str]]]
Stored = Callable[[], Awaitable[list[str]]]

S3_PREFIX = "store"


def _list_tree(root: Path) -> list[str]:
    entries: list[str] = []
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames:
            entries.append(Path(dirpath, name).relative_to(root).as_posix() + "/")
        for name in filenames:
            entries.append(Path(dirpath, name).relative_to(root).as_posix())
    return sorted(entries)


def _with_folders(names: list[str]) -> list[str]:
    """Object names as a file tree listing: each name and each of its folders."""
    entries = set()
    for name in names:
        entries.add(name)
        folder = posixpath.dirname(name.removeprefix("upload:"))
        while folder:
            entries.add(folder + "/")
            folder = posixpath.dirname(folder)
    return sorted(entries)


@pytest.fixture
def basedir(tmp_path: Path) -> Path:
    return tmp_path / "store"


@pytest.fixture(params=["fs", "s3"])
def volume_kind(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def s3_server(volume_kind: str, request: pytest.FixtureRequest) -> MotoS3 | None:
    return request.getfixturevalue("s3") if volume_kind == "s3" else None


@pytest.fixture
async def volume(basedir: Path, s3_server: MotoS3 | None) -> AsyncIterator[StorageVolume]:
    if s3_server is None:
        yield FileSystemVolume(basedir, identifier="test")
        return
    args = s3_server.args(S3_PREFIX)
    async with S3Volume(
        args["bucket"],
        args["prefix"],
        endpoint_url=args["endpoint_url"],
        region=args["region"],
        identifier="test",
    ) as s3_volume:
        yield s3_volume


@pytest.fixture
def fs_volume(basedir: Path) -> FileSystemVolume:
    return FileSystemVolume(basedir, identifier="test")


@pytest.fixture
def tree() -> Tree:
    """Return an async function listing every file and folder (``name/``) under a path."""

    async def list_tree(root: Path) -> list[str]:
        return await anyio.to_thread.run_sync(_list_tree, root)

    return list_tree


@pytest.fixture
def stored(s3_server: MotoS3 | None, basedir: Path, tree: Tree) -> Stored:
    """Return an async function listing what the ``volume`` holds (see the module doc)."""

    async def list_stored() -> list[str]:
        if s3_server is None:
            if not await anyio.Path(basedir).exists():
                return []
            return await tree(basedir) or ["./"]
        names = await anyio.to_thread.run_sync(s3_server.contents)
        prefix = S3_PREFIX + "/"
        outside = [name for name in names if prefix not in name]
        assert outside == [], f"objects outside the volume prefix: {outside}"
        return _with_folders([name.replace(prefix, "", 1) for name in names])

    return list_stored
