"""The app itself: lifespan, extra isolation, errors as JSON, OpenAPI, CORS."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx
import pytest
from serverutil import API_PATH, BASE_URL

from flowserv_async import LocalAPIFactory
from flowserv_async.server import create_app


def test_library_imports_nothing_of_the_server_extra() -> None:
    code = (
        "import sys, flowserv_async, flowserv_async.cli;"
        "mods = [m for m in ('fastapi', 'starlette', 'uvicorn', 'python_multipart',"
        " 'sse_starlette', 'flowserv_async.server') if m in sys.modules];"
        "print(mods); sys.exit(1 if mods else 0)"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr


async def test_owned_factory_lives_as_long_as_the_lifespan(tmp_path: Path) -> None:
    app = create_app(env={"FLOWSERV_API_DIR": str(tmp_path)})
    factory = app.state.flowserv_factory
    assert not factory.is_open
    async with app.router.lifespan_context(app):
        assert factory.is_open
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url=BASE_URL) as client:
            assert (await client.get("workflows")).json() == {"workflows": []}
    assert not factory.is_open


async def test_given_factory_is_opened_but_never_closed(tmp_path: Path) -> None:
    async with LocalAPIFactory(env={"FLOWSERV_API_DIR": str(tmp_path)}) as factory:
        app = create_app(factory)
        async with app.router.lifespan_context(app):
            assert factory.is_open
        assert factory.is_open


def test_create_app_refuses_ambiguous_or_unsafe_factories(tmp_path: Path) -> None:
    env = {"FLOWSERV_API_DIR": str(tmp_path)}
    with pytest.raises(ValueError, match="either a factory or env"):
        create_app(LocalAPIFactory(env=env), env=env)
    with pytest.raises(ValueError, match="every request's user"):
        create_app(LocalAPIFactory(env=env, user_id="u1"))


async def test_service_descriptor_with_and_without_trailing_slash(
    client: httpx.AsyncClient, login: Any
) -> None:
    slash = await client.get(f"{BASE_URL}/")
    bare = await client.get(BASE_URL)
    assert slash.status_code == bare.status_code == 200
    doc = slash.json()
    assert doc == bare.json()
    assert doc["url"] == f"http://localhost:5000{API_PATH}"
    assert "username" not in doc
    routes = {r["id"]: r["pattern"] for r in doc["routes"]}
    assert len(routes) == 31
    assert routes["files:upload"] == "uploads/{userGroupId}/files"
    assert routes["groups:runs"] == "groups/{userGroupId}/runs?state={state}"
    _, headers = await login("alice")
    assert (await client.get("", headers=headers)).json()["username"] == "alice"
    # rob-ui sends the string "null" when logged out.
    assert "username" not in (await client.get("", headers={"api_key": "null"})).json()


@pytest.mark.parametrize(
    ("method", "path", "status"),
    [
        ("GET", "nowhere", 404),
        ("GET", "runs/r1/nowhere", 404),
        ("DELETE", "users", 405),
        ("PATCH", "runs/r1", 405),
    ],
)
async def test_unknown_routes_and_methods_answer_json(
    client: httpx.AsyncClient, method: str, path: str, status: int
) -> None:
    r = await client.request(method, path)
    assert r.status_code == status
    assert r.headers["content-type"] == "application/json"
    assert isinstance(r.json()["message"], str)


@pytest.mark.parametrize(
    "content",
    [b"not json", b"[1, 2]", b'{"username": "a"}', b'{"username": 1, "password": "x"}'],
)
async def test_bad_bodies_are_400_with_a_message(client: httpx.AsyncClient, content: bytes) -> None:
    r = await client.post(
        "users/register", content=content, headers={"content-type": "application/json"}
    )
    assert r.status_code == 400
    assert r.json()["message"].startswith("invalid request")


async def test_openapi_document_is_3_1_with_every_route(client: httpx.AsyncClient) -> None:
    r = await client.get("openapi.json")
    assert r.status_code == 200
    doc = r.json()
    assert doc["openapi"].startswith("3.1")
    paths = {p.removeprefix(API_PATH) for p in doc["paths"]}
    assert "/runs/{run_id}/logs" in paths and "/groups" in paths and "/" in paths
    run = doc["paths"][f"{API_PATH}/runs/{{run_id}}"]["get"]
    schema = run["responses"]["200"]["content"]["application/json"]["schema"]
    assert schema == {"$ref": "#/components/schemas/RunHandle"}
    assert "api_key" in str(doc["components"]["securitySchemes"])
    # Invalid requests are 400 with a message, as documented; FastAPI's 422 is gone.
    assert "422" not in run["responses"]
    assert set(run["responses"]) == {"200", "400", "403", "404"}
    board = doc["paths"][f"{API_PATH}/workflows/{{workflow_id}}/leaderboard"]["get"]
    assert [(p["name"], p["in"], p["required"]) for p in board["parameters"]] == [
        ("workflow_id", "path", True),
        ("orderBy", "query", False),
        ("includeAll", "query", False),
    ]
    assert (await client.get("docs")).status_code == 200


@pytest.mark.parametrize("server_env", [{"FLOWSERV_API_PATH": "rob/api/v1/"}])
async def test_api_path_is_configurable(factory: LocalAPIFactory) -> None:
    transport = httpx.ASGITransport(app=create_app(factory))
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
        assert (await client.get("/rob/api/v1/")).json()["url"].endswith("/rob/api/v1")
        assert (await client.get("/rob/api/v1/openapi.json")).status_code == 200
        assert (await client.get("/flowserv/api/v1/")).status_code == 404


async def test_no_cors_headers_by_default(client: httpx.AsyncClient) -> None:
    r = await client.get("workflows", headers={"origin": "http://ui.example"})
    assert "access-control-allow-origin" not in r.headers


@pytest.mark.parametrize("server_env", [{"FLOWSERV_CORS_ORIGINS": "*"}])
async def test_cors_any_origin_allows_the_token_header(client: httpx.AsyncClient) -> None:
    r = await client.options(
        "workflows",
        headers={
            "origin": "http://ui.example",
            "access-control-request-method": "DELETE",
            "access-control-request-headers": "api_key, content-type",
        },
    )
    assert r.status_code == 200
    assert "api_key" in r.headers["access-control-allow-headers"].lower()
    assert "DELETE" in r.headers["access-control-allow-methods"]
    r = await client.get("workflows", headers={"origin": "http://ui.example"})
    assert r.headers["access-control-allow-origin"] == "*"


@pytest.mark.parametrize(
    "server_env", [{"FLOWSERV_CORS_ORIGINS": "http://a.example, http://b.example"}]
)
async def test_cors_listed_origins_only(client: httpx.AsyncClient) -> None:
    ok = await client.get("workflows", headers={"origin": "http://b.example"})
    assert ok.headers["access-control-allow-origin"] == "http://b.example"
    other = await client.get("workflows", headers={"origin": "http://c.example"})
    assert "access-control-allow-origin" not in other.headers


async def test_internal_errors_are_500_without_details(
    factory: LocalAPIFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    from flowserv_async.errors import FlowservError
    from flowserv_async.services.workflows import WorkflowService

    async def fails(self: Any, **kwargs: Any) -> Any:
        raise FlowservError("database error: /srv/secret/flowserv.db is locked")

    async def crashes(self: Any, workflow_id: str) -> Any:
        raise RuntimeError("bug")

    monkeypatch.setattr(WorkflowService, "list_workflows", fails)
    monkeypatch.setattr(WorkflowService, "get_workflow", crashes)
    transport = httpx.ASGITransport(app=create_app(factory), raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url=BASE_URL) as client:
        for path in ("workflows", "workflows/w1"):
            r = await client.get(path)
            assert r.status_code == 500
            assert r.json() == {"message": "internal server error"}
