"""Webhooks against a local HTTP receiver on 127.0.0.1 (FLOWSERV_WEBHOOKS)."""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import anyio
import pytest
from anyio.abc import SocketStream
from runs_helpers import PY, install, start, step

from flowserv_async import LocalAPIFactory
from flowserv_async.errors import InvalidConfigurationError

SECRET = "s3cret"


@dataclass
class Receiver:
    """A minimal HTTP/1.1 server: records each POST, answers with scripted statuses."""

    url: str = ""
    statuses: list[int] = field(default_factory=list)
    requests: list[tuple[dict[str, str], bytes]] = field(default_factory=list)
    changed: anyio.Event = field(default_factory=anyio.Event)

    async def serve(self, client: SocketStream) -> None:
        async with client:
            buffer = b""
            while True:
                while b"\r\n\r\n" not in buffer:
                    try:
                        buffer += await client.receive()
                    except (anyio.EndOfStream, anyio.BrokenResourceError):
                        return
                head, buffer = buffer.split(b"\r\n\r\n", 1)
                lines = head.decode().split("\r\n")
                headers = {k.lower(): v.strip() for k, v in (x.split(":", 1) for x in lines[1:])}
                size = int(headers.get("content-length", "0"))
                while len(buffer) < size:
                    buffer += await client.receive()
                body, buffer = buffer[:size], buffer[size:]
                self.requests.append((headers, body))
                status = self.statuses.pop(0) if self.statuses else 200
                await client.send(f"HTTP/1.1 {status} X\r\ncontent-length: 0\r\n\r\n".encode())
                self.changed.set()
                self.changed = anyio.Event()

    def bodies(self) -> list[dict[str, Any]]:
        return [json.loads(body) for _, body in self.requests]

    async def wait_for(self, check: Callable[[], bool]) -> None:
        # The client counts a delivery after the receiver answered: look again shortly
        # after each request, and now and then.
        with anyio.fail_after(30):
            while not check():
                with anyio.move_on_after(0.05):
                    await self.changed.wait()


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    listener = await anyio.create_tcp_listener(local_host="127.0.0.1", local_port=0)
    port = listener.extra(anyio.abc.SocketAttribute.local_port)
    found = Receiver(url=f"http://127.0.0.1:{port}/hook")
    async with listener, anyio.create_task_group() as tg:
        tg.start_soon(listener.serve, found.serve)
        yield found
        tg.cancel_scope.cancel()


async def hooked_factory(
    make_factory: Callable[..., LocalAPIFactory], folder: Path, targets: list[dict[str, Any]]
) -> LocalAPIFactory:
    await anyio.Path(folder).mkdir(parents=True, exist_ok=True)
    config = anyio.Path(folder, "hooks.json")
    await config.write_text(json.dumps(targets))
    factory = make_factory({"FLOWSERV_AUTH": "open", "FLOWSERV_WEBHOOKS": str(config)})
    await factory.open()
    return factory


async def run_once(factory: LocalAPIFactory, folder: Path) -> str:
    _, group_id = await install(factory, folder, [step("s", f"{PY} -c \"print('hi')\"")])
    run = await start(factory, group_id)
    await factory.wait_run(run["id"], timeout=30)
    return str(run["id"])


async def test_signed_events_reach_each_target_in_order(
    make_factory: Callable[..., LocalAPIFactory], receiver: Receiver, tmp_path: Path
) -> None:
    targets = [
        {"url": receiver.url, "events": ["*"], "secret": SECRET},
        {"url": receiver.url + "?states", "events": ["run.state"], "secret": "other"},
    ]
    factory = await hooked_factory(make_factory, tmp_path, targets)
    run_id = await run_once(factory, tmp_path / "wf")

    def all_arrived() -> bool:
        docs = receiver.bodies()
        ends = [d for d in docs if d["type"] == "run.state" and d["data"]["state"] == "SUCCESS"]
        return len(ends) == 2 and any(d["type"] == "run.log" for d in docs)

    await receiver.wait_for(all_arrived)
    by_target: dict[str, list[dict[str, Any]]] = {SECRET: [], "other": []}
    for headers, body in receiver.requests:
        for key in (SECRET, "other"):
            digest = hmac.new(key.encode(), body, hashlib.sha256).hexdigest()
            if headers["x-flowserv-signature"] == f"sha256={digest}":
                secret = key
                break
        else:
            raise AssertionError(f"no secret signs {body!r}")
        doc = json.loads(body)
        assert headers["x-flowserv-event"] == doc["type"]
        assert headers["x-flowserv-delivery"] == str(doc["id"])
        by_target[secret].append(doc)
    everything, states = by_target[SECRET], by_target["other"]
    assert [d["type"] for d in states] == ["run.state", "run.state"]
    assert [d["data"]["state"] for d in states] == ["RUNNING", "SUCCESS"]
    assert [d["id"] for d in everything] == sorted(d["id"] for d in everything)
    kinds = [d["type"] for d in everything if d["runId"] == run_id]
    assert [k for k in kinds if k != "run.log"] == ["run.created", "run.state", "run.state"]
    assert "run.log" in kinds
    assert [s.failed for s in factory.webhooks] == [0, 0]


