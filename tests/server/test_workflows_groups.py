"""Workflows, leaderboards and groups over HTTP, with the non-member matrix."""

from __future__ import annotations

from typing import Any

import httpx
import pytest
from serverutil import Login, count_rows

from flowserv_async import LocalAPIFactory
from flowserv_async.db.models import Group, GroupMember


async def make_group(
    client: httpx.AsyncClient, workflow_id: str, headers: dict[str, str], name: str = "team"
) -> dict[str, Any]:
    r = await client.post(f"workflows/{workflow_id}/groups", json={"name": name}, headers=headers)
    assert r.status_code == 201, r.text
    return dict(r.json())


async def test_workflows_listing_and_handle(
    client: httpx.AsyncClient, workflow_id: str, login: Login
) -> None:
    r = await client.get("workflows")
    assert r.status_code == 200
    assert [w["id"] for w in r.json()["workflows"]] == [workflow_id]
    anonymous = (await client.get(f"workflows/{workflow_id}")).json()
    assert anonymous["id"] == workflow_id
    assert [p["name"] for p in anonymous["parameters"]] == ["names", "sleeptime", "greeting"]
    assert "groups" not in anonymous
    _, headers = await login("alice")
    group = await make_group(client, workflow_id, headers)
    handle = (await client.get(f"workflows/{workflow_id}", headers=headers)).json()
    assert handle["groups"] == [{"id": group["id"], "name": "team", "workflow": workflow_id}]
    assert (await client.get("workflows/unknown")).status_code == 404


@pytest.mark.parametrize(
    "query",
    [
        "",
        "?orderBy=&includeAll=False",  # flowserv's remote client
        "?orderBy=max_len:DESC,avg_count:ASC&includeAll=True",
        "?orderBy=max_len&includeAll",
        "?includeAll=",
    ],
)
async def test_leaderboard_queries(client: httpx.AsyncClient, workflow_id: str, query: str) -> None:
    r = await client.get(f"workflows/{workflow_id}/leaderboard{query}")
    assert r.status_code == 200
    doc = r.json()
    assert [c["name"] for c in doc["schema"]] == ["avg_count", "max_len", "max_line"]
    assert doc["ranking"] == []


@pytest.mark.parametrize("order_by", ["nope", "max_len,", ":DESC"])
async def test_leaderboard_unknown_column_is_400(
    client: httpx.AsyncClient, workflow_id: str, order_by: str
) -> None:
    r = await client.get(f"workflows/{workflow_id}/leaderboard", params={"orderBy": order_by})
    assert r.status_code == 400
    assert "column" in r.json()["message"]


async def test_leaderboard_of_unknown_workflow_is_404(client: httpx.AsyncClient) -> None:
    assert (await client.get("workflows/unknown/leaderboard")).status_code == 404


async def test_create_group_accepts_what_flowservs_client_sends(
    client: httpx.AsyncClient, workflow_id: str, login: Login
) -> None:
    bob, _ = await login("bob")
    _, headers = await login("alice")
    body = {"name": "team", "members": [bob], "parameters": [], "id": "g1", "config": None}
    r = await client.post(f"workflows/{workflow_id}/groups", json=body, headers=headers)
    assert r.status_code == 201
    group = r.json()
    assert group["id"] == "g1"
    assert sorted(m["username"] for m in group["members"]) == ["alice", "bob"]
    assert set(group) >= {"id", "name", "workflow", "members", "parameters", "files", "config"}


@pytest.mark.parametrize(
    ("body", "status"),
    [
        ({"name": "team"}, 400),  # taken
        ({"name": " "}, 400),
        ({"name": "other", "members": ["nobody"]}, 400),
        ({"name": "other", "members": "alice"}, 400),
        ({}, 400),
    ],
)
async def test_create_group_errors_leave_nothing(
    client: httpx.AsyncClient,
    factory: LocalAPIFactory,
    workflow_id: str,
    login: Login,
    body: dict[str, Any],
    status: int,
) -> None:
    _, headers = await login("alice")
    await make_group(client, workflow_id, headers)
    r = await client.post(f"workflows/{workflow_id}/groups", json=body, headers=headers)
    assert r.status_code == status
    assert r.json()["message"]
    assert await count_rows(factory, Group) == 1
    assert await count_rows(factory, GroupMember) == 1


async def test_create_group_needs_a_user_and_a_workflow(
    client: httpx.AsyncClient, factory: LocalAPIFactory, workflow_id: str, login: Login
) -> None:
    r = await client.post(f"workflows/{workflow_id}/groups", json={"name": "x"})
    assert r.status_code == 403
    r = await client.post(
        f"workflows/{workflow_id}/groups", json={"name": "x"}, headers={"api_key": "null"}
    )
    assert r.status_code == 403
    _, headers = await login("alice")
    r = await client.post("workflows/unknown/groups", json={"name": "x"}, headers=headers)
    assert r.status_code == 404
    assert await count_rows(factory, Group) == 0


