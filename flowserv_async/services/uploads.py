"""The uploads service: files that a group uploads for its runs."""

from __future__ import annotations

import os
from collections.abc import AsyncGenerator, AsyncIterable
from typing import Any

from sqlalchemy import select

from flowserv_async._util import new_id
from flowserv_async.db.models import Group, UploadedFile
from flowserv_async.errors import (
    ConstraintViolationError,
    InvalidArgumentError,
    UnknownFileError,
    UnknownWorkflowGroupError,
)
from flowserv_async.services import serialize
from flowserv_async.services.base import Service, paged
from flowserv_async.services.stored import upload_key
from flowserv_async.volume import DownloadHandle, guess_mime_type, validate_key

MAX_NAME_LENGTH = 1024
"""Longest upload name (the size of the name column)."""

# Characters that make a name display as something it is not: bidirectional controls
# (U+202E shows "exe.txt" for "txt.exe"), zero-width characters, and line and paragraph
# separators. Letters of every script stay allowed.
_DECEPTIVE = frozenset(
    "\u061c\u200b\u200c\u200d\u200e\u200f\u2028\u2029\u202a\u202b\u202c\u202d\u202e"
    "\u2060\u2066\u2067\u2068\u2069\ufeff"
)


def check_file_name(name: Any) -> str:
    """Check an upload name: a file name or relative path, without ``..``.

    Names that would display misleadingly (bidirectional controls, zero-width
    characters, line or paragraph separators) are refused.

    Raises:
        InvalidArgumentError: naming the value.

    """
    if not isinstance(name, str):
        raise InvalidArgumentError(f"invalid file name {name!r}: not a string")
    hidden = sorted({f"U+{ord(c):04X}" for c in name if c in _DECEPTIVE})
    if hidden:
        raise InvalidArgumentError(
            f"invalid file name {name!r}: contains invisible or direction-changing"
            f" characters ({', '.join(hidden)})"
        )
    try:
        key = validate_key(name)
    except ConstraintViolationError as exc:
        raise InvalidArgumentError(f"invalid file name {name!r}: {exc.message}") from exc
    if len(key) > MAX_NAME_LENGTH:
        raise InvalidArgumentError(
            f"invalid file name {name[:32]!r}...: longer than {MAX_NAME_LENGTH} characters"
        )
    return key


def _content(file: Any) -> Any:
    """Check what ``upload_file`` was given; async streams are checked chunk by chunk.

    Raises:
        InvalidArgumentError: for anything but bytes, a binary file object or an async
            iterable of bytes.

    """
    if isinstance(file, bytes | bytearray | memoryview):
        return file
    if isinstance(file, AsyncIterable):
        return _byte_chunks(file)
    if callable(getattr(file, "read", None)) and not isinstance(
        getattr(file, "encoding", None), str
    ):
        return _BinaryReader(file)
    raise InvalidArgumentError(
        f"cannot upload {type(file).__name__}: give bytes, a path, a binary file object"
        " or an async iterable of bytes"
    )


async def _byte_chunks(chunks: AsyncIterable[Any]) -> AsyncGenerator[bytes, None]:
    async for chunk in chunks:
        if not isinstance(chunk, bytes | bytearray | memoryview):
            raise InvalidArgumentError(f"upload stream yielded {type(chunk).__name__}, not bytes")
        yield bytes(chunk) if not isinstance(chunk, bytes) else chunk


class _BinaryReader:
    """A file object whose ``read`` must return bytes (a text file is refused)."""

    def __init__(self, file: Any) -> None:
        self._file = file

    def read(self, size: int = -1) -> bytes:
        chunk = self._file.read(size)
        if not isinstance(chunk, bytes | bytearray | memoryview):
            raise InvalidArgumentError(
                f"upload file object returned {type(chunk).__name__}, not bytes"
            )
        return bytes(chunk)


