"""Users over HTTP: register, login, whoami, logout, passwords, listing, activation."""

from __future__ import annotations

import httpx
import pytest
from serverutil import Login, count_rows

from flowserv_async import LocalAPIFactory
from flowserv_async.db.models import APIKey, User


async def test_register_login_whoami_logout(client: httpx.AsyncClient) -> None:
    r = await client.post("users/register", json={"username": "alice", "password": "pw"})
    assert r.status_code == 201
    user = r.json()
    assert set(user) == {"id", "username"}
    # Without 'verify' the user is active (flowserv's Python API default).
    r = await client.post("users/login", json={"username": "alice", "password": "pw"})
    assert r.status_code == 200
    token = r.json()["token"]
    assert r.json() == {**user, "token": token}
    headers = {"api_key": token}
    assert (await client.get("users/whoami", headers=headers)).json() == {**user, "token": token}
    # rob-ui logs out with '{}', flowserv's client with no body: both answer JSON.
    r = await client.post("users/logout", headers=headers, json={})
    assert r.status_code == 200
    assert r.json() == user
    assert (await client.get("users/whoami", headers=headers)).status_code == 403


async def test_logout_without_a_body(client: httpx.AsyncClient, login: Login) -> None:
    _, headers = await login("alice")
    r = await client.post("users/logout", headers=headers)
    assert r.status_code == 200
    assert r.json()["username"] == "alice"


async def test_register_with_verify_needs_activation_by_an_admin(
    client: httpx.AsyncClient, login: Login
) -> None:
    r = await client.post(
        "users/register", json={"username": "bob", "password": "pw", "verify": True}
    )
    bob = r.json()["id"]
    assert (
        await client.post("users/login", json={"username": "bob", "password": "pw"})
    ).status_code == 404
    _, alice = await login("alice")
    r = await client.post("users/activate", json={"id": bob}, headers=alice)
    assert r.status_code == 403
    assert (await client.post("users/activate", json={"id": bob})).status_code == 403
    _, admin = await login("root", admin=True)
    r = await client.post("users/activate", json={"id": bob}, headers=admin)
    assert r.status_code == 200
    assert r.json() == {"id": bob, "username": "bob"}
    r = await client.post("users/activate", json={"id": "nobody"}, headers=admin)
    assert r.status_code == 404
    assert (
        await client.post("users/login", json={"username": "bob", "password": "pw"})
    ).status_code == 200


@pytest.mark.parametrize(
    ("body", "status"),
    [
        ({"username": "alice", "password": "pw"}, 400),  # taken
        ({"username": "carol", "password": " "}, 400),
        ({"username": "x" * 513, "password": "pw"}, 400),
        ({"username": "carol"}, 400),
    ],
)
async def test_register_errors_leave_no_user(
    client: httpx.AsyncClient, factory: LocalAPIFactory, login: Login, body: dict, status: int
) -> None:
    await login("alice")
    r = await client.post("users/register", json=body)
    assert r.status_code == status
    assert r.json()["message"]
    assert await count_rows(factory, User) == 2  # the default user and alice


@pytest.mark.parametrize(
    "body",
    [
        {"username": "nobody", "password": "pw"},
        {"username": "alice", "password": "wrong"},
    ],
)
async def test_failed_login_is_404_and_makes_no_token(
    client: httpx.AsyncClient, factory: LocalAPIFactory, login: Login, body: dict
) -> None:
    await login("alice")
    before = await count_rows(factory, APIKey)
    r = await client.post("users/login", json=body)
    assert r.status_code == 404
    assert await count_rows(factory, APIKey) == before


@pytest.mark.parametrize("token", [None, "null", "", "0" * 64])
async def test_whoami_and_logout_need_a_valid_token(
    client: httpx.AsyncClient, token: str | None
) -> None:
    headers = {} if token is None else {"api_key": token}
    for r in (
        await client.get("users/whoami", headers=headers),
        await client.post("users/logout", headers=headers),
    ):
        assert r.status_code == 403
        assert r.json()["message"]


async def test_password_reset(client: httpx.AsyncClient, login: Login) -> None:
    _, headers = await login("alice")
    r = await client.post("users/password/request", json={"username": "alice"})
    assert r.status_code == 200
    request_id = r.json()["requestId"]
    # Unknown names get the same answer: accounts cannot be probed.
    r = await client.post("users/password/request", json={"username": "nobody"})
    assert r.status_code == 200
    assert set(r.json()) == {"requestId"}
    r = await client.post("users/password/reset", json={"requestId": "unknown", "password": "new"})
    assert r.status_code == 404
    r = await client.post("users/password/reset", json={"requestId": request_id, "password": " "})
    assert r.status_code == 400
    r = await client.post("users/password/reset", json={"requestId": request_id, "password": "new"})
    assert r.status_code == 200
    assert r.json()["username"] == "alice"
    # The reset logs the user out.
    assert (await client.get("users/whoami", headers=headers)).status_code == 403
    r = await client.post("users/login", json={"username": "alice", "password": "new"})
    assert r.status_code == 200


async def test_users_listing_is_for_admins_and_never_shows_tokens(
    client: httpx.AsyncClient, login: Login
) -> None:
    _, alice = await login("alice")
    await login("bob")
    _, admin = await login("root", admin=True)
    assert (await client.get("users")).status_code == 403
    assert (await client.get("users", headers=alice)).status_code == 403
    r = await client.get("users", headers=admin)
    assert r.status_code == 200
    users = r.json()["users"]
    assert [u["username"] for u in users] == ["alice", "bob", "root"]
    assert all(set(u) == {"id", "username"} for u in users)
    r = await client.get("users", params={"query": "b"}, headers=admin)
    assert [u["username"] for u in r.json()["users"]] == ["bob"]
