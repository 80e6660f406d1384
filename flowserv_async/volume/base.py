"""The storage volume interface: an async file store addressed by relative keys."""

from __future__ import annotations

import os
import posixpath
import uuid
from abc import ABC, abstractmethod
from collections.abc import AsyncGenerator, Iterable, Iterator, Mapping
from contextlib import aclosing
from pathlib import Path
from typing import Any, Self, TypeAlias

import anyio

from flowserv_async.errors import ConstraintViolationError, UnknownFileError
from flowserv_async.volume._util import StoreData, is_inside, iter_local_file, os_errors
from flowserv_async.volume.keys import join_key, relative_key, validate_key, validate_prefix

StrPath: TypeAlias = str | os.PathLike[str]
"""A local file system path."""

FileCopies: TypeAlias = Iterable[tuple[str, str | None]]
"""``(source, target)`` pairs of relative paths; a ``None`` target keeps the source path."""

CHUNK_SIZE = 256 * 1024
"""Default size of the chunks in which files are read and copied, in bytes."""

S3_VOLUME = "s3"
"""Volume spec type of the S3 volume (:class:`~flowserv_async.volume.s3.S3Volume`, in
its own module because aiobotocore is an optional extra)."""

CLEANUP_TIMEOUT = 10.0
"""Seconds that the shielded clean-up after a failed or cancelled write may take."""


