"""Listening on a PostgreSQL notification channel, connected again whenever it is lost.

The event hub and the database run queue both keep one connection of their own in
``LISTEN`` for as long as they are open. A connection the server drops (restart,
``pg_terminate_backend``, a network cut) ends with asyncpg's termination callback and is
discarded from the pool (it would be handed out again, dead); the listener then connects
again after :data:`RELISTEN_DELAY` seconds, and the owner looks up what it may have
missed while nobody listened (its ``listening`` block is entered again).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from contextlib import AbstractAsyncContextManager
from typing import Any, NoReturn

import anyio
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

logger = logging.getLogger(__name__)

#: Seconds between a lost listening connection and the next attempt.
RELISTEN_DELAY = 1.0

Listening = Callable[[AsyncConnection], AbstractAsyncContextManager[object]]


async def listen_forever(
    engine: AsyncEngine,
    channel: str,
    on_notify: Callable[[str], None],
    listening: Listening,
    what: str,
) -> NoReturn:
    """Listen on ``channel`` until cancelled; call ``on_notify(payload)`` per notification.

    Args:
        engine: An engine of PostgreSQL with the asyncpg driver.
        channel: The channel's name.
        on_notify: Called in the event loop with each notification's payload.
        listening: Entered with the listening connection (in autocommit) once the
            listener is in place, and exited when the connection is lost or the
            listener is cancelled. Notifications sent before it was entered were
            missed: it should look for what they would have told.
        what: What is listened for, in the log message of a failure.

    """
    while True:
        try:
            await _listen_once(engine, channel, on_notify, listening)
        except Exception:
            logger.exception("listening for %s on PostgreSQL failed; listening again", what)
        await anyio.sleep(RELISTEN_DELAY)


async def _listen_once(
    engine: AsyncEngine, channel: str, on_notify: Callable[[str], None], listening: Listening
) -> None:
    """Listen on one connection until the server drops it."""
    lost = anyio.Event()

    def notified(connection: Any, pid: int, channel: str, payload: str) -> None:
        on_notify(payload)

    def on_lost(*args: Any) -> None:
        lost.set()

    async with engine.connect() as pooled:
        conn = await pooled.execution_options(isolation_level="AUTOCOMMIT")
        raw = (await conn.get_raw_connection()).driver_connection
        assert raw is not None, "a connection of the asyncpg driver"
        raw.add_termination_listener(on_lost)
        try:
            await raw.add_listener(channel, notified)
            try:
                async with listening(conn):
                    await lost.wait()
            finally:
                with anyio.move_on_after(RELISTEN_DELAY, shield=True):
                    if not raw.is_closed():
                        await raw.remove_listener(channel, notified)
        finally:
            raw.remove_termination_listener(on_lost)
            if lost.is_set() or raw.is_closed():
                # Back in the pool it would be handed out again, dead (no pre-ping).
                with anyio.CancelScope(shield=True):
                    await conn.invalidate()
