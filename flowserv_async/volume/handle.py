"""Download handles: a file's name, MIME type, size and content stream."""

from __future__ import annotations

import mimetypes
import posixpath
from collections.abc import AsyncGenerator, Callable, Iterable
from contextlib import aclosing

from flowserv_async.errors import UnknownFileError
from flowserv_async.volume.archive import archive
from flowserv_async.volume.base import CHUNK_SIZE, StorageVolume
from flowserv_async.volume.keys import validate_key

# Built at import with the standard table only: guesses do not depend on the machine's
# mime.types files, and the first guess does not read those files inside the event loop.
_MIME_TYPES = mimetypes.MimeTypes()

_ENCODING_TYPES = {
    "gzip": "application/gzip",
    "bzip2": "application/x-bzip2",
    "xz": "application/x-xz",
    "br": "application/x-brotli",
    "compress": "application/x-compress",
}

DEFAULT_MIME_TYPE = "application/octet-stream"
"""MIME type of a file whose name tells nothing about its content."""


def guess_mime_type(name: str) -> str:
    """Return the MIME type for a file name; a compressed file is its compression type.

    ``results.csv`` is ``text/csv``, ``run.1.tar.gz`` is ``application/gzip``, and a name
    without a known suffix is ``application/octet-stream``.
    """
    mime_type, encoding = _MIME_TYPES.guess_type(name, strict=False)
    if encoding is not None:
        return _ENCODING_TYPES.get(encoding, DEFAULT_MIME_TYPE)
    return mime_type or DEFAULT_MIME_TYPE


class DownloadHandle:
    """A file ready for download, backed by a volume key or by a streamed archive.

    Attributes:
        name: the file name offered to the client.
        mime_type: the MIME type, guessed from ``name`` unless given.
        size: the size in bytes, or ``None`` when it is not known in advance (archives).

    """

    __slots__ = ("_open", "mime_type", "name", "size")

    def __init__(
        self,
        name: str,
        open_stream: Callable[[int], AsyncGenerator[bytes, None]],
        *,
        size: int | None = None,
        mime_type: str | None = None,
    ) -> None:
        self.name = name
        self.mime_type = mime_type if mime_type is not None else guess_mime_type(name)
        self.size = size
        self._open = open_stream

    def __repr__(self) -> str:
        return (
            f"DownloadHandle(name={self.name!r}, mime_type={self.mime_type!r}, size={self.size!r})"
        )

    @classmethod
    async def from_key(
        cls,
        volume: StorageVolume,
        key: str,
        *,
        name: str | None = None,
        mime_type: str | None = None,
    ) -> DownloadHandle:
        """Return a handle for the file ``key``; ``name`` defaults to the key's last part.

        Raises:
            UnknownFileError: when no file is stored under ``key``, naming the file by
                ``name`` (the storage key is the server's business).

        """
        key = validate_key(key)
        shown = name if name is not None else posixpath.basename(key)
        try:
            size = await volume.size(key)
        except UnknownFileError:
            raise UnknownFileError(shown) from None

        def open_stream(chunk_size: int) -> AsyncGenerator[bytes, None]:
            return volume.iter_bytes(key, chunk_size)

        return cls(
            shown,
            open_stream,
            size=size,
            mime_type=mime_type,
        )

    @classmethod
    async def from_archive(
        cls, volume: StorageVolume, files: Iterable[tuple[str, str]], *, name: str
    ) -> DownloadHandle:
        """Return a handle streaming a tar.gz of ``(key, archive name)`` pairs.

        Every key is checked before the handle is returned, so a missing file fails here
        rather than in the middle of a download.

        Raises:
            UnknownFileError: for a missing key, naming its archive name.
            ConstraintViolationError: for an invalid key or archive name.

        """
        entries = [(validate_key(key), validate_key(arcname)) for key, arcname in files]
        for key, arcname in entries:
            try:
                await volume.size(key)
            except UnknownFileError:
                raise UnknownFileError(arcname) from None

        def open_stream(chunk_size: int) -> AsyncGenerator[bytes, None]:
            return archive(volume, entries, chunk_size=chunk_size)

        return cls(name, open_stream)

    def iter_bytes(self, chunk_size: int = CHUNK_SIZE) -> AsyncGenerator[bytes, None]:
        """Iterate over the content; each call starts a new stream from the beginning."""
        return self._open(chunk_size)

    async def read(self) -> bytes:
        """Return the whole content."""
        parts: list[bytes] = []
        async with aclosing(self.iter_bytes()) as chunks:
            async for chunk in chunks:
                parts.append(chunk)
        return b"".join(parts)
