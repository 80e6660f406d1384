"""The PostgreSQL listener shared by the event hub and the database run queue."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import anyio
import pytest
from dbutil import POSTGRES_URL
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection

from flowserv_async import DB
from flowserv_async.db import listen
from flowserv_async.db.listen import listen_forever


class Listener:
    """Records payloads and how often the listening block was entered and left."""

    def __init__(self) -> None:
        self.payloads: list[str] = []
        self.entered = 0
        self.pids: list[int] = []
        self.left = 0
        self.changed = anyio.Event()

    def notified(self, payload: str) -> None:
        self.payloads.append(payload)
        self._changed()

    @asynccontextmanager
    async def listening(self, conn: AsyncConnection) -> AsyncIterator[None]:
        # The connection given is the listening one, usable for reads.
        self.pids.append((await conn.execute(text("SELECT pg_backend_pid()"))).scalar_one())
        self.entered += 1
        self._changed()
        try:
            yield
        finally:
            self.left += 1

    def _changed(self) -> None:
        self.changed.set()
        self.changed = anyio.Event()

    async def until(self, condition: object) -> None:
        with anyio.fail_after(10):
            while not condition():  # type: ignore[operator]
                await self.changed.wait()


async def notify(admin: DB, channel: str, payload: str) -> None:
    async with admin.engine.begin() as conn:
        await conn.execute(text("SELECT pg_notify(:channel, :payload)"), {
            "channel": channel, "payload": payload
        })  # fmt: skip


async def test_a_lost_connection_is_replaced_and_the_owner_looks_again(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(listen, "RELISTEN_DELAY", 0.05)
    channel = f"test_listen_{uuid.uuid4().hex}"
    db, admin = DB(POSTGRES_URL), DB(POSTGRES_URL)
    seen = Listener()
    try:
        async with anyio.create_task_group() as tg:
            tg.start_soon(listen_forever, db.engine, channel, seen.notified, seen.listening, "x")
            await seen.until(lambda: seen.entered == 1)
            await notify(admin, channel, "one")
            await seen.until(lambda: seen.payloads == ["one"])

            async with admin.engine.connect() as conn:
                await conn.execute(text("SELECT pg_terminate_backend(:pid)"), {"pid": seen.pids[0]})
            await seen.until(lambda: seen.entered == 2)
            assert seen.left == 1
            assert seen.pids[1] != seen.pids[0]
            await notify(admin, channel, "two")
            await seen.until(lambda: seen.payloads == ["one", "two"])
            tg.cancel_scope.cancel()
        # Cancelled: the block was left and the connection went back to the pool.
        assert seen.left == 2
        assert db.engine.pool.checkedout() == 0  # type: ignore[attr-defined]
    finally:
        await db.dispose()
        await admin.dispose()


async def test_a_failing_owner_is_logged_and_listening_starts_again(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(listen, "RELISTEN_DELAY", 0.05)
    channel = f"test_listen_{uuid.uuid4().hex}"
    db, admin = DB(POSTGRES_URL), DB(POSTGRES_URL)
    seen = Listener()
    entered = 0

    @asynccontextmanager
    async def fails_once(conn: AsyncConnection) -> AsyncIterator[None]:
        nonlocal entered
        entered += 1
        if entered == 1:
            raise RuntimeError("the owner failed")
        async with seen.listening(conn):
            yield

    try:
        async with anyio.create_task_group() as tg:
            tg.start_soon(listen_forever, db.engine, channel, seen.notified, fails_once, "tests")
            await seen.until(lambda: seen.entered == 1)
            assert entered == 2
            assert "listening for tests on PostgreSQL failed" in caplog.text
            # The failed attempt's listener was removed: each notification comes once.
            await notify(admin, channel, "after")
            await notify(admin, channel, "end")
            await seen.until(lambda: "end" in seen.payloads)
            assert seen.payloads == ["after", "end"]
            tg.cancel_scope.cancel()
        assert db.engine.pool.checkedout() == 0  # type: ignore[attr-defined]
    finally:
        await db.dispose()
        await admin.dispose()
