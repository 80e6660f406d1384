"""Streaming against a real uvicorn server (ASGITransport buffers whole responses)."""

from __future__ import annotations

import hashlib
import os
from collections.abc import AsyncIterator

import httpx
from serverutil import LiveServer

SIZE = 8 * 1024 * 1024 + 123
BOUNDARY = "flowservtestboundary"


async def multipart_body(data: bytes, chunk: int = 64 * 1024) -> AsyncIterator[bytes]:
    """A multipart body sent in chunks (chunked transfer encoding, no length)."""
    yield (
        f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="files"; filename="big.bin"\r\n\r\n'
    ).encode()
    for start in range(0, len(data), chunk):
        yield data[start : start + chunk]
    yield f"\r\n--{BOUNDARY}--\r\n".encode()


async def test_streamed_upload_and_download(live_server: LiveServer) -> None:
    data = os.urandom(SIZE)
    async with httpx.AsyncClient(base_url=live_server.url + "/", timeout=60) as client:
        r = await client.post("users/register", json={"username": "streamer", "password": "pw"})
        r = await client.post("users/login", json={"username": "streamer", "password": "pw"})
        headers = {"api_key": r.json()["token"]}
        workflow_id = (await client.get("workflows")).json()["workflows"][0]["id"]
        r = await client.post(
            f"workflows/{workflow_id}/groups", json={"name": "streamers"}, headers=headers
        )
        group_id = r.json()["id"]
        r = await client.post(
            f"uploads/{group_id}/files",
            content=multipart_body(data),
            headers={**headers, "content-type": f"multipart/form-data; boundary={BOUNDARY}"},
        )
        assert r.status_code == 201, r.text
        assert r.json()["size"] == SIZE
        url = f"uploads/{group_id}/files/{r.json()['id']}"
        digest, chunks, received = hashlib.sha256(), 0, 0
        async with client.stream(
            "GET", url, headers={**headers, "accept-encoding": "gzip"}
        ) as response:
            assert response.status_code == 200
            assert response.headers["content-length"] == str(SIZE)
            assert response.headers["content-disposition"] == 'attachment; filename="big.bin"'
            assert "content-encoding" not in response.headers
            async for chunk in response.aiter_raw():
                digest.update(chunk)
                received += len(chunk)
                chunks += 1
        assert received == SIZE
        assert chunks > 1
        assert digest.hexdigest() == hashlib.sha256(data).hexdigest()
