"""The bounded in-memory log of one run: stdout/stderr lines of its steps.

Entries are numbered from 0 in the order they arrive (``pos``). The log keeps the tail:
when the entries exceed the byte or line budget, the oldest ones are dropped, and
readers that ask for a dropped range get one ``engine`` note saying how many lines were
dropped in its place. A controller persists the log by calling :meth:`RunLog.drain`
whenever :meth:`RunLog.wait` wakes it up (or its ``on_pending`` callback tells it of a
first line since the last drain), and keeps no line older than the batch's ``first``:
the stored log is then bounded by the same budget.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import anyio

#: Default budget of one run log, in bytes of UTF-8 text.
DEFAULT_MAX_BYTES = 1 << 20
#: Default budget of one run log, in lines.
DEFAULT_MAX_LINES = 20_000
#: Stream label of notes written by the engine itself.
ENGINE_STREAM = "engine"


@dataclass(frozen=True, slots=True)
class LogEntry:
    """One line of output of a step."""

    pos: int
    step: str
    stream: str
    text: str

    def to_dict(self) -> dict[str, Any]:
        """The JSON-ready form ``{pos, step, stream, text}``."""
        return {"pos": self.pos, "step": self.step, "stream": self.stream, "text": self.text}


@dataclass(frozen=True, slots=True)
class LogPage:
    """The lines of a log from some offset on, and the offset to continue from."""

    lines: list[LogEntry]
    next: int

    def to_dict(self) -> dict[str, Any]:
        """The JSON-ready form ``{lines, next}``."""
        return {"lines": [entry.to_dict() for entry in self.lines], "next": self.next}


@dataclass(frozen=True, slots=True)
class LogBatch:
    """Lines to persist, and the position of the oldest line still kept.

    A store that drops its lines older than ``first`` keeps the same tail as the log.
    """

    lines: list[LogEntry]
    first: int


class RunLog:
    """Lines captured while a run's steps execute, bounded to a tail.

    Not thread-safe: append from the event loop only.
    """

    def __init__(
        self,
        *,
        max_bytes: int = DEFAULT_MAX_BYTES,
        max_lines: int = DEFAULT_MAX_LINES,
        on_pending: Callable[[], None] | None = None,
    ) -> None:
        """Create an empty log.

        Args:
            max_bytes: Budget in bytes of UTF-8 text.
            max_lines: Budget in lines.
            on_pending: Called (in the event loop) when a line is appended to a log that
                had nothing left to drain.

        """
        if max_bytes < 1 or max_lines < 1:
            raise ValueError(f"log budget must be positive, got {max_bytes} B, {max_lines} lines")
        self.max_bytes = max_bytes
        self.max_lines = max_lines
        self._entries: deque[tuple[LogEntry, int]] = deque()
        self._size = 0
        self._next = 0
        self._drained = 0
        self._closed = False
        self._on_pending = on_pending
        # Created by the first waiter: an anyio Event needs a running event loop.
        self._changed: anyio.Event | None = None

    @property
    def next(self) -> int:
        """Position the next appended line will get."""
        return self._next

    @property
    def first(self) -> int:
        """Position of the oldest line still kept."""
        return self._entries[0][0].pos if self._entries else self._next

    @property
    def dropped(self) -> int:
        """How many lines were dropped to stay within the budget."""
        return self.first

    @property
    def closed(self) -> bool:
        """True once :meth:`close` was called."""
        return self._closed

    def append(self, step: str, stream: str, text: str) -> LogEntry:
        """Add a line and wake the waiters; drop the oldest lines when over budget."""
        if self._closed:
            raise RuntimeError("run log is closed")
        entry = LogEntry(pos=self._next, step=step, stream=stream, text=text)
        size = len(text.encode("utf-8", "replace")) + 1
        self._entries.append((entry, size))
        self._size += size
        self._next += 1
        if self._on_pending is not None and self._next == self._drained + 1:
            self._on_pending()
        # Keep at least the newest line, even when it alone is over the byte budget.
        while len(self._entries) > 1 and (
            self._size > self.max_bytes or len(self._entries) > self.max_lines
        ):
            _, dropped_size = self._entries.popleft()
            self._size -= dropped_size
        self._notify()
        return entry

    def lines(self, offset: int = 0) -> LogPage:
        """The kept lines with ``pos >= offset``, preceded by a note when some were dropped."""
        offset = max(offset, 0)
        found = [entry for entry, _ in self._entries if entry.pos >= offset]
        if offset < self.first:
            found.insert(0, self._note(offset))
        return LogPage(lines=found, next=max(offset, self._next))

    def drain(self) -> LogBatch:
        """The kept lines not drained before (for persisting), and the oldest kept."""
        offset = max(self._drained, self.first)
        found = [entry for entry, _ in self._entries if entry.pos >= offset]
        self._drained = self._next
        return LogBatch(found, self.first)

    async def wait(self, offset: int) -> None:
        """Return once a line with ``pos >= offset`` exists or the log is closed."""
        while self._next <= offset and not self._closed:
            if self._changed is None or self._changed.is_set():
                self._changed = anyio.Event()
            await self._changed.wait()

    def close(self) -> None:
        """Mark the log complete: no more appends, waiters return."""
        self._closed = True
        self._notify()

    def _notify(self) -> None:
        if self._changed is not None:
            self._changed.set()

    def _note(self, offset: int) -> LogEntry:
        text = dropped_note(self.first - offset, self.max_lines, self.max_bytes)
        return LogEntry(pos=self.first - 1, step="", stream=ENGINE_STREAM, text=text)


def dropped_note(count: int, max_lines: int, max_bytes: int) -> str:
    """The text that stands for ``count`` lines dropped from a log's head."""
    return (
        f"[{count} earlier line(s) dropped: the run log keeps the last "
        f"{max_lines} lines / {max_bytes} bytes]"
    )
