"""The aiohttp embedding example: a streamed download through its ASGI bridge."""

from __future__ import annotations

import hashlib
import io
import os
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import httpx
import pytest
from aiohttp.test_utils import TestServer
from serverutil import Login

from examples.aiohttp_app import make_app
from flowserv_async import LocalAPIFactory
from flowserv_async.server import create_app

SIZE = 4 * 1024 * 1024 + 7


class CountingReceive:
    """ASGI middleware counting the app's ``receive()`` calls per request."""

    def __init__(self, app: Any) -> None:
        self.app = app
        self.calls: list[int] = []

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        index = len(self.calls)
        self.calls.append(0)

        async def counted() -> Any:
            self.calls[index] += 1
            return await receive()

        await self.app(scope, counted, send)


@pytest.fixture
async def bridged(factory: LocalAPIFactory) -> AsyncIterator[tuple[str, CountingReceive]]:
    counting = CountingReceive(create_app(factory))
    server = TestServer(make_app(factory, counting), host="127.0.0.1", port=0)
    await server.start_server()
    try:
        yield str(server.make_url("/flowserv/api/v1")), counting
    finally:
        await server.close()


async def test_streamed_download_through_the_bridge(
    bridged: tuple[str, CountingReceive], client: httpx.AsyncClient, workflow_id: str, login: Login
) -> None:
    url, counting = bridged
    _, headers = await login("alice")
    r = await client.post(f"workflows/{workflow_id}/groups", json={"name": "t"}, headers=headers)
    group_id = r.json()["id"]
    data = os.urandom(SIZE)
    async with aiohttp.ClientSession(headers=headers) as session:
        form = aiohttp.FormData()
        form.add_field("file", io.BytesIO(data), filename="big.bin")
        async with session.post(f"{url}/uploads/{group_id}/files", data=form) as response:
            assert response.status == 201
            file_id = (await response.json())["id"]
        counting.calls.clear()
        digest, chunks = hashlib.sha256(), 0
        async with session.get(f"{url}/uploads/{group_id}/files/{file_id}") as response:
            assert response.status == 200
            assert response.headers["Content-Disposition"] == 'attachment; filename="big.bin"'
            async for chunk in response.content.iter_any():
                digest.update(chunk)
                chunks += 1
        assert digest.hexdigest() == hashlib.sha256(data).hexdigest()
        assert chunks > 1
        # The body (empty) and one blocked wait for the end: no busy loop while streaming.
        assert counting.calls == [2]
        async with session.get(f"{url}/") as response:
            assert (await response.json())["name"]
        async with session.get(f"{url}/nowhere") as response:
            assert response.status == 404
            assert (await response.json())["message"]
