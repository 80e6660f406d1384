"""The ``s3`` volume: objects in an S3 bucket (or an S3-compatible store), via aiobotocore.

Keys map to object names ``{prefix}/{key}``. Reads stream the object body; writes go
through a multipart upload in :data:`PART_SIZE` parts (a smaller content is one
``PutObject``), so an object appears only once it is complete, and a failed or cancelled
write aborts its upload. Credentials come from botocore's usual chain (environment,
``~/.aws``, instance roles), never from the volume spec; retries use botocore's own
``standard`` retry mode.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, Iterator
from contextlib import AsyncExitStack, aclosing, contextmanager
from typing import Any

import anyio
from aiobotocore.config import AioConfig
from aiobotocore.session import AioSession
from botocore.exceptions import BotoCoreError, ClientError

from flowserv_async.errors import ConstraintViolationError, FlowservError, UnknownFileError
from flowserv_async.volume._util import StoreData, iter_limited
from flowserv_async.volume.base import CHUNK_SIZE, CLEANUP_TIMEOUT, S3_VOLUME, StorageVolume
from flowserv_async.volume.keys import validate_key, validate_prefix

PART_SIZE = 5 * 1024 * 1024
"""Size of the parts of a multipart upload (S3's minimum for all parts but the last)."""

DELETE_BATCH = 1000
"""Most keys one ``DeleteObjects`` call accepts."""

LIST_PAGE = 1000
"""Keys per ``ListObjectsV2`` page (S3's maximum)."""

MAX_ATTEMPTS = 5
"""Attempts per request in botocore's ``standard`` retry mode (first try included)."""

_MISSING = frozenset({"404", "NoSuchKey", "NotFound"})


class S3Volume(StorageVolume):
    """A storage volume whose files are the objects under ``prefix`` in an S3 bucket.

    The client is created on first use and closed by :meth:`aclose`. Keys are checked with
    the same :func:`~flowserv_async.volume.keys.validate_key` as the ``fs`` volume, and the
    store keeps the same shape as a file system: a key cannot be stored where a folder
    (objects below ``key/``) or a file (an object named like one of its parents) is.
    """

    def __init__(
        self,
        bucket: str,
        prefix: str = "",
        *,
        endpoint_url: str | None = None,
        region: str | None = None,
        identifier: str | None = None,
    ) -> None:
        super().__init__(identifier)
        if not bucket:
            raise ConstraintViolationError("invalid S3 bucket '': empty")
        self.bucket = bucket
        self.prefix = validate_prefix(prefix)
        self.endpoint_url = endpoint_url
        self.region = region
        self._client: Any = None
        self._stack: AsyncExitStack | None = None
        self._lock = anyio.Lock()
        self._closed = False

    def __repr__(self) -> str:
        return f"S3Volume({self.bucket!r}, {self.prefix!r}, identifier={self.identifier!r})"

    def to_dict(self) -> dict[str, Any]:
        """Return the volume spec ``{type: "s3", id, args: {bucket, prefix, ...}}``."""
        args: dict[str, Any] = {"bucket": self.bucket, "prefix": self.prefix}
        if self.endpoint_url is not None:
            args["endpoint_url"] = self.endpoint_url
        if self.region is not None:
            args["region"] = self.region
        return {"type": S3_VOLUME, "id": self.identifier, "args": args}

    async def aclose(self) -> None:
        """Close the S3 client; the volume cannot be used afterwards."""
        async with self._lock:
            self._closed = True
            stack, self._stack, self._client = self._stack, None, None
            if stack is not None:
                with anyio.CancelScope(shield=True):
                    await stack.aclose()

    async def _s3(self) -> Any:
        """Return the open client, creating it on first use."""
        if self._client is not None:
            return self._client
        async with self._lock:
            if self._closed:
                raise FlowservError(f"the S3 volume '{self.identifier}' is closed")
            if self._client is None:
                session = AioSession()
                options: dict[str, Any] = {
                    "endpoint_url": self.endpoint_url,
                    "region_name": self.region,
                    "config": AioConfig(retries={"max_attempts": MAX_ATTEMPTS, "mode": "standard"}),
                }
                stack = AsyncExitStack()
                with _s3_errors(self.bucket, writing=False):
                    # botocore reads models and config files from disk: do that off the loop.
                    await anyio.to_thread.run_sync(_warm_up, session)
                    self._client = await stack.enter_async_context(
                        session.create_client("s3", **options)
                    )
                self._stack = stack
        return self._client

    def _name(self, key: str) -> str:
        """The object name of a validated key."""
        return f"{self.prefix}/{key}" if self.prefix else key

    def _key(self, name: str) -> str:
        """The volume key of an object name under the prefix."""
        return name[len(self.prefix) + 1 :] if self.prefix else name

    # -- Reading ------------------------------------------------------------------------

    async def iter_bytes(
        self, key: str, chunk_size: int = CHUNK_SIZE
    ) -> AsyncGenerator[bytes, None]:
        """Stream the object ``key``; see :meth:`StorageVolume.iter_bytes`."""
        key = validate_key(key)
        client = await self._s3()
        with _s3_errors(key, writing=False):
            response = await client.get_object(Bucket=self.bucket, Key=self._name(key))
        async with response["Body"] as body:
            buffer = bytearray()
            while True:
                with _s3_errors(key, writing=False):
                    data = await body.read(chunk_size)
                if not data:
                    break
                buffer += data
                # The body returns what the socket has; hand out exact chunk sizes.
                while len(buffer) >= chunk_size:
                    yield bytes(buffer[:chunk_size])
                    del buffer[:chunk_size]
            if buffer:
                yield bytes(buffer)

    async def size(self, key: str) -> int:
        """Return the size of ``key`` in bytes; see :meth:`StorageVolume.size`."""
        key = validate_key(key)
        size = await self._head(key)
        if size is None:
            raise UnknownFileError(key)
        return size

    async def exists(self, key: str) -> bool:
        """Tell whether ``key`` names an object or a folder that holds one."""
        key = validate_key(key)
        if await self._head(key) is not None:
            return True
        return await self._has_objects_below(key)

    async def walk(self, prefix: str = "") -> list[str]:
        """Return the sorted keys in the folder ``prefix``; see :meth:`StorageVolume.walk`."""
        prefix = validate_prefix(prefix)
        if prefix and await self._head(prefix) is not None:
            return [prefix]
        keys: list[str] = []
        async with aclosing(self._list(prefix)) as names:
            async for name in names:
                keys.append(self._key(name))
        return sorted(keys)

    async def _head(self, key: str, *, writing: bool = False) -> int | None:
        """Return the size of the object ``key``, or ``None`` when there is none."""
        client = await self._s3()
        with _s3_errors(key, writing=writing):
            try:
                response = await client.head_object(Bucket=self.bucket, Key=self._name(key))
            except ClientError as err:
                if _error_code(err) in _MISSING:
                    return None
                raise
        return int(response["ContentLength"])

    async def _has_objects_below(self, key: str, *, writing: bool = False) -> bool:
        """Tell whether the folder ``key`` holds at least one object."""
        client = await self._s3()
        with _s3_errors(key, writing=writing):
            response = await client.list_objects_v2(
                Bucket=self.bucket, Prefix=self._name(key) + "/", MaxKeys=1
            )
        return bool(response.get("KeyCount", 0))

    async def _list(self, prefix: str) -> AsyncGenerator[str, None]:
        """Yield the object names in the folder ``prefix`` (``''``: the whole volume)."""
        client = await self._s3()
        base = self._name(prefix) if prefix else self.prefix
        paginator = client.get_paginator("list_objects_v2")
        pages = paginator.paginate(
            Bucket=self.bucket,
            Prefix=base + "/" if base else "",
            PaginationConfig={"PageSize": LIST_PAGE},
        )
        with _s3_errors(prefix or "/", writing=False):
            async for page in pages:
                for item in page.get("Contents", ()):
                    yield item["Key"]

    # -- Writing ------------------------------------------------------------------------

    async def store(
        self, key: str, data: StoreData, *, max_size: int | None = None, name: str | None = None
    ) -> int:
        """Store ``data`` under ``key``; see :meth:`StorageVolume.store`.

        Up to :data:`PART_SIZE` bytes are held in memory; a larger content goes up as a
        multipart upload, which is aborted when the write fails or is cancelled.
        """
        key = validate_key(key)
        name = key if name is None else name
        await self._check_in_the_way(key, name)
        client = await self._s3()
        upload = _Upload(client, self.bucket, self._name(key), name)
        size = 0
        buffer = bytearray()
        try:
            async with aclosing(iter_limited(data, name, max_size, CHUNK_SIZE)) as chunks:
                async for chunk in chunks:
                    size += len(chunk)
                    buffer += chunk
                    while len(buffer) >= PART_SIZE:
                        await upload.send(bytes(buffer[:PART_SIZE]))
                        del buffer[:PART_SIZE]
            # Once sent, the object is stored: a cancellation must not undo that.
            with anyio.CancelScope(shield=True):
                await upload.finish(bytes(buffer))
        except BaseException:
            with anyio.move_on_after(CLEANUP_TIMEOUT, shield=True):
                await upload.abort()
            raise
        return size

    async def _check_in_the_way(self, key: str, name: str) -> None:
        """Refuse a key below an existing object or above existing objects (as fs does)."""
        parents = [key[:index] for index, char in enumerate(key) if char == "/"]
        in_the_way = ConstraintViolationError(
            f"cannot store '{name}': a file or folder is in the way"
        )
        for parent in parents:
            if await self._head(parent, writing=True) is not None:
                raise in_the_way
        if await self._has_objects_below(key, writing=True):
            raise in_the_way

    async def delete(self, key: str) -> None:
        """Delete the object or folder ``key``; see :meth:`StorageVolume.delete`."""
        key = validate_key(key)
        names = [self._name(key)]
        async with aclosing(self._list(key)) as below:
            async for name in below:
                names.append(name)
        await self._delete_names(names, key)

    async def erase(self) -> None:
        """Delete every object under the volume's prefix (the bucket itself stays)."""
        names: list[str] = []
        async with aclosing(self._list("")) as found:
            async for name in found:
                names.append(name)
        await self._delete_names(names, self.prefix or "/")

    async def _delete_names(self, names: list[str], key: str) -> None:
        """Delete objects by name, :data:`DELETE_BATCH` per request; missing ones are fine."""
        client = await self._s3()
        for start in range(0, len(names), DELETE_BATCH):
            batch = [{"Key": name} for name in names[start : start + DELETE_BATCH]]
            with _s3_errors(key, writing=True):
                response = await client.delete_objects(
                    Bucket=self.bucket, Delete={"Objects": batch, "Quiet": True}
                )
            errors = response.get("Errors", [])
            if errors:
                first = errors[0]
                raise FlowservError(
                    f"cannot delete '{key}': {first.get('Key')}: {first.get('Message')}"
                )


class _Upload:
    """One object write: a single ``PutObject``, or a multipart upload once parts flow."""

    def __init__(self, client: Any, bucket: str, name: str, key: str) -> None:
        self._client = client
        self._bucket = bucket
        self._name = name
        self._key = key
        self._upload_id: str | None = None
        self._parts: list[dict[str, Any]] = []

    async def send(self, part: bytes) -> None:
        """Upload one full part, starting the multipart upload with the first."""
        with _s3_errors(self._key, writing=True):
            if self._upload_id is None:
                # Shielded, so that a cancellation cannot lose the id of a started upload.
                with anyio.CancelScope(shield=True):
                    response = await self._client.create_multipart_upload(
                        Bucket=self._bucket, Key=self._name
                    )
                    self._upload_id = response["UploadId"]
            number = len(self._parts) + 1
            response = await self._client.upload_part(
                Bucket=self._bucket,
                Key=self._name,
                UploadId=self._upload_id,
                PartNumber=number,
                Body=part,
            )
            self._parts.append({"PartNumber": number, "ETag": response["ETag"]})

    async def finish(self, rest: bytes) -> None:
        """Store ``rest`` as the last part (or the whole object) and complete the upload."""
        with _s3_errors(self._key, writing=True):
            if self._upload_id is None:
                await self._client.put_object(Bucket=self._bucket, Key=self._name, Body=rest)
                return
            if rest:
                await self.send(rest)
            await self._client.complete_multipart_upload(
                Bucket=self._bucket,
                Key=self._name,
                UploadId=self._upload_id,
                MultipartUpload={"Parts": self._parts},
            )
            self._upload_id = None

    async def abort(self) -> None:
        """Abort a started multipart upload, so that no parts are left behind."""
        if self._upload_id is None:
            return
        upload_id, self._upload_id = self._upload_id, None
        with _s3_errors(self._key, writing=True):
            await self._client.abort_multipart_upload(
                Bucket=self._bucket, Key=self._name, UploadId=upload_id
            )


def _warm_up(session: AioSession) -> None:
    """Read what botocore reads from disk for an S3 client, so that the session caches it."""
    session.get_scoped_config()
    session.warm_up_loader_caches("s3")


@contextmanager
def _s3_errors(key: str, *, writing: bool) -> Iterator[None]:
    """Translate botocore errors about ``key`` into flowserv errors (the one boundary)."""
    try:
        yield
    except ClientError as err:
        error = err.response.get("Error", {})
        code = _error_code(err)
        if not writing and code in _MISSING:
            raise UnknownFileError(key) from err
        action = "write" if writing else "read"
        reason = error.get("Message") or code or str(err)
        raise FlowservError(f"cannot {action} '{key}': {reason}") from err
    except BotoCoreError as err:
        action = "write" if writing else "read"
        raise FlowservError(f"cannot {action} '{key}': {err}") from err


def _error_code(err: ClientError) -> str:
    """The S3 error code of a client error (``NoSuchKey``, ``404``, ...)."""
    return str(err.response.get("Error", {}).get("Code", ""))