async def test_group_listings_show_the_callers_groups(
    client: httpx.AsyncClient, workflow_id: str, login: Login
) -> None:
    _, alice = await login("alice")
    _, bob = await login("bob")
    mine = await make_group(client, workflow_id, alice, "A")
    await make_group(client, workflow_id, bob, "B")
    expected = [{"id": mine["id"], "name": "A", "workflow": workflow_id}]
    assert (await client.get("groups", headers=alice)).json() == {"groups": expected}
    r = await client.get(f"workflows/{workflow_id}/groups", headers=alice)
    assert r.json() == {"groups": expected}
    assert (await client.get("groups")).status_code == 403
    assert (await client.get(f"workflows/{workflow_id}/groups")).status_code == 403
    r = await client.get("workflows/unknown/groups", headers=alice)
    assert r.status_code == 404


async def test_group_update_by_put_and_post(
    client: httpx.AsyncClient, workflow_id: str, login: Login
) -> None:
    bob, _ = await login("bob")
    _, alice = await login("alice")
    group = await make_group(client, workflow_id, alice)
    r = await client.put(f"groups/{group['id']}", json={"name": "renamed"}, headers=alice)
    assert r.status_code == 200
    assert r.json()["name"] == "renamed"
    body = {"members": [bob, group["members"][0]["id"]]}
    r = await client.post(f"groups/{group['id']}", json=body, headers=alice)
    assert r.status_code == 200
    assert sorted(m["username"] for m in r.json()["members"]) == ["alice", "bob"]
    r = await client.put(f"groups/{group['id']}", json={"members": ["nobody"]}, headers=alice)
    assert r.status_code == 400
    r = await client.put(f"groups/{group['id']}", json={"members": []}, headers=alice)
    assert r.status_code == 400
    r = await client.get(f"groups/{group['id']}", headers=alice)
    assert sorted(m["username"] for m in r.json()["members"]) == ["alice", "bob"]


async def test_group_delete_with_a_json_body(
    client: httpx.AsyncClient, factory: LocalAPIFactory, workflow_id: str, login: Login
) -> None:
    _, alice = await login("alice")
    group = await make_group(client, workflow_id, alice)
    # rob-ui deletes with a JSON body '{}'.
    r = await client.request("DELETE", f"groups/{group['id']}", json={}, headers=alice)
    assert r.status_code == 204
    assert r.content == b""
    assert await count_rows(factory, Group) == 0
    assert (await client.delete(f"groups/{group['id']}", headers=alice)).status_code == 404


NON_MEMBER_ROUTES = [
    ("GET", "groups/{g}", None),
    ("PUT", "groups/{g}", {"name": "x"}),
    ("POST", "groups/{g}", {"name": "x"}),
    ("DELETE", "groups/{g}", None),
    ("GET", "groups/{g}/runs", None),
    ("POST", "groups/{g}/runs", {"arguments": []}),
    ("GET", "uploads/{g}/files", None),
    ("GET", "uploads/{g}/files/{f}", None),  # a download: the token is optional
    ("DELETE", "uploads/{g}/files/{f}", None),
]


@pytest.mark.parametrize(("method", "path", "body"), NON_MEMBER_ROUTES)
async def test_non_members_and_anonymous_callers_get_403(
    client: httpx.AsyncClient,
    factory: LocalAPIFactory,
    workflow_id: str,
    login: Login,
    method: str,
    path: str,
    body: dict[str, Any] | None,
) -> None:
    _, alice = await login("alice")
    _, bob = await login("bob")
    group = await make_group(client, workflow_id, alice)
    r = await client.post(
        f"uploads/{group['id']}/files", files={"file": ("a.txt", b"A")}, headers=alice
    )
    url = path.format(g=group["id"], f=r.json()["id"])
    for headers in (bob, {}, {"api_key": "null"}):
        r = await client.request(method, url, json=body, headers=headers)
        assert r.status_code == 403, (headers, r.text)
        assert r.json()["message"]
    # Unknown groups: 404 for users; anonymous callers get 403 where a login is required.
    unknown = path.format(g="unknown", f="unknown")
    assert (await client.request(method, unknown, json=body, headers=bob)).status_code == 404
    anonymous = 404 if (method, path) == ("GET", "uploads/{g}/files/{f}") else 403
    assert (await client.request(method, unknown, json=body)).status_code == anonymous
    handle = (await client.get(f"groups/{group['id']}", headers=alice)).json()
    assert handle["name"] == "team"
    assert len(handle["files"]) == 1


@pytest.mark.parametrize("server_env", [{"FLOWSERV_AUTH": "open"}])
async def test_open_access_needs_no_token(client: httpx.AsyncClient, workflow_id: str) -> None:
    group = await make_group(client, workflow_id, {})
    assert (await client.get(f"groups/{group['id']}")).status_code == 200
    assert (await client.get("users")).status_code == 200
