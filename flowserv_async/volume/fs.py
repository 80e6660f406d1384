"""The ``fs`` volume: files in a folder of the local file system."""

from __future__ import annotations

import os
import re
import shutil
import stat
import uuid
from collections.abc import AsyncGenerator
from contextlib import aclosing
from pathlib import Path
from typing import IO, Any

import anyio
from anyio import AsyncFile

from flowserv_async._threads import run_blocking
from flowserv_async.errors import ConstraintViolationError, UnknownFileError
from flowserv_async.volume._util import StoreData, is_inside, iter_limited, os_errors
from flowserv_async.volume.base import (
    CHUNK_SIZE,
    CLEANUP_TIMEOUT,
    FileCopies,
    StorageVolume,
    StrPath,
    copy_sources,
    plan_copy_to_local,
    prepare_local_target,
)
from flowserv_async.volume.keys import validate_key, validate_prefix

FS_VOLUME = "fs"
"""Volume spec type of :class:`FileSystemVolume`."""

_TEMP_PREFIX = ".~tmp-"
_TEMP_NAME = re.compile(re.escape(_TEMP_PREFIX) + r"[0-9a-f]{32}")
_OPEN_ATTEMPTS = 3


class FileSystemVolume(StorageVolume):
    """A storage volume whose files live under ``basedir`` on the local file system.

    Every file operation runs off the event loop. A key is refused when its path leaves
    ``basedir``, also through a symbolic link. Files are written to a temporary file in
    the target folder and renamed into place when complete; :meth:`walk` never lists
    such temporary files. The base folder is created by the first write.
    """

    def __init__(self, basedir: StrPath, identifier: str | None = None) -> None:
        super().__init__(identifier)
        self._basedir = Path(basedir)

    def __repr__(self) -> str:
        return f"FileSystemVolume({str(self._basedir)!r}, identifier={self.identifier!r})"

    @property
    def basedir(self) -> Path:
        """The base folder of the volume."""
        return self._basedir

    def path(self, key: str) -> Path:
        """Return the local path of ``key`` (for callers that need a real file).

        The key is validated but symbolic links are not checked (that needs file system
        access); use the volume's own methods for untrusted keys.

        Raises:
            ConstraintViolationError: for an invalid key.

        """
        return self._basedir / validate_key(key)

    def to_dict(self) -> dict[str, Any]:
        """Return the volume spec ``{type: "fs", id, args: {basedir}}``."""
        return {"type": FS_VOLUME, "id": self.identifier, "args": {"basedir": str(self._basedir)}}

    async def copy_to_local(
        self, local_dir: StrPath, prefix: str = "", files: FileCopies | None = None
    ) -> list[str]:
        """Copy files into a local folder (see :meth:`StorageVolume.copy_to_local`).

        Listing, planning and copying all happen in one of the library's file threads
        (:func:`~flowserv_async._threads.run_blocking`): staging a run folder is on the
        path of every run, each thread hop costs CPU, and a burst of runs would start
        anyio's idle worker threads again from the event loop.
        """
        return await run_blocking(self._copy_out, Path(local_dir), prefix, files)

    def _copy_out(self, root: Path, prefix: str, files: FileCopies | None) -> list[str]:
        # Each real path is resolved once per call (os.path.realpath is an lstat per
        # part of the path, in Python): staging is on the path of every run.
        real_root = os.path.realpath(self.basedir)
        listings = {}
        for folder in copy_sources(prefix, files):
            with os_errors(folder):
                listings[folder] = self._walk(folder, False, real_root)
        plan = plan_copy_to_local(prefix, files, listings)
        with os_errors(str(root), writing=True):
            root.mkdir(parents=True, exist_ok=True)
        real_local = os.path.realpath(root)
        for key, target in plan:
            source = os.path.realpath(self.path(key))
            if not is_inside(source, real_root):
                raise ConstraintViolationError(f"key '{key}' leaves the volume through a link")
            path = prepare_local_target(root, target, real_local)
            with os_errors(str(path), writing=True):
                try:
                    shutil.copyfile(source, path)
                except FileNotFoundError:
                    raise UnknownFileError(key) from None
        return [target for _, target in plan]

    async def store(
        self, key: str, data: StoreData, *, max_size: int | None = None, name: str | None = None
    ) -> int:
        """Store ``data`` under ``key``; see :meth:`StorageVolume.store`."""
        key = validate_key(key)
        name = key if name is None else name
        # Shielded, so that a cancellation cannot lose the open file and its folders.
        with anyio.CancelScope(shield=True):
            target, temp, created, file = await anyio.to_thread.run_sync(self._open_temp, key)
        try:
            with os_errors(name, writing=True):
                async with anyio.wrap_file(file) as out:
                    size = await _write_chunks(out, data, name, max_size)
                # Once renamed, the file is stored: a cancellation must not undo that.
                with anyio.CancelScope(shield=True):
                    await anyio.Path(temp).replace(target)
        except BaseException:
            with anyio.move_on_after(CLEANUP_TIMEOUT, shield=True):
                await anyio.to_thread.run_sync(_discard, temp, created)
            raise
        return size

    async def iter_bytes(
        self, key: str, chunk_size: int = CHUNK_SIZE
    ) -> AsyncGenerator[bytes, None]:
        """Iterate over the content of ``key``; see :meth:`StorageVolume.iter_bytes`."""
        key = validate_key(key)
        path = await anyio.to_thread.run_sync(self._checked_path, key)
        with os_errors(key):
            file = await anyio.open_file(path, "rb")
        async with file:
            while True:
                with os_errors(key):
                    chunk = await file.read(chunk_size)
                if not chunk:
                    return
                yield chunk

    async def size(self, key: str) -> int:
        """Return the size of ``key`` in bytes; see :meth:`StorageVolume.size`."""
        key = validate_key(key)
        with os_errors(key):
            return await anyio.to_thread.run_sync(self._file_size, key)

    async def exists(self, key: str) -> bool:
        """Tell whether ``key`` names a file or a folder that holds a file."""
        key = validate_key(key)
        return bool(await anyio.to_thread.run_sync(self._walk, key, True))

    async def delete(self, key: str) -> None:
        """Delete the file or folder ``key``; see :meth:`StorageVolume.delete`."""
        key = validate_key(key)
        with os_errors(key, writing=True):
            await anyio.to_thread.run_sync(self._delete, key)

    async def walk(self, prefix: str = "") -> list[str]:
        """Return the sorted keys of the files in ``prefix``; see :meth:`StorageVolume.walk`."""
        prefix = validate_prefix(prefix)
        with os_errors(prefix):
            return await anyio.to_thread.run_sync(self._walk, prefix, False)

    async def erase(self) -> None:
        """Remove the base folder and everything in it."""
        with os_errors(str(self._basedir), writing=True):
            await anyio.to_thread.run_sync(_remove_tree, self._basedir)

    # -- Blocking helpers, run in worker threads ------------------------------------

    def _checked_path(self, key: str, real_root: str | None = None) -> Path:
        """Return the path of a valid key, refusing one that leaves the base folder.

        ``real_root`` is the real path of the base folder, if the caller has it.
        """
        path = self._basedir / key
        if real_root is None:
            real_root = os.path.realpath(self._basedir)
        if not is_inside(os.path.realpath(path), real_root):
            raise ConstraintViolationError(
                f"invalid file key '{key}': leaves the volume through a symbolic link"
            )
        return path

    def _open_temp(self, key: str) -> tuple[Path, Path, list[Path], IO[bytes]]:
        """Create the target's folders and open a new temporary file next to the target.

        Returns the target path, the temporary path, the folders that were created (top
        first) and the open temporary file.
        """
        target = self._checked_path(key)
        temp = target.with_name(f"{_TEMP_PREFIX}{uuid.uuid4().hex}")
        created: list[Path] = []
        attempt = 1
        try:
            while True:
                with os_errors(key, writing=True):
                    created += _make_folders(target.parent)
                    try:
                        return target, temp, created, temp.open("xb")
                    except FileNotFoundError:
                        # A failed store removed an empty folder it had made; make it again.
                        if attempt == _OPEN_ATTEMPTS:
                            raise
                attempt += 1
        except BaseException:
            _remove_folders(created)
            raise

    def _file_size(self, key: str) -> int:
        """Return the size of the file ``key``."""
        info = self._checked_path(key).stat()
        if not stat.S_ISREG(info.st_mode):
            raise UnknownFileError(key)
        return info.st_size

    def _delete(self, key: str) -> None:
        """Delete the file, link or folder ``key``, if any."""
        path = self._checked_path(key)
        if path.is_dir() and not path.is_symlink():
            _remove_tree(path)
        else:
            path.unlink(missing_ok=True)

    def _walk(self, prefix: str, first_only: bool, real_root: str | None = None) -> list[str]:
        """List the file keys in ``prefix`` (only the first one found if ``first_only``).

        ``real_root`` is the real path of the base folder, if the caller has it.
        """
        if real_root is None:
            real_root = os.path.realpath(self._basedir)
        folder = self._checked_path(prefix, real_root) if prefix else self._basedir
        if folder.is_file():
            return [prefix]
        keys: list[str] = []
        for dirpath, _, filenames in os.walk(folder):
            for name in filenames:
                path = Path(dirpath, name)
                if (
                    _TEMP_NAME.fullmatch(name)
                    or not path.is_file()
                    or not is_inside(os.path.realpath(path), real_root)
                ):
                    continue
                keys.append(path.relative_to(self._basedir).as_posix())
                if first_only:
                    return keys
        return sorted(keys)


