"""Fan-out of stored events to the consumers of one process.

One :class:`EventHub` per database reads new events from the store once and offers
each to every open :class:`EventStream`. It is woken by commits of this process, by
PostgreSQL notifications from other processes and, on SQLite, by a look at the store
every ``FLOWSERV_EVENTS_POLL`` seconds while some stream is open. A stream keeps at most
``FLOWSERV_EVENTS_BUFFER`` events; one that falls further behind drops its buffer and
reads on from the store at its own pace, so the engine and the other consumers never
wait for it.
"""

from __future__ import annotations

import asyncio
import logging
import weakref
from collections import deque
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from types import TracebackType
from typing import Protocol

import anyio
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession

from flowserv_async.db import DB
from flowserv_async.db.listen import listen_forever
from flowserv_async.errors import EventsExpiredError, FlowservError, UnauthorizedAccessError
from flowserv_async.events.model import Event, EventFilter
from flowserv_async.events.store import (
    CHANNEL,
    KEEP_KEY,
    MEMBERS_KEY,
    NOTIFY_KEY,
    id_range,
    read_events,
)

logger = logging.getLogger(__name__)

#: Events read from the store in one query.
PAGE_SIZE = 500
# The longest the hub's own reads and clean-up may take (they run shielded).
_READ_LIMIT = 10.0

#: Seconds an event stream may rely on a group membership it looked up.
MEMBERSHIP_RECHECK = 1.0

# Key of the hub in the database's session factory ``info`` (each session of the
# database also finds its hub's wake-up there).
_HUB_KEY = "flowserv_events_hub"


class EventAccess(Protocol):
    """Authorization of one consumer (see :meth:`LocalAPIFactory.events`)."""

    async def check(self, flt: EventFilter) -> None:
        """Raise unless the consumer may follow the filter's run, group or workflow."""

    async def allows(self, event: Event) -> bool:
        """True when the consumer may see the event.

        Group membership may be remembered, but not past a change of it committed in
        this process (:attr:`EventHub.members_version`) nor longer than
        :data:`MEMBERSHIP_RECHECK` seconds (changes made by other processes).
        """


def hub_of(db: DB, *, keep: int, poll_interval: float, buffer_size: int) -> EventHub:
    """The hub of a database (one per database, shared by the factories that use it)."""
    info = db.session_factory.kw.get("info") or {}
    hub = info.get(_HUB_KEY)
    if hub is None:
        hub = EventHub(db, keep=keep, poll_interval=poll_interval, buffer_size=buffer_size)
    assert isinstance(hub, EventHub)
    return hub


