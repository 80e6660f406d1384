"""The aiohttp embedding example: a streamed download and an event stream through its
ASGI bridge."""

from __future__ import annotations

import hashlib
import io
import json
import os
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import httpx
import pytest
from aiohttp.test_utils import TestServer
from serverutil import Login, start_run

from examples.aiohttp_app import make_app
from flowserv_async import LocalAPIFactory
from flowserv_async.events import hub_of
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


async def test_event_stream_through_the_bridge(
    bridged: tuple[str, CountingReceive],
    client: httpx.AsyncClient,
    factory: LocalAPIFactory,
    talker_group: tuple[str, dict[str, str]],
) -> None:
    url, counting = bridged
    group_id, headers = talker_group
    run_id = await start_run(client, group_id, headers)
    counting.calls.clear()
    events: list[dict[str, Any]] = []
    async with (
        aiohttp.ClientSession(headers=headers) as session,
        session.get(f"{url}/runs/{run_id}/events") as response,
    ):
        assert response.status == 200
        assert response.headers["Content-Type"].startswith("text/event-stream")
        async for raw in response.content:
            line = raw.decode().rstrip("\r\n")
            if line.startswith("data:"):
                events.append(json.loads(line.removeprefix("data:").strip()))
    assert events[0]["type"] == "run.created"
    assert events[-1]["type"] == "run.state"
    assert events[-1]["data"]["state"] == "SUCCESS"
    assert [e["data"]["lines"][0]["text"] for e in events if e["type"] == "run.log"][-1] == "three"
    # As for the download: no busy loop of receive() while the stream is open.
    assert counting.calls == [2]
    hub = hub_of(factory.db, keep=0, poll_interval=0, buffer_size=0)  # the factory's hub
    assert hub.stream_count == 0
