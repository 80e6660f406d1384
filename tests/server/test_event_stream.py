"""``GET runs/{runId}/events``: Server-Sent Events against real uvicorn servers."""

from __future__ import annotations

import json
import socket
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest
import uvicorn
from runs_helpers import PY, step
from serverutil import API_PATH, LiveServer, Login, read_sse, start_run

from flowserv_async import LocalAPIFactory
from flowserv_async.events import hub_of
from flowserv_async.server import create_app


@pytest.fixture
async def live(live_server: LiveServer) -> AsyncIterator[httpx.AsyncClient]:
    """A client of the live server."""
    async with httpx.AsyncClient(base_url=live_server.url + "/", timeout=60) as client:
        yield client


async def member(client: httpx.AsyncClient, name: str) -> tuple[str, dict[str, str]]:
    """A new user's group of the talker workflow, and the user's headers."""
    await client.post("users/register", json={"username": name, "password": "pw"})
    r = await client.post("users/login", json={"username": name, "password": "pw"})
    headers = {"api_key": r.json()["token"]}
    workflows = (await client.get("workflows")).json()["workflows"]
    workflow_id = next(w["id"] for w in workflows if w["name"] == "talker")
    r = await client.post(f"workflows/{workflow_id}/groups", json={"name": name}, headers=headers)
    return r.json()["id"], headers


async def stream(
    client: httpx.AsyncClient, run_id: str, headers: dict[str, str]
) -> list[dict[str, Any]]:
    """The events of a stream until the server ends it; checks the SSE fields."""
    async with client.stream("GET", f"runs/{run_id}/events", headers=headers) as r:
        assert r.status_code == 200
        assert r.headers["content-type"].startswith("text/event-stream")
        events = await read_sse(r)
    docs = [json.loads(e["data"]) for e in events]
    assert [e["id"] for e in events] == [str(d["id"]) for d in docs]
    assert [e["event"] for e in events] == [d["type"] for d in docs]
    assert {d["runId"] for d in docs} == {run_id}
    return docs


async def test_event_stream_follows_a_run_until_its_final_state(live: httpx.AsyncClient) -> None:
    group_id, headers = await member(live, "follower")
    run_id = await start_run(live, group_id, headers)
    docs = await stream(live, run_id, headers)
    ids = [d["id"] for d in docs]
    assert ids == sorted(set(ids))
    assert docs[0]["type"] == "run.created"
    states = [d["data"]["state"] for d in docs if d["type"] == "run.state"]
    assert states == ["RUNNING", "SUCCESS"]
    assert docs[-1]["type"] == "run.state"
    lines = [line for d in docs if d["type"] == "run.log" for line in d["data"]["lines"]]
    assert [line["pos"] for line in lines] == list(range(len(lines)))
    assert [(x["step"], x["text"]) for x in lines] == [
        ("first", "one"),
        ("first", "two"),
        ("second", "three"),
    ]
    r = await live.get(f"runs/{run_id}/logs", headers=headers)
    assert [x["text"] for x in r.json()["lines"]] == [x["text"] for x in lines]


async def test_last_event_id_resumes_exactly_after_it(live: httpx.AsyncClient) -> None:
    group_id, headers = await member(live, "resumer")
    run_id = await start_run(live, group_id, headers)
    # A run that is already final: the whole history, ending with the final state.
    docs = await stream(live, run_id, headers)
    assert docs[-1]["data"]["state"] == "SUCCESS"
    assert len(docs) > 3
    for seen in (0, 2):
        resumed = await stream(live, run_id, {**headers, "last-event-id": str(docs[seen]["id"])})
        assert resumed == docs[seen + 1 :]
    # The client has everything: 204 tells a browser's EventSource not to reconnect.
    r = await live.get(
        f"runs/{run_id}/events", headers={**headers, "last-event-id": str(docs[-1]["id"])}
    )
    assert r.status_code == 204
    assert r.content == b""


async def test_event_stream_errors_are_json_before_the_stream(live: httpx.AsyncClient) -> None:
    group_id, headers = await member(live, "owner")
    _, stranger = await member(live, "stranger")
    run_id = await start_run(live, group_id, headers)
    for request_headers, status in (
        (stranger, 403),
        ({}, 403),
        ({"api_key": "not-a-token"}, 403),
        ({**headers, "last-event-id": "x"}, 400),
        ({**headers, "last-event-id": "-1"}, 400),
    ):
        r = await live.get(f"runs/{run_id}/events", headers=request_headers)
        assert r.status_code == status, r.text
        assert r.headers["content-type"] == "application/json"
        assert r.json()["message"]
    r = await live.get("runs/no-such-run/events", headers=headers)
    assert r.status_code == 404
    assert "no-such-run" in r.json()["message"]


