"""Streamed uploads: the file part of a ``multipart/form-data`` body, as it arrives.

python-multipart's push parser is fed the request body chunk by chunk; the data of the
first part named ``file`` or ``files`` (flowserv's remote client uses ``files``) is handed
on without spooling the body to memory or disk.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, AsyncIterator
from typing import Any

from python_multipart.exceptions import MultipartParseError
from python_multipart.multipart import MultipartParser, parse_options_header

FILE_FIELDS = frozenset({b"file", b"files"})


class UploadError(Exception):
    """The upload cannot be taken: ``status`` 400 (no file) or 413 (too large)."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


class FilePart:
    """The file part of a multipart body, read while the body arrives.

    Call :meth:`open` first (it reads up to the end of the part's headers and returns
    the file name), then iterate :meth:`chunks` for the content.
    """

    def __init__(
        self, content_type: str | None, body: AsyncIterator[bytes], max_size: int | None
    ) -> None:
        kind, options = parse_options_header(content_type)
        boundary = options.get(b"boundary")
        if kind != b"multipart/form-data" or not boundary:
            raise UploadError(400, "no file request: expected multipart/form-data")
        self._body = body
        self._max_size = max_size
        self._name: str | None = None
        self._in_file = False
        self._done = False
        self._pending: list[bytes] = []
        self._header_field = b""
        self._header_value = b""
        self._headers: dict[bytes, bytes] = {}
        callbacks: Any = {
            "on_part_begin": self._part_begin,
            "on_header_field": self._header_field_data,
            "on_header_value": self._header_value_data,
            "on_header_end": self._header_end,
            "on_headers_finished": self._headers_finished,
            "on_part_data": self._part_data,
            "on_part_end": self._part_end,
        }
        self._parser = MultipartParser(boundary, callbacks)

    async def open(self) -> str:
        """Read up to the file part's content and return its file name.

        Raises:
            UploadError: the body has no ``file`` or ``files`` part (400).

        """
        while self._name is None:
            if not await self._feed():
                raise UploadError(400, "no file request: no 'file' part in the body")
        return self._name

    async def chunks(self) -> AsyncGenerator[bytes, None]:
        """The file's content as it arrives.

        Raises:
            UploadError: the file is larger than the size limit (413).

        """
        size = 0
        while True:
            while self._pending:
                chunk = self._pending.pop(0)
                size += len(chunk)
                if self._max_size is not None and size > self._max_size:
                    raise UploadError(
                        413, f"the file exceeds the upload limit of {self._max_size} bytes"
                    )
                yield chunk
            if self._done:
                return
            if not await self._feed():
                raise UploadError(400, "the multipart body ended inside the file")

    async def _feed(self) -> bool:
        """Parse the next chunk of the body; False at its end."""
        chunk = await anext(self._body, None)
        if chunk is None:
            return False
        try:
            self._parser.write(chunk)
        except MultipartParseError as exc:
            raise UploadError(400, f"malformed multipart body: {exc}") from exc
        return True

    def _part_begin(self) -> None:
        self._headers = {}

    def _header_field_data(self, data: bytes, start: int, end: int) -> None:
        self._header_field += data[start:end]

    def _header_value_data(self, data: bytes, start: int, end: int) -> None:
        self._header_value += data[start:end]

    def _header_end(self) -> None:
        self._headers[self._header_field.lower()] = self._header_value
        self._header_field = self._header_value = b""

    def _headers_finished(self) -> None:
        if self._name is not None:
            return
        _, options = parse_options_header(self._headers.get(b"content-disposition"))
        filename = options.get(b"filename")
        if options.get(b"name") in FILE_FIELDS and filename is not None:
            self._name = filename.decode("utf-8", "replace")
            self._in_file = True

    def _part_data(self, data: bytes, start: int, end: int) -> None:
        if self._in_file:
            self._pending.append(bytes(data[start:end]))

    def _part_end(self) -> None:
        if self._in_file:
            self._in_file = False
            self._done = True
