"""Fixtures for the volume tests: an fs volume in a temporary folder and a tree lister."""

from __future__ import annotations

import os
from collections.abc import Awaitable, Callable
from pathlib import Path

import anyio
import pytest

from flowserv_async.volume import FileSystemVolume

Tree = Callable[[Path], Awaitable[list[str]]]


def _list_tree(root: Path) -> list[str]:
    entries: list[str] = []
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames:
            entries.append(Path(dirpath, name).relative_to(root).as_posix() + "/")
        for name in filenames:
            entries.append(Path(dirpath, name).relative_to(root).as_posix())
    return sorted(entries)


@pytest.fixture
def basedir(tmp_path: Path) -> Path:
    return tmp_path / "store"


@pytest.fixture
def volume(basedir: Path) -> FileSystemVolume:
    return FileSystemVolume(basedir, identifier="test")


@pytest.fixture
def tree() -> Tree:
    """Return an async function listing every file and folder (``name/``) under a path."""

    async def list_tree(root: Path) -> list[str]:
        return await anyio.to_thread.run_sync(_list_tree, root)

    return list_tree