class StorageVolume(ABC):
    """An async file store whose files are addressed by relative POSIX keys.

    Keys are checked with :func:`~flowserv_async.volume.keys.validate_key`. Reading a
    missing key raises :class:`~flowserv_async.errors.UnknownFileError`; writes are atomic
    (a file appears under its key only once it is complete).
    """

    def __init__(self, identifier: str | None = None) -> None:
        self.identifier: str = identifier if identifier is not None else uuid.uuid4().hex

    @abstractmethod
    async def store(
        self, key: str, data: StoreData, *, max_size: int | None = None, name: str | None = None
    ) -> int:
        """Store ``data`` under ``key`` and return the number of bytes written.

        Async iterables and file objects are streamed chunk by chunk, never buffered
        whole. An existing file is replaced only once the new content is complete; a
        failure, a cancellation or a content larger than ``max_size`` leaves nothing
        behind. Error messages call the file ``name`` (default: the key), so that a
        caller can keep its storage keys to itself.

        Raises:
            ConstraintViolationError: for an invalid key, a file or folder in the way,
                or when the content exceeds ``max_size`` bytes.
            FlowservError: when the file cannot be written, or reading ``data``
                fails with an OS error (the upload was interrupted).

        """

    @abstractmethod
    def iter_bytes(self, key: str, chunk_size: int = CHUNK_SIZE) -> AsyncGenerator[bytes, None]:
        """Iterate over the content of the file ``key`` in chunks of ``chunk_size`` bytes.

        Raises:
            UnknownFileError: when no file is stored under ``key``.

        """

    @abstractmethod
    async def size(self, key: str) -> int:
        """Return the size of the file ``key`` in bytes.

        Raises:
            UnknownFileError: when no file is stored under ``key``.

        """

    @abstractmethod
    async def exists(self, key: str) -> bool:
        """Tell whether a file is stored under ``key`` or in the folder ``key``."""

    @abstractmethod
    async def delete(self, key: str) -> None:
        """Delete the file ``key``, or every file in the folder ``key``; missing is a no-op."""

    @abstractmethod
    async def walk(self, prefix: str = "") -> list[str]:
        """Return the sorted keys of the files in the folder ``prefix`` (``''``: all files).

        A prefix that names a file yields that key alone; a missing prefix yields ``[]``.
        """

    @abstractmethod
    async def erase(self) -> None:
        """Remove the volume and every file in it."""

    @abstractmethod
    def to_dict(self) -> dict[str, Any]:
        """Return the volume spec (``{type, id, args}``) that recreates this volume."""

    async def aclose(self) -> None:
        """Release the volume's connections, if it holds any (the ``fs`` volume holds none)."""
        return

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    async def load(self, key: str) -> bytes:
        """Return the whole content of the file ``key``.

        Raises:
            UnknownFileError: when no file is stored under ``key``.

        """
        parts: list[bytes] = []
        async with aclosing(self.iter_bytes(key)) as chunks:
            async for chunk in chunks:
                parts.append(chunk)
        return b"".join(parts)

    async def store_file(
        self,
        key: str,
        local_path: StrPath,
        *,
        max_size: int | None = None,
        name: str | None = None,
    ) -> int:
        """Copy the local file ``local_path`` to ``key``; see :meth:`store`.

        Raises:
            UnknownFileError: when ``local_path`` is not a readable file.

        """
        async with aclosing(iter_local_file(Path(local_path), CHUNK_SIZE)) as chunks:
            return await self.store(key, chunks, max_size=max_size, name=name)

    async def copy_to_local(
        self, local_dir: StrPath, prefix: str = "", files: FileCopies | None = None
    ) -> list[str]:
        """Copy files from the volume into the local folder ``local_dir``.

        Without ``files``, every file in the folder ``prefix`` is copied, keeping its path
        relative to ``prefix`` (a prefix naming a file copies that file by its name).
        With ``files``, each ``(source, target)`` pair copies the file or folder
        ``{prefix}/{source}`` to ``{local_dir}/{target}``. ``local_dir`` and the local
        folders are created as needed, also when nothing is copied; targets never leave
        ``local_dir``. ``local_dir`` is scratch space (a run
        folder): a failed copy may leave partial files there for the caller to remove.

        Returns:
            The local paths written, relative to ``local_dir``, in copy order.

        Raises:
            UnknownFileError: when a listed source is missing.
            ConstraintViolationError: for an invalid key or target path.

        """
        listings = {key: await self.walk(key) for key in copy_sources(prefix, files)}
        plan = plan_copy_to_local(prefix, files, listings)
        root = Path(local_dir)
        await anyio.Path(root).mkdir(parents=True, exist_ok=True)
        for key, target_path in plan:
            path = await anyio.to_thread.run_sync(prepare_local_target, root, target_path)
            async with aclosing(self.iter_bytes(key)) as chunks:
                with os_errors(str(path), writing=True):
                    async with await anyio.open_file(path, "wb") as out:
                        async for chunk in chunks:
                            await out.write(chunk)
        return [target_path for _, target_path in plan]

    async def copy_from_local(
        self, local_dir: StrPath, prefix: str = "", files: FileCopies | None = None
    ) -> list[str]:
        """Copy files from the local folder ``local_dir`` into the volume folder ``prefix``.

        Without ``files``, the whole folder is copied. With ``files``, each
        ``(source, target)`` pair copies the local file or folder ``{local_dir}/{source}``
        to ``{prefix}/{target}``. Sources must stay inside ``local_dir`` (also through
        symbolic links) and must be regular files; links to folders are not followed.
        Everything is checked before the first file is copied, and when a copy fails the
        files already copied are deleted again.

        Returns:
            The keys written, in copy order.

        Raises:
            UnknownFileError: when ``local_dir`` or a listed source is missing.
            ConstraintViolationError: for a path that leaves ``local_dir`` or the target
                folder, or a source that is not a regular file.

        """
        base = validate_prefix(prefix)
        copies = None if files is None else list(files)
        plan = await anyio.to_thread.run_sync(_plan_local_sources, Path(local_dir), copies)
        written: list[str] = []
        try:
            for path, target in plan:
                key = join_key(base, target)
                await self.store_file(key, path)
                written.append(key)
        except BaseException:
            with anyio.move_on_after(CLEANUP_TIMEOUT, shield=True):
                for key in written:
                    await self.delete(key)
            raise
        return written