class EventHub:
    """Reads new events once and offers them to the open streams of this process.

    Opened and closed by every factory that uses the database (reference counted); the
    reading task runs while at least one has it open.
    """

    def __init__(self, db: DB, *, keep: int, poll_interval: float, buffer_size: int) -> None:
        self.db = db
        self.poll_interval = poll_interval
        self.buffer_size = buffer_size
        self._streams: weakref.WeakSet[EventStream] = weakref.WeakSet()
        self._last = 0
        self._wake = anyio.Event()
        self._users = 0
        self._stop: anyio.Event | None = None
        self._supervisor: asyncio.Task[None] | None = None
        self._reader: AsyncConnection | None = None
        self._reader_lock = anyio.Lock()
        self._members_version = 0
        # Sessions of this database wake the hub when they commit events, and tell it
        # when they commit a change of group membership.
        info = dict(db.session_factory.kw.get("info") or {})
        info.update(
            {
                NOTIFY_KEY: self.notify,
                MEMBERS_KEY: self._members_changed,
                KEEP_KEY: keep,
                _HUB_KEY: self,
            }
        )
        db.session_factory.configure(info=info)

    @property
    def is_open(self) -> bool:
        """True while some factory has the hub open."""
        return self._users > 0

    @property
    def stream_count(self) -> int:
        """The streams of this process that are open (entered and not yet closed)."""
        return len(self._streams)

    async def open(self) -> None:
        """Start reading (for the first user)."""
        self._users += 1
        if self._users > 1:
            return
        async with self.db.session() as session:
            self._last = (await id_range(session))[1]
        self._wake = anyio.Event()
        self._stop = anyio.Event()
        ready = anyio.Event()
        # Like the engine's: the one task outside a task group; aclose() awaits it.
        self._supervisor = asyncio.get_running_loop().create_task(self._supervise(ready))
        await ready.wait()

    async def aclose(self) -> None:
        """Stop reading (for the last user); open streams then fail on their next read."""
        self._users -= 1
        if self._users > 0:
            return
        for stream in list(self._streams):
            stream._hub_closed()
        if self._stop is not None:
            self._stop.set()
        if self._supervisor is not None:
            with anyio.CancelScope(shield=True):
                await self._supervisor
            self._supervisor = None

    @property
    def members_version(self) -> int:
        """Counts the membership changes committed in this process (see EventAccess)."""
        return self._members_version

    def notify(self, last: int | None = None) -> None:
        """New events were committed (called in the event loop).

        ``last`` is the largest new id, given by commits of this process (which wrote to
        this database's table). With no stream open there is then nothing to read: the
        hub only skips ahead (a stream that opens later takes its own position).
        """
        if last is not None and not self._streams:
            self._last = max(self._last, last)
            return
        self._wake.set()

    def _members_changed(self) -> None:
        self._members_version += 1

    def stream(
        self, flt: EventFilter, after: int | None = None, access: EventAccess | None = None
    ) -> EventStream:
        """A stream of the events that match ``flt`` (see :class:`EventStream`)."""
        return EventStream(self, flt, after, access)

    async def _supervise(self, ready: anyio.Event) -> None:
        assert self._stop is not None
        async with anyio.create_task_group() as tg:
            tg.start_soon(self._pump)
            if self.db.is_sqlite:
                tg.start_soon(self._poll)
            else:
                tg.start_soon(
                    listen_forever, self.db.engine, CHANNEL, self._notified, self._read_on, "events"
                )
            ready.set()
            await self._stop.wait()
            tg.cancel_scope.cancel()

    async def _pump(self) -> None:
        while True:
            await self._wake.wait()
            self._wake = anyio.Event()
            try:
                await self._read_new()
            except Exception:
                logger.exception("cannot read new events")
                await anyio.sleep(self.poll_interval)
                self._wake.set()

    async def _read_new(self) -> None:
        # Reads are short; shielded so that closing does not cut a query (and its
        # connection) in half, but bounded so that a stuck one cannot hold up closing.
        with anyio.move_on_after(_READ_LIMIT, shield=True) as scope:
            await self._read_rows()
        if scope.cancelled_caught:
            logger.error("reading new events took over %g s; gave up", _READ_LIMIT)

    @asynccontextmanager
    async def _reading(self) -> AsyncIterator[AsyncSession | AsyncConnection]:
        # On PostgreSQL the listening connection (in autocommit) also reads: one round
        # trip per read, with no wait for a pooled connection while runs hold them.
        if self._reader is not None:
            async with self._reader_lock:
                yield self._reader
        else:
            async with self.db.session() as session:
                yield session

    async def _read_rows(self) -> None:
        if not self._streams:
            async with self._reading() as conn:
                top = (await id_range(conn))[1]
            if not self._streams:
                # Nobody listens: skip ahead instead of reading rows nobody wants.
                self._last = max(self._last, top)
                return
        while True:
            async with self._reading() as conn:
                events = await read_events(conn, self._last, EventFilter(), PAGE_SIZE)
            self._dispatch(events)
            if events:
                self._last = events[-1].id
            if len(events) < PAGE_SIZE:
                return

    def _dispatch(self, events: list[Event]) -> None:
        # Streams with the same filter share the matching (1,000 streams of one
        # workflow filter the page once).
        by_filter: dict[EventFilter, list[EventStream]] = {}
        for stream in list(self._streams):
            by_filter.setdefault(stream.filter, []).append(stream)
        for flt, streams in by_filter.items():
            matching = [e for e in events if flt.matches(e)]
            if matching:
                for stream in streams:
                    stream._offer(matching)

    async def _poll(self) -> None:
        # SQLite has no notifications: commits of other processes are found by looking.
        while True:
            await anyio.sleep(self.poll_interval)
            if self._streams:
                self._wake.set()

    def _notified(self, payload: str) -> None:
        # The payload (an id) is not used: the channel is shared by every schema of the
        # database, so the id may be another event table's.
        self.notify()

    @asynccontextmanager
    async def _read_on(self, conn: AsyncConnection) -> AsyncIterator[None]:
        # While the hub listens, its connection also reads (see _reading).
        self._reader = conn
        # Events committed while nobody listened.
        self._wake.set()
        try:
            yield
        finally:
            with anyio.move_on_after(_READ_LIMIT, shield=True):
                async with self._reader_lock:
                    self._reader = None
            self._reader = None


