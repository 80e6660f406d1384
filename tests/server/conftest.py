"""Fixtures of the server tests: an app on a fresh factory, clients, logged-in users.

In-process tests use httpx's ASGITransport (it buffers whole responses); streaming
tests use the real uvicorn server of ``live_server`` (one per test session).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest
from serverutil import BASE_URL, HELLOWORLD, LiveServer, Login, alice_group, write_talker
from sqlalchemy import update

from flowserv_async import LocalAPIFactory
from flowserv_async.db.models import User
from flowserv_async.server import create_app


@pytest.fixture
def server_env() -> dict[str, Any]:
    """Extra settings of the test's factory (parametrize to change)."""
    return {}


@pytest.fixture
async def factory(tmp_path: Path, server_env: dict[str, Any]) -> AsyncIterator[LocalAPIFactory]:
    """An open factory (SQLite and files in ``tmp_path``) under the default policy."""
    env = {"FLOWSERV_API_DIR": str(tmp_path / "api"), "FLOWSERV_AUTH": "default", **server_env}
    async with LocalAPIFactory(env=env) as factory:
        yield factory


@pytest.fixture
async def workflow_id(factory: LocalAPIFactory) -> str:
    """The helloworld workflow, installed by local library code."""
    async with factory() as api:
        wf = await api.workflows().create_workflow(source=str(HELLOWORLD))
    return str(wf["id"])


@pytest.fixture
async def client(factory: LocalAPIFactory) -> AsyncIterator[httpx.AsyncClient]:
    """A client of the app on ``factory``, in process."""
    transport = httpx.ASGITransport(app=create_app(factory))
    async with httpx.AsyncClient(transport=transport, base_url=BASE_URL) as client:
        yield client


@pytest.fixture
def login(client: httpx.AsyncClient, factory: LocalAPIFactory) -> Login:
    """Register and log in a user over HTTP; return its id and ``api_key`` headers."""

    async def login(name: str, *, admin: bool = False) -> tuple[str, dict[str, str]]:
        r = await client.post("users/register", json={"username": name, "password": "pw"})
        assert r.status_code == 201, r.text
        user_id = r.json()["id"]
        if admin:
            # There is no API that makes administrators: the operator sets the flag.
            async with factory.db.write_session() as session:
                await session.execute(
                    update(User).where(User.user_id == user_id).values(is_admin=True)
                )
        r = await client.post("users/login", json={"username": name, "password": "pw"})
        assert r.status_code == 200, r.text
        return user_id, {"api_key": r.json()["token"]}

    return login


@pytest.fixture
async def talker_group(
    factory: LocalAPIFactory, client: httpx.AsyncClient, login: Login, tmp_path: Path
) -> tuple[str, dict[str, str]]:
    """Alice's group of the talker workflow on the in-process factory, and her headers."""
    folder = await anyio.to_thread.run_sync(write_talker, tmp_path / "talker")
    return await alice_group(factory, client, login, folder, "talker")


@pytest.fixture(scope="session")
def live_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    """One real uvicorn server for the whole test session (default policy, anonymous
    downloads for flowserv's client), with the helloworld and talker workflows installed.
    """
    env = {
        "FLOWSERV_API_DIR": str(tmp_path_factory.mktemp("live")),
        "FLOWSERV_AUTH": "default",
        "FLOWSERV_ANONYMOUS_DOWNLOADS": "true",
    }

    talker = write_talker(tmp_path_factory.mktemp("talker"))

    async def install() -> None:
        async with LocalAPIFactory(env=env) as factory, factory() as api:
            await api.workflows().create_workflow(source=str(HELLOWORLD))
            await api.workflows().create_workflow(
                source=str(talker), name="talker", specfile="spec.json"
            )

    anyio.run(install)
    server = LiveServer(env)
    server.start()
    try:
        yield server
    finally:
        server.stop()
