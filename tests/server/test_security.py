"""No request is ever an administrator without an administrator's token."""

from __future__ import annotations

import re
import tempfile
from typing import Any

import httpx
import pytest
from serverutil import Login, count_rows

from flowserv_async import LocalAPIFactory
from flowserv_async.db.models import User
from flowserv_async.local import SessionManager
from flowserv_async.server import create_app
from flowserv_async.server.app import client_message


async def test_every_request_session_is_opened_with_a_token(
    client: httpx.AsyncClient,
    factory: LocalAPIFactory,
    workflow_id: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # The library lets a session opened with no token pass the admin check (local code
    # holds the database anyway); a request must never open such a session.
    seen: list[str | None] = []
    original = SessionManager.__init__

    def record(self: SessionManager, factory: Any, user_id: Any, access_token: Any) -> None:
        seen.append(access_token)
        assert user_id is None
        original(self, factory, user_id, access_token)

    monkeypatch.setattr(SessionManager, "__init__", record)
    doc = (await client.get("openapi.json")).json()
    requests = 0
    for path, operations in doc["paths"].items():
        url = re.sub(r"\{[^}]+\}", workflow_id, path)
        for method in operations:
            r = await client.request(method.upper(), f"http://testserver{url}", json={})
            requests += 1
            assert r.status_code < 500, (method, path, r.text)
    assert requests > 30
    assert seen
    assert all(token is not None for token in seen)


@pytest.mark.parametrize("token", [None, "null", "", "0" * 64, "short"])
async def test_anonymous_requests_get_no_admin_operation(
    client: httpx.AsyncClient, factory: LocalAPIFactory, login: Login, token: str | None
) -> None:
    await login("alice")
    headers = {} if token is None else {"api_key": token}
    users_before = await count_rows(factory, User)
    assert (await client.get("users", headers=headers)).status_code == 403
    r = await client.post("users/activate", json={"id": "x"}, headers=headers)
    assert r.status_code == 403
    assert await count_rows(factory, User) == users_before


async def test_the_servers_own_token_is_never_a_requests_token(
    factory: LocalAPIFactory, login: Login, client: httpx.AsyncClient
) -> None:
    _, admin = await login("root", admin=True)
    # A server whose environment holds an administrator's token: requests without a
    # token must not act with it.
    env = {**factory.env, "FLOWSERV_ACCESS_TOKEN": admin["api_key"]}
    async with LocalAPIFactory(env=env) as with_token:
        transport = httpx.ASGITransport(app=create_app(with_token))
        async with httpx.AsyncClient(transport=transport, base_url=str(client.base_url)) as other:
            assert (await other.get("users")).status_code == 403
            assert (await other.get("users/whoami")).status_code == 403
            assert "username" not in (await other.get("")).json()
            assert (await other.get("users", headers=admin)).status_code == 200
        async with with_token() as api:  # local library code still uses it
            assert api.user_id is not None


async def test_error_messages_that_show_server_internals_are_replaced(
    factory: LocalAPIFactory,
) -> None:
    api_dir = str(factory.settings.api_dir)
    internal = [
        f"cannot read template file {api_dir}/wf/static/spec.yaml: no such file",
        f"file 'x' leaves the folder '{tempfile.gettempdir()}/run-1'",
        "unknown file 'a1/groups/g1/files/f1'",
        "unknown file '0123456789abcdef0123456789abcdef/runs/r1/results.json'",
        "file key 'wf_1/static/code' is not inside 'x'",
    ]
    for message in internal:
        assert client_message(message, 404, factory) == "unknown object"
        assert client_message(message, 400, factory) == "bad request"
    for message in ("unknown file 'names.txt'", "unknown group 'g1'", "invalid name 'a/b'"):
        assert client_message(message, 404, factory) == message
