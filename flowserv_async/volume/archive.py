"""Streamed tar.gz archives of volume files, e.g. for ``run.{id}.tar.gz`` downloads."""

from __future__ import annotations

import tarfile
import time
import zlib
from collections.abc import AsyncGenerator, Iterable
from contextlib import aclosing

import anyio

from flowserv_async.errors import FlowservError
from flowserv_async.volume.base import CHUNK_SIZE, StorageVolume
from flowserv_async.volume.keys import validate_key


async def archive(
    volume: StorageVolume,
    files: Iterable[tuple[str, str]],
    *,
    chunk_size: int = CHUNK_SIZE,
    compresslevel: int = 6,
) -> AsyncGenerator[bytes, None]:
    """Yield a gzip-compressed tar archive of volume files, chunk by chunk.

    ``files`` pairs each key with its name in the archive. The archive is built as it
    is consumed: each chunk of a file is read from the volume and compressed in a worker
    thread before the next one is read, so memory stays bounded by ``chunk_size`` for
    files of any size, nothing is written to disk, and when the consumer stops or is
    cancelled no more work is done.

    Raises:
        ConstraintViolationError: for an invalid key or archive name.
        UnknownFileError: for a missing key.
        FlowservError: when a file changes size while it is archived.

    """
    entries = [(validate_key(key), validate_key(name)) for key, name in files]
    mtime = int(time.time())
    # wbits 16 + MAX_WBITS: a gzip stream (header and trailer), as ``tar czf`` writes.
    compressor = zlib.compressobj(compresslevel, zlib.DEFLATED, 16 + zlib.MAX_WBITS)
    length = 0
    for key, name in entries:
        size = await volume.size(key)
        info = tarfile.TarInfo(name)
        info.size = size
        info.mtime = mtime
        info.mode = 0o644
        header = info.tobuf(tarfile.PAX_FORMAT, "utf-8", "surrogateescape")
        if output := compressor.compress(header):
            yield output
        written = 0
        async with aclosing(volume.iter_bytes(key, chunk_size)) as chunks:
            async for chunk in chunks:
                written += len(chunk)
                if written > size:
                    break
                if output := await anyio.to_thread.run_sync(compressor.compress, chunk):
                    yield output
        if written != size:
            raise FlowservError(f"file '{key}' changed while it was archived")
        padding = -size % tarfile.BLOCKSIZE
        length += len(header) + size + padding
        if output := compressor.compress(bytes(padding)):
            yield output
    # End of archive: two empty blocks, then zeros up to a full record, as tarfile writes.
    length += 2 * tarfile.BLOCKSIZE
    trailer = bytes(2 * tarfile.BLOCKSIZE + (-length % tarfile.RECORDSIZE))
    yield compressor.compress(trailer) + compressor.flush()