async def test_server_errors_are_retried_in_order(
    make_factory: Callable[..., LocalAPIFactory], receiver: Receiver, tmp_path: Path
) -> None:
    receiver.statuses = [500, 503]
    targets = [{"url": receiver.url, "events": ["run.state"], "secret": SECRET, "backoff": 0.01}]
    factory = await hooked_factory(make_factory, tmp_path, targets)
    await run_once(factory, tmp_path / "wf")
    await receiver.wait_for(lambda: factory.webhooks[0].delivered == 2)
    docs = receiver.bodies()
    # The first event was posted three times, then the second once: order is kept.
    assert [d["data"]["state"] for d in docs] == ["RUNNING", "RUNNING", "RUNNING", "SUCCESS"]
    stats = factory.webhooks[0]
    assert (stats.delivered, stats.retried, stats.failed) == (2, 2, 0)


async def test_a_target_gives_up_after_its_attempts_and_logs_it(
    make_factory: Callable[..., LocalAPIFactory],
    receiver: Receiver,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    receiver.statuses = [500, 500, 500]
    targets = [
        {
            "url": receiver.url,
            "events": ["run.state"],
            "secret": SECRET,
            "backoff": 0.01,
            "attempts": 3,
        }
    ]
    factory = await hooked_factory(make_factory, tmp_path, targets)
    with caplog.at_level(logging.ERROR, logger="flowserv_async.events.webhooks"):
        await run_once(factory, tmp_path / "wf")
        await receiver.wait_for(lambda: factory.webhooks[0].delivered == 1)
    stats = factory.webhooks[0]
    assert (stats.delivered, stats.retried, stats.failed) == (1, 2, 1)
    assert stats.last_error == "HTTP 500"
    assert [d["data"]["state"] for d in receiver.bodies()] == ["RUNNING"] * 3 + ["SUCCESS"]
    [record] = caplog.records
    assert "not delivered: HTTP 500" in record.getMessage()


@pytest.mark.parametrize(
    "targets",
    [
        {"url": "http://x"},
        [{"url": "ftp://x", "events": ["*"], "secret": "s"}],
        [{"url": "http://x", "events": ["run.nothing"], "secret": "s"}],
        [{"url": "http://x", "events": ["*"], "secret": ""}],
        [{"url": "http://x", "events": ["*"], "secret": "s", "attempts": 0}],
        [{"url": "http://x", "events": ["*"], "secret": "s", "colour": "red"}],
    ],
)
async def test_bad_webhook_files_keep_the_factory_closed(
    make_factory: Callable[..., LocalAPIFactory], tmp_path: Path, targets: Any
) -> None:
    with pytest.raises(InvalidConfigurationError, match="FLOWSERV_WEBHOOKS"):
        await hooked_factory(make_factory, tmp_path, targets)


async def test_a_client_error_is_not_retried(
    make_factory: Callable[..., LocalAPIFactory],
    receiver: Receiver,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    receiver.statuses = [404]
    targets = [{"url": receiver.url, "events": ["run.state"], "secret": SECRET, "backoff": 0.01}]
    factory = await hooked_factory(make_factory, tmp_path, targets)
    with caplog.at_level(logging.ERROR, logger="flowserv_async.events.webhooks"):
        await run_once(factory, tmp_path / "wf")
        await receiver.wait_for(lambda: factory.webhooks[0].delivered == 1)
    stats = factory.webhooks[0]
    assert (stats.delivered, stats.retried, stats.failed) == (1, 0, 1)
    assert [d["data"]["state"] for d in receiver.bodies()] == ["RUNNING", "SUCCESS"]
    assert "not delivered: HTTP 404" in caplog.records[0].getMessage()
