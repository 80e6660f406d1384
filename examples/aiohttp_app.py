"""flowserv's REST API inside an aiohttp application.

Run it with ``python examples/aiohttp_app.py [BASEDIR]`` (needs ``aiohttp`` and the
``server`` extra); the API is at http://localhost:8080/flowserv/api/v1/ next to the
aiohttp app's own routes.

aiohttp is no ASGI server, so a small bridge hands each request under the API path to the
ASGI app. Unlike aiohttp-asgi's bridge, its ``receive()`` blocks once the request body
has been read: Starlette's streamed responses call ``receive()`` in a loop to notice a
client that goes away, and a ``receive()`` that answers at once keeps that loop spinning
at 100 % CPU for as long as the download lasts.
"""

from __future__ import annotations

import asyncio
import contextlib
import sys
from collections.abc import MutableMapping
from typing import Any

from aiohttp import web

from flowserv_async import LocalAPIFactory
from flowserv_async.server import create_app

ASGIApp = Any
Message = MutableMapping[str, Any]


class ASGIBridge:
    """An aiohttp handler that serves requests with an ASGI app (HTTP only)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def handle(self, request: web.Request) -> web.StreamResponse:
        """Run the ASGI app for one request, streaming its response."""
        scope = {
            "type": "http",
            "asgi": {"version": "3.0", "spec_version": "2.3"},
            "http_version": f"{request.version.major}.{request.version.minor}",
            "method": request.method,
            "scheme": request.scheme,
            "path": request.path,
            "raw_path": request.raw_path.split("?", 1)[0].encode("latin-1"),
            "root_path": "",
            "query_string": request.query_string.encode("latin-1"),
            "headers": [(k.lower(), v) for k, v in request.raw_headers],
            "client": request.transport.get_extra_info("peername") if request.transport else None,
            "server": None,
        }
        response: web.StreamResponse | None = None
        body_read = False
        finished = asyncio.Event()

        async def receive() -> Message:
            nonlocal body_read
            if not body_read:
                chunk = await request.content.readany()
                if chunk:
                    return {"type": "http.request", "body": chunk, "more_body": True}
                body_read = True
                return {"type": "http.request", "body": b"", "more_body": False}
            # The fix: after the body there is nothing to receive until the exchange is
            # over. Block here (aiohttp cancels the handler when the client goes away).
            await finished.wait()
            return {"type": "http.disconnect"}

        async def send(message: Message) -> None:
            nonlocal response
            if message["type"] == "http.response.start":
                response = web.StreamResponse(status=message["status"])
                for name, value in message.get("headers", []):
                    response.headers.add(name.decode("latin-1"), value.decode("latin-1"))
                await response.prepare(request)
            elif message["type"] == "http.response.body":
                assert response is not None, "body before start"
                body = message.get("body", b"")
                if body:
                    await response.write(body)
                if not message.get("more_body", False):
                    await response.write_eof()
                    finished.set()

        try:
            await self.app(scope, receive, send)
        finally:
            finished.set()
        if response is None:
            raise web.HTTPInternalServerError(text="the ASGI app sent no response")
        return response


def make_app(factory: LocalAPIFactory, asgi_app: ASGIApp | None = None) -> web.Application:
    """An aiohttp app with its own route and the REST API under the factory's API path.

    ``asgi_app`` defaults to ``create_app(factory)``; the factory's owner opens and
    closes it (see :func:`main`).
    """
    bridge = ASGIBridge(asgi_app if asgi_app is not None else create_app(factory))
    path = "/" + factory.settings.api_path.strip("/")

    async def hello(request: web.Request) -> web.Response:
        return web.Response(text="aiohttp here; the API is at " + path + "/\n")

    app = web.Application()
    app.router.add_get("/", hello)
    app.router.add_route("*", path, bridge.handle)
    app.router.add_route("*", path + "/{tail:.*}", bridge.handle)
    return app


async def serve(basedir: str, port: int = 8080) -> None:
    """Serve until cancelled; the factory lives as long as the aiohttp app."""
    async with LocalAPIFactory(env={"FLOWSERV_API_DIR": basedir}) as factory:
        runner = web.AppRunner(make_app(factory))
        await runner.setup()
        try:
            await web.TCPSite(runner, "localhost", port).start()
            print(f"serving on http://localhost:{port}/ (Ctrl-C stops)", flush=True)
            await asyncio.Event().wait()
        finally:
            await runner.cleanup()


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt):  # Ctrl-C is the way to stop it
        asyncio.run(serve(sys.argv[1] if len(sys.argv) > 1 else ".flowserv"))
