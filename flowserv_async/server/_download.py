"""Streamed downloads: a service's download handle as an HTTP response."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import aclosing
from typing import Any
from urllib.parse import quote

from fastapi.responses import StreamingResponse

from flowserv_async.api import API
from flowserv_async.server._caller import Caller
from flowserv_async.volume import DownloadHandle


def download_responses(media_type: str = "*/*") -> dict[int | str, Any]:
    """The OpenAPI description of a download route's success."""
    return {
        200: {
            "description": "the file, as an attachment",
            "content": {media_type: {"schema": {"type": "string", "format": "binary"}}},
        }
    }


def content_disposition(name: str) -> str:
    """``attachment`` with the file name, RFC 6266 style for names that are not ASCII."""
    quoted = quote(name, safe="")
    if quoted == name:
        return f'attachment; filename="{name}"'
    return f"attachment; filename*=utf-8''{quoted}"


async def _chunks(handle: DownloadHandle) -> AsyncIterator[bytes]:
    async with aclosing(handle.iter_bytes()) as chunks:
        async for chunk in chunks:
            yield chunk


async def download(
    caller: Caller, fetch: Callable[[API], Awaitable[DownloadHandle]]
) -> StreamingResponse:
    """Get a download handle in the caller's session, then stream it.

    The body is read from the file store after the session has ended: a handle needs
    no session.
    """
    async with caller.session() as api:
        handle = await fetch(api)
    return download_response(handle)


def download_response(handle: DownloadHandle) -> StreamingResponse:
    """Stream the handle's content, never compressed, as an attachment."""
    headers = {
        "Content-Disposition": content_disposition(handle.name),
        "Cache-Control": "no-cache",
    }
    if handle.size is not None:
        headers["Content-Length"] = str(handle.size)
    return StreamingResponse(_chunks(handle), media_type=handle.mime_type, headers=headers)