@pytest.fixture
async def served(factory: LocalAPIFactory) -> AsyncIterator[str]:
    """The app on ``factory`` served by uvicorn in this process (its hub is in reach)."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    server = uvicorn.Server(
        uvicorn.Config(create_app(factory), log_level="warning", lifespan="off")
    )
    async with anyio.create_task_group() as tg:
        tg.start_soon(server.serve, [sock])
        while not server.started:
            await anyio.sleep(0.01)
        yield f"http://127.0.0.1:{port}{API_PATH}/"
        server.should_exit = True
    sock.close()


async def test_a_client_that_goes_away_closes_its_stream(
    factory: LocalAPIFactory,
    client: httpx.AsyncClient,
    talker_group: tuple[str, dict[str, str]],
    served: str,
) -> None:
    group_id, headers = talker_group
    hub = hub_of(factory.db, keep=0, poll_interval=0, buffer_size=0)  # the factory's hub
    run_id = await start_run(client, group_id, headers)
    async with httpx.AsyncClient(base_url=served, timeout=60) as live:
        async with live.stream("GET", f"runs/{run_id}/events", headers=headers) as response:
            first = await read_sse(response, count=1)
            assert json.loads(first[0]["data"])["type"] == "run.created"
            assert hub.stream_count == 1
        # The connection is closed: the server notices and closes the event stream.
        with anyio.fail_after(10):
            while hub.stream_count:
                await anyio.sleep(0.02)
    await factory.wait_run(run_id)
    assert hub.stream_count == 0


@pytest.mark.parametrize("server_env", [{"FLOWSERV_EVENTS_KEEP": "3"}])
async def test_an_expired_last_event_id_is_410(
    factory: LocalAPIFactory, client: httpx.AsyncClient, talker_group: tuple[str, dict[str, str]]
) -> None:
    group_id, headers = talker_group
    # Two runs write more than twice the events kept: the first ones are pruned.
    for _ in range(2):
        run_id = await start_run(client, group_id, headers)
        await factory.wait_run(run_id)
    r = await client.get(f"runs/{run_id}/events", headers={**headers, "last-event-id": "1"})
    assert r.status_code == 410
    assert "no longer stored" in r.json()["message"]
    hub = hub_of(factory.db, keep=0, poll_interval=0, buffer_size=0)
    assert hub.stream_count == 0


async def test_a_member_removed_from_the_group_stops_receiving_its_run_events(
    factory: LocalAPIFactory,
    client: httpx.AsyncClient,
    login: Login,
    served: str,
    tmp_path: Path,
) -> None:
    marker = tmp_path / "go"
    folder = tmp_path / "waiter"
    await anyio.Path(folder).mkdir()
    wait = (
        f"import pathlib, time\nwhile not pathlib.Path({str(marker)!r}).exists(): time.sleep(0.05)"
    )
    await anyio.Path(folder, "wait.py").write_text(wait)
    steps = [step("wait", f"{PY} {folder / 'wait.py'}"), step("say", "echo bye")]
    await anyio.Path(folder, "spec.json").write_text(json.dumps({"workflow": {"steps": steps}}))
    async with factory() as api:
        wf = await api.workflows().create_workflow(str(folder), name="w", specfile="spec.json")
    _, alice = await login("alice")
    bob_id, bob = await login("bob")
    r = await client.post(
        f"workflows/{wf['id']}/groups", json={"name": "t", "members": [bob_id]}, headers=alice
    )
    group_id = r.json()["id"]
    run_id = await start_run(client, group_id, alice)
    async with httpx.AsyncClient(base_url=served, timeout=60) as live:
        async with live.stream("GET", f"runs/{run_id}/events", headers=bob) as response:
            # Created, then RUNNING: the step waits for the marker.
            lines = response.aiter_lines()
            before = await read_sse(lines, count=2)
            assert [json.loads(e["data"])["data"]["state"] for e in before] == [
                "PENDING",
                "RUNNING",
            ]
            alice_id = (await client.get("users/whoami", headers=alice)).json()["id"]
            r = await client.put(f"groups/{group_id}", json={"members": [alice_id]}, headers=alice)
            assert r.status_code == 200, r.text
            await anyio.Path(marker).touch()
            # The run goes on (a log line, SUCCESS), but Bob's stream just ends.
            assert await read_sse(lines) == []
        assert (await factory.wait_run(run_id))["state"] == "SUCCESS"
        r = await live.get(
            f"runs/{run_id}/events", headers={**bob, "last-event-id": before[-1]["id"]}
        )
        assert r.status_code == 403
        async with live.stream("GET", f"runs/{run_id}/events", headers=alice) as response:
            seen = [json.loads(e["data"])["type"] for e in await read_sse(response)]
    assert seen == ["run.created", "run.state", "run.log", "run.state"]
    hub = hub_of(factory.db, keep=0, poll_interval=0, buffer_size=0)
    assert hub.stream_count == 0