def copy_sources(prefix: str, files: FileCopies | None) -> list[str]:
    """The volume folders (or files) that :meth:`StorageVolume.copy_to_local` lists."""
    base = validate_prefix(prefix)
    if files is None:
        return [base]
    return [join_key(base, source) for source, _ in files]


def plan_copy_to_local(
    prefix: str, files: FileCopies | None, listings: Mapping[str, list[str]]
) -> list[tuple[str, str]]:
    """The checked ``(key, local target)`` pairs of :meth:`StorageVolume.copy_to_local`.

    ``listings`` holds the keys in each of the :func:`copy_sources`.
    """
    base = validate_prefix(prefix)
    plan: list[tuple[str, str]] = []
    if files is None:
        for key in listings[base]:
            plan.append((key, relative_key(key, base) or posixpath.basename(key)))
        return plan
    for source, target in files:
        source_key = join_key(base, source)
        target_path = validate_key(target if target else source)
        keys = listings[source_key]
        if not keys:
            raise UnknownFileError(source_key)
        for key in keys:
            plan.append((key, join_key(target_path, relative_key(key, source_key))))
    return plan


def prepare_local_target(root: Path, target: str, real_root: str | None = None) -> Path:
    """Return the local path of ``target`` under ``root`` with its parent folders made.

    ``real_root`` is the real path of ``root``, if the caller has it.
    """
    path = root / target
    if real_root is None:
        real_root = os.path.realpath(root)
    if not is_inside(os.path.realpath(path), real_root):
        raise ConstraintViolationError(
            f"local path '{target}' leaves the folder '{root}' through a symbolic link"
        )
    with os_errors(str(path), writing=True):
        path.parent.mkdir(parents=True, exist_ok=True)
    return path


def _plan_local_sources(
    root: Path, files: list[tuple[str, str | None]] | None
) -> list[tuple[Path, str]]:
    """List the local files to copy as ``(path, target key)`` pairs, checking every path."""
    if not root.is_dir():
        raise UnknownFileError(str(root))
    real_root = os.path.realpath(root)
    if files is None:
        return sorted(_walk_local(root, root, "", real_root), key=lambda item: item[1])
    plan: list[tuple[Path, str]] = []
    for source, target in files:
        source_path = validate_key(source)
        target_key = validate_key(target if target else source)
        path = root / source_path
        real = os.path.realpath(path)
        if not is_inside(real, real_root):
            raise ConstraintViolationError(f"file '{source}' leaves the folder '{root}'")
        if os.path.isfile(real):
            plan.append((path, target_key))
        elif os.path.isdir(real):
            found = _walk_local(root, path, target_key, real_root)
            plan.extend(sorted(found, key=lambda item: item[1]))
        else:
            raise UnknownFileError(source)
    return plan


def _walk_local(
    root: Path, folder: Path, target: str, real_root: str
) -> Iterator[tuple[Path, str]]:
    """Yield ``(path, target key)`` for the files in a local folder, refusing escapes."""
    for dirpath, dirnames, filenames in os.walk(folder):
        for name in dirnames:
            path = Path(dirpath, name)
            # os.walk does not descend into linked folders, but one leading out is refused.
            if path.is_symlink():
                _check_local_source(root, path, real_root)
        for name in filenames:
            path = Path(dirpath, name)
            _check_local_source(root, path, real_root)
            if not path.is_file():
                raise ConstraintViolationError(
                    f"file '{path.relative_to(root).as_posix()}' is not a regular file"
                )
            yield path, join_key(target, path.relative_to(folder).as_posix())


def _check_local_source(root: Path, path: Path, real_root: str) -> None:
    """Refuse a local path that resolves to a place outside ``root``."""
    if not is_inside(os.path.realpath(path), real_root):
        raise ConstraintViolationError(
            f"file '{path.relative_to(root).as_posix()}' leaves the folder '{root}'"
        )