class UploadService(Service):
    """Upload, list, download and delete a group's files (members only)."""

    async def upload_file(self, group_id: str, file: Any, name: str) -> dict[str, Any]:
        """Store a file for a group.

        ``file`` is ``bytes``, a local path (``str`` or ``os.PathLike``), a binary file
        object, or an async iterable of ``bytes`` (streamed in chunks). With
        ``FLOWSERV_MAX_UPLOAD_SIZE`` set, a larger file is refused and nothing is kept.

        Raises:
            UnknownWorkflowGroupError: no such group.
            UnauthorizedAccessError: the caller is not a member.
            InvalidArgumentError: a bad file name, or content that is not bytes.
            ConstraintViolationError: the file exceeds the size limit.
            UnknownFileError: a local path that does not exist.

        """
        group = await self._group(group_id)
        await self.ctx.require_member(group_id)
        file_name = check_file_name(name)
        file_id = new_id()
        key = upload_key(group.workflow_id, group_id, file_id)
        volume = self.ctx.factory.volume
        limit = self.ctx.settings.max_upload_size or None
        self.ctx.on_rollback.append(lambda: volume.delete(key))
        if isinstance(file, str | os.PathLike):
            size = await volume.store_file(key, file, max_size=limit, name=file_name)
        else:
            size = await volume.store(key, _content(file), max_size=limit, name=file_name)
        # Only now, with the file stored, wait for the write lock (SQLite).
        await self.ctx.begin_write()
        if await self.session.get(Group, group_id) is None:
            raise UnknownWorkflowGroupError(group_id)
        row = UploadedFile(
            file_id=file_id,
            group_id=group_id,
            name=file_name,
            mime_type=guess_mime_type(file_name),
            size=size,
            key=key,
        )
        self.session.add(row)
        await self.session.flush()
        return serialize.file_handle(row)

    async def list_uploaded_files(
        self, group_id: str, limit: int | None = None, offset: int | None = None
    ) -> dict[str, Any]:
        """List a group's files in upload order."""
        await self._group(group_id)
        await self.ctx.require_member(group_id)
        stmt = paged(
            select(UploadedFile)
            .where(UploadedFile.group_id == group_id)
            .order_by(UploadedFile.created_at, UploadedFile.file_id),
            limit,
            offset,
        )
        files = (await self.session.scalars(stmt)).all()
        return {"files": [serialize.file_handle(f) for f in files]}

    async def get_uploaded_file(self, group_id: str, file_id: str) -> DownloadHandle:
        """Return a download handle for a group's file.

        The handle has ``name``, ``mime_type``, ``size``, ``read()`` and ``iter_bytes()``.

        Raises:
            UnknownWorkflowGroupError, UnauthorizedAccessError, UnknownFileError.

        """
        row = await self._file(group_id, file_id, download=True)
        return await DownloadHandle.from_key(
            self.ctx.factory.volume, row.key, name=row.name, mime_type=row.mime_type
        )

    async def delete_file(self, group_id: str, file_id: str) -> None:
        """Delete a group's file; the stored file is removed once the deletion commits.

        Raises:
            UnknownWorkflowGroupError, UnauthorizedAccessError, UnknownFileError.

        """
        await self.ctx.begin_write()
        row = await self._file(group_id, file_id)
        await self.session.delete(row)
        await self.session.flush()
        volume, key = self.ctx.factory.volume, row.key
        self.ctx.after_commit.append(lambda: volume.delete(key))

    async def _group(self, group_id: str) -> Group:
        group = await self.session.get(Group, group_id)
        if group is None:
            raise UnknownWorkflowGroupError(group_id)
        return group

    async def _file(self, group_id: str, file_id: str, download: bool = False) -> UploadedFile:
        await self._group(group_id)
        if download:
            await self.ctx.require_downloader(group_id)
        else:
            await self.ctx.require_member(group_id)
        row = await self.session.get(UploadedFile, file_id)
        if row is None or row.group_id != group_id:
            raise UnknownFileError(file_id)
        return row
