"""Async file stores: the :class:`StorageVolume` interface and the ``fs`` volume.

Files are addressed by keys, relative POSIX paths checked by :func:`validate_key`. The
file store layout of the service is ``{workflow}/static/``,
``{workflow}/groups/{group}/files/{file}`` and ``{workflow}/runs/{run}/{key}``.
"""

from __future__ import annotations

from flowserv_async.volume._util import StoreData
from flowserv_async.volume.archive import archive
from flowserv_async.volume.base import CHUNK_SIZE, FileCopies, StorageVolume, StrPath
from flowserv_async.volume.factory import volume_from_spec
from flowserv_async.volume.fs import FS_VOLUME, FileSystemVolume
from flowserv_async.volume.handle import DownloadHandle, guess_mime_type
from flowserv_async.volume.keys import join_key, relative_key, validate_key, validate_prefix

__all__ = [
    "CHUNK_SIZE",
    "FS_VOLUME",
    "DownloadHandle",
    "FileCopies",
    "FileSystemVolume",
    "StorageVolume",
    "StoreData",
    "StrPath",
    "archive",
    "guess_mime_type",
    "join_key",
    "relative_key",
    "validate_key",
    "validate_prefix",
    "volume_from_spec",
]