class EventStream:
    """An async iterator of events, from a position on, with no gap and no duplicate.

    Use it as an async context manager (``async with factory.events() as stream:
    async for event in stream``) so that it is closed when the block ends; iterating
    without one also works and the stream is released when it is dropped. It owns no
    task. Without ``after`` the stream starts with the events committed after it was
    entered; with ``after`` it first reads the stored events after that id.

    Raises (on entering or while iterating):
        EventsExpiredError: events after the position are no longer stored (found on
            entering).
        UnauthorizedAccessError: a stream of one run or group whose consumer is no
            longer a member of the group (the stream is closed).
        FlowservError: the factory closed.

    """

    def __init__(
        self, hub: EventHub, flt: EventFilter, after: int | None, access: EventAccess | None
    ) -> None:
        if after is not None and (not isinstance(after, int) or isinstance(after, bool)):
            raise TypeError(f"after must be an event id (int), got {after!r}")
        self.filter = flt
        self._hub = hub
        self._after = after
        self._access = access
        self._cursor = 0
        self._buffer: deque[Event] = deque()
        self._page: deque[Event] = deque()
        self._lagging = after is not None
        self._wake = anyio.Event()
        self._state = "new"

    @property
    def position(self) -> int:
        """The id of the last event returned (resume from here with ``after=``)."""
        return self._cursor

    async def start(self) -> None:
        """Check access and take the position; done by ``async with`` or the first read.

        Raises:
            EventsExpiredError: ``after`` is older than the events the store keeps.

        """
        if self._state != "new":
            return
        if not self._hub.is_open:
            raise FlowservError("the event stream needs an open API factory")
        if self._access is not None:
            await self._access.check(self.filter)
        # Registered before the position is read: nothing committed meanwhile is missed.
        self._hub._streams.add(self)
        self._state = "open"
        try:
            if self._after is None:
                async with self._hub.db.session() as session:
                    self._cursor = (await id_range(session))[1]
            else:
                self._cursor = max(self._after, 0)
                # The first page is read now: an expired position fails on entering.
                await self._read_page()
        except BaseException:
            self._release("closed")
            raise

    async def aclose(self) -> None:
        """Stop the stream; further reads end the iteration."""
        self._release("closed")

    def _release(self, state: str) -> None:
        self._state = state
        self._hub._streams.discard(self)
        self._buffer.clear()
        self._page.clear()
        self._wake.set()

    def _hub_closed(self) -> None:
        self._release("hub closed")

    async def __aenter__(self) -> EventStream:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    def __aiter__(self) -> EventStream:
        return self

    async def __anext__(self) -> Event:
        if self._state == "new":
            await self.start()
        while True:
            event = await self._next()
            if self._access is None or await self._access.allows(event):
                return event
            if self.filter.run_id is not None or self.filter.group_id is not None:
                # All events of this stream are of one group, and the consumer is no
                # longer its member (or the group is gone): nothing more to show.
                self._release("closed")
                raise UnauthorizedAccessError(
                    f"the events of group '{event.group_id}' are for its members only"
                )

    async def _next(self) -> Event:
        while True:
            if self._state == "closed":
                raise StopAsyncIteration
            if self._state == "hub closed":
                raise FlowservError("the event stream ended: its API factory closed")
            if self._page:
                event = self._page.popleft()
            elif self._lagging:
                await self._read_page()
                continue
            elif self._buffer:
                event = self._buffer.popleft()
            else:
                self._wake = anyio.Event()
                await self._wake.wait()
                continue
            if event.id > self._cursor:
                self._cursor = event.id
                return event

    async def _read_page(self) -> None:
        # Whatever is offered from now on lands in the buffer; the store has the rest.
        self._lagging = False
        self._buffer.clear()
        async with self._hub.db.session() as session:
            events = await read_events(session, self._cursor, self.filter, PAGE_SIZE)
            if self._cursor > 0 and (not events or events[0].id > self._cursor + 1):
                first, _ = await id_range(session)
                if first > self._cursor + 1:
                    raise EventsExpiredError(
                        f"events after id {self._cursor} are no longer stored (the oldest"
                        f" kept is {first}); resume from a newer position"
                    )
        self._page.extend(events)
        if len(events) == PAGE_SIZE:
            self._lagging = True

    def _offer(self, events: list[Event]) -> None:
        """Take new events that match the filter (called by the hub, in id order)."""
        if self._lagging:
            return
        if len(self._buffer) + len(events) > self._hub.buffer_size:
            # Too far behind: read on from the store instead of holding more here.
            self._lagging = True
            self._buffer.clear()
        else:
            self._buffer.extend(events)
        self._wake.set()
