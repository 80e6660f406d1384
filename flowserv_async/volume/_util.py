"""Helpers shared by the volume implementations: chunked reads and OS error translation."""

from __future__ import annotations

import os
from collections.abc import AsyncGenerator, AsyncIterable, Iterator
from contextlib import aclosing, contextmanager
from pathlib import Path
from typing import IO, TypeAlias

import anyio

from flowserv_async.errors import ConstraintViolationError, FlowservError, UnknownFileError

StoreData: TypeAlias = bytes | bytearray | memoryview | IO[bytes] | AsyncIterable[bytes]
"""What a volume stores: bytes, a binary file object (read off the event loop) or an
async iterable of byte chunks."""


async def iter_data(data: StoreData, chunk_size: int) -> AsyncGenerator[bytes, None]:
    """Yield the content of ``data`` as byte chunks; file objects are read off the loop."""
    if isinstance(data, bytes | bytearray | memoryview):
        yield bytes(data)
    elif isinstance(data, AsyncIterable):
        async for chunk in data:
            yield chunk
    else:
        while chunk := await anyio.to_thread.run_sync(data.read, chunk_size):
            yield chunk


async def iter_limited(
    data: StoreData, name: str, max_size: int | None, chunk_size: int
) -> AsyncGenerator[bytes, None]:
    """Yield the chunks of ``data`` (the file ``name``), refusing more than ``max_size`` bytes.

    Raises:
        ConstraintViolationError: once the content exceeds ``max_size``.
        FlowservError: when reading ``data`` fails with an OS error.

    """
    size = 0
    async with aclosing(iter_data(data, chunk_size)) as chunks:
        while True:
            # An OS error while reading is the source's (a client's connection that
            # dropped), not the store's: it must not read as a failed write.
            try:
                chunk = await anext(chunks)
            except StopAsyncIteration:
                return
            except OSError as err:
                raise FlowservError(
                    f"'{name}' was not stored: the upload was interrupted ({err.strerror or err})"
                ) from err
            size += len(chunk)
            if max_size is not None and size > max_size:
                raise ConstraintViolationError(
                    f"file '{name}' exceeds the size limit of {max_size} bytes"
                )
            yield chunk


async def iter_local_file(path: Path, chunk_size: int) -> AsyncGenerator[bytes, None]:
    """Yield the content of a local file in chunks."""
    with os_errors(str(path)):
        file = await anyio.open_file(path, "rb")
    async with file:
        while True:
            with os_errors(str(path)):
                chunk = await file.read(chunk_size)
            if not chunk:
                return
            yield chunk


def is_inside(path: str, folder: str) -> bool:
    """Tell whether the resolved ``path`` equals or lies under the resolved ``folder``."""
    return os.path.commonpath([path, folder]) == folder


@contextmanager
def os_errors(name: str, *, writing: bool = False) -> Iterator[None]:
    """Translate OS errors about the file or key ``name`` into flowserv errors."""
    try:
        yield
    except OSError as err:
        raise os_error(err, name, writing=writing) from err


def os_error(err: OSError, name: str, *, writing: bool = False) -> FlowservError:
    """Return the flowserv error for an OS error about the file or key ``name``.

    Reading: a missing file (or a folder where a file was expected) is an
    :class:`UnknownFileError`. Writing: a file or folder in the way is a
    :class:`ConstraintViolationError`. Anything else (permissions, a full disk) is a
    :class:`FlowservError` with the OS's reason.
    """
    in_the_way = (FileExistsError, IsADirectoryError, NotADirectoryError)
    if writing and isinstance(err, in_the_way):
        return ConstraintViolationError(f"cannot store '{name}': a file or folder is in the way")
    if not writing and isinstance(err, (FileNotFoundError, *in_the_way)):
        return UnknownFileError(name)
    action = "write" if writing else "read"
    return FlowservError(f"cannot {action} '{name}': {err.strerror or err}")
