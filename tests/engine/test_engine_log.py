"""The bounded in-memory run log."""

from __future__ import annotations

import anyio
import pytest

from flowserv_async.engine import LogBatch, LogEntry, RunLog


def test_lines_from_offset_and_next() -> None:
    log = RunLog()
    log.append("a", "stdout", "one")
    log.append("a", "stderr", "two")
    log.append("b", "stdout", "three")
    page = log.lines(1)
    assert page.to_dict() == {
        "lines": [
            {"pos": 1, "step": "a", "stream": "stderr", "text": "two"},
            {"pos": 2, "step": "b", "stream": "stdout", "text": "three"},
        ],
        "next": 3,
    }
    assert log.lines(3).lines == []
    assert log.lines(3).next == 3
    assert [e.pos for e in log.lines(-5).lines] == [0, 1, 2]


def test_keeps_the_tail_within_the_line_budget_and_says_so() -> None:
    log = RunLog(max_lines=10)
    for i in range(25):
        log.append("s", "stdout", f"line {i}")
    assert log.dropped == 15
    page = log.lines(0)
    note, *kept = page.lines
    assert note.stream == "engine"
    assert "15 earlier line(s) dropped" in note.text
    assert note.pos == 14
    assert [e.text for e in kept] == [f"line {i}" for i in range(15, 25)]
    assert page.next == 25
    assert [e.pos for e in log.lines(20).lines] == [20, 21, 22, 23, 24]
    assert "5 earlier line(s) dropped" in log.lines(10).lines[0].text


def test_keeps_the_tail_within_the_byte_budget() -> None:
    log = RunLog(max_bytes=1000)
    for i in range(100):
        log.append("s", "stdout", f"{i:03d}" + "x" * 96)  # 99 bytes + newline
    kept = [e for e in log.lines().lines if e.stream == "stdout"]
    assert [e.pos for e in kept] == list(range(90, 100))
    # A single line over the budget is still kept.
    log.append("s", "stdout", "y" * 5000)
    assert [e.text for e in log.lines(100).lines] == ["y" * 5000]


def test_drain_returns_each_kept_line_once_and_the_oldest_kept() -> None:
    log = RunLog(max_lines=3)
    log.append("s", "stdout", "a")
    assert log.drain() == LogBatch([LogEntry(0, "s", "stdout", "a")], first=0)
    assert log.drain() == LogBatch([], first=0)
    for text in "bcdef":
        log.append("s", "stdout", text)
    batch = log.drain()
    # a was drained; b and c were dropped before anyone drained them.
    assert [e.text for e in batch.lines] == ["d", "e", "f"]
    assert batch.first == 3


def test_drained_tail_stays_within_the_byte_budget() -> None:
    log = RunLog(max_bytes=10_000)
    stored: dict[int, str] = {}
    for i in range(1000):
        log.append("s", "stdout", f"{i:04d}" + "x" * 96)
        if i % 7 == 0:
            batch = log.drain()
            stored.update((e.pos, e.text) for e in batch.lines)
            stored = {pos: text for pos, text in stored.items() if pos >= batch.first}
    batch = log.drain()
    stored.update((e.pos, e.text) for e in batch.lines)
    stored = {pos: text for pos, text in stored.items() if pos >= batch.first}
    assert sum(len(t) + 1 for t in stored.values()) <= 10_000
    assert max(stored) == 999
    assert sorted(stored) == list(range(min(stored), 1000))


async def test_wait_wakes_on_new_lines_and_on_close() -> None:
    log = RunLog()
    woke: list[int] = []

    async def reader() -> None:
        await log.wait(0)
        woke.append(log.next)
        await log.wait(5)
        woke.append(-1)

    async with anyio.create_task_group() as tg:
        tg.start_soon(reader)
        await anyio.sleep(0.01)
        assert woke == []
        log.append("s", "stdout", "hello")
        await anyio.sleep(0.01)
        assert woke == [1]
        log.close()
    assert woke == [1, -1]
    assert log.closed
    with pytest.raises(RuntimeError, match="closed"):
        log.append("s", "stdout", "late")


async def test_wait_returns_at_once_when_lines_exist() -> None:
    log = RunLog()
    log.append("s", "stdout", "x")
    with anyio.fail_after(1):
        await log.wait(0)


def test_budget_must_be_positive() -> None:
    with pytest.raises(ValueError, match="positive"):
        RunLog(max_lines=0)