async def _write_chunks(
    out: AsyncFile[bytes], data: StoreData, name: str, max_size: int | None
) -> int:
    """Write ``data`` to ``out`` chunk by chunk; return the size, refusing ``max_size``."""
    size = 0
    async with aclosing(iter_limited(data, name, max_size, CHUNK_SIZE)) as chunks:
        async for chunk in chunks:
            size += len(chunk)
            await out.write(chunk)
    return size


def _make_folders(folder: Path) -> list[Path]:
    """Create ``folder`` and its missing parents; return those made here, top first."""
    missing: list[Path] = []
    while not folder.is_dir() and folder != folder.parent:
        missing.append(folder)
        folder = folder.parent
    created: list[Path] = []
    for path in reversed(missing):
        try:
            path.mkdir()
        except FileExistsError:
            # Another writer made it in the meantime; a file in the way is an error.
            if not path.is_dir():
                raise
        else:
            created.append(path)
    return created


def _remove_folders(created: list[Path]) -> None:
    """Remove folders made by a failed store, deepest first, while they are empty."""
    for path in reversed(created):
        try:
            path.rmdir()
        except OSError:
            return


def _discard(temp: Path, created: list[Path]) -> None:
    """Remove the temporary file and the folders of a failed store."""
    temp.unlink(missing_ok=True)
    _remove_folders(created)


def _remove_tree(path: Path) -> None:
    """Remove a folder and its content; a missing folder is fine."""
    try:
        shutil.rmtree(path)
    except FileNotFoundError:
        return
