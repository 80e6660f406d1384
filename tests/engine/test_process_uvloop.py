"""Step processes under both event loops: the engine's descriptors and everyone else's.

The engine registers three descriptors per step with the loop (the read ends of the
stdout and stderr pipes, and a pidfd). Each is unwatched before it is closed, closed
once, and never touched after: the number can belong to a new file at once (another
step's pipe opened in the spawner threads, a socket, a sentinel's pipe here). uvloop
(the loop uvicorn picks) keeps poll handles of its own for watched descriptors, so these
tests run hundreds of concurrent steps, some cancelled, under it and under asyncio's own
loop, while a sentinel opens, watches and closes descriptors of its own throughout.
"""

from __future__ import annotations

import asyncio
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import anyio
import pytest
from dbutil import backend_database
from runs_helpers import install, start, step

from flowserv_async import LocalAPIFactory
from flowserv_async.engine import RunLog, run_command

pytest.importorskip("uvloop", reason="uvloop comes with the server extra")

pytestmark = pytest.mark.skipif(sys.platform != "linux", reason="reads /proc/self/fd")

STEPS = 256


def _watched_kinds() -> dict[str, str]:
    """The pipes and pidfds this process holds open: number -> what it is."""
    kinds = {}
    for name in os.listdir("/proc/self/fd"):
        try:
            target = os.readlink(f"/proc/self/fd/{name}")
        except OSError:  # the listing's own descriptor, closed by now
            continue
        if target.startswith("pipe:") or "pidfd" in target:
            kinds[name] = target
    return kinds


class Sentinel:
    """Opens pipes of its own while the steps run, and checks that they stay its own.

    Each round: a new pipe (numbers the steps just closed come first), watched with a
    reader callback; one byte written must reach that callback and nothing else, and
    the descriptors must still be the same files when the round closes them.
    """

    def __init__(self) -> None:
        self.rounds = 0
        self.faults: list[str] = []

    async def run(self, stop: anyio.Event) -> None:
        loop = asyncio.get_running_loop()
        while not stop.is_set():
            read, write = os.pipe()
            os.set_blocking(read, False)
            identity = (os.fstat(read).st_ino, os.fstat(write).st_ino)
            got = anyio.Event()
            received: list[bytes] = []

            def on_readable(fd: int = read, got: anyio.Event = got, into: Any = received) -> None:
                try:
                    into.append(os.read(fd, 16))
                except BlockingIOError:  # woken by an event of a file closed before
                    self.faults.append(f"descriptor {fd} was reported readable with no data")
                    return
                got.set()

            loop.add_reader(read, on_readable)
            os.write(write, b"x")
            await got.wait()
            loop.remove_reader(read)
            try:
                if (os.fstat(read).st_ino, os.fstat(write).st_ino) != identity:
                    self.faults.append(f"descriptor {read} or {write} is another file now")
            except OSError as exc:
                self.faults.append(f"descriptor {read} or {write}: {exc}")
            if received != [b"x"]:
                self.faults.append(f"descriptor {read} read {received}")
            os.close(read)
            os.close(write)
            self.rounds += 1


def run_on(loop: str, main: Callable[[], Any]) -> list[dict[str, Any]]:
    """Run ``main`` on ``loop``; return what the loop's exception handler was given."""
    reported: list[dict[str, Any]] = []

    async def wrapper() -> None:
        asyncio.get_running_loop().set_exception_handler(lambda _, ctx: reported.append(ctx))
        await main()

    anyio.run(wrapper, backend_options={"use_uvloop": loop == "uvloop"})
    return reported


@pytest.mark.parametrize("loop", ["asyncio", "uvloop"])
def test_concurrent_and_cancelled_steps_leave_other_descriptors_alone(
    loop: str, tmp_path: Path
) -> None:
    logs = [RunLog() for _ in range(STEPS)]
    codes: dict[int, int] = {}
    sentinel = Sentinel()
    before: dict[str, str] = {}
    after: dict[str, str] = {}

    async def step(i: int) -> None:
        # Every fourth step is cancelled while it runs: its pipes and pidfd are closed
        # by the cleanup, before the process has exited.
        command = "sleep 30" if i % 4 == 3 else f"sh -c 'echo out {i}; echo err {i} >&2'"
        with anyio.move_on_after(0.05 if i % 4 == 3 else 120):
            result = await run_command(
                command, cwd=tmp_path, env=dict(os.environ), log=logs[i], step="s", grace=0.1
            )
            codes[i] = result.returncode

    async def main() -> None:
        await run_command(
            "true", cwd=tmp_path, env=dict(os.environ), log=RunLog(), step="s", grace=0.1
        )
        before.update(_watched_kinds())
        stop = anyio.Event()
        async with anyio.create_task_group() as sentinels:
            sentinels.start_soon(sentinel.run, stop)
            async with anyio.create_task_group() as steps:
                for i in range(STEPS):
                    steps.start_soon(step, i)
            stop.set()
        after.update(_watched_kinds())

    assert run_on(loop, main) == []
    assert sentinel.faults == []
    assert sentinel.rounds > 0
    assert after == before  # every pipe and pidfd of the steps is closed
    for i, log in enumerate(logs):
        lines = [(e.stream, e.text) for e in log.lines().lines]
        if i % 4 == 3:
            assert i not in codes
            assert lines == []
        else:
            assert codes[i] == 0
            assert sorted(lines) == [("stderr", f"err {i}"), ("stdout", f"out {i}")]


def test_hundreds_of_runs_and_cancels_through_the_factory_under_uvloop(tmp_path: Path) -> None:
    # The server's path: runs started and cancelled in sessions of a LocalAPIFactory
    # (database threads, log flusher, events) on uvloop, with a sentinel's descriptors.
    sentinel = Sentinel()
    finals: list[dict[str, Any]] = []
    logs: dict[int, list[str]] = {}

    async def one(factory: LocalAPIFactory, group_id: str, i: int) -> None:
        cancel = i % 4 == 3
        arguments = [{"name": "n", "value": str(i)}, {"name": "d", "value": 30 if cancel else 0}]
        run = await start(factory, group_id, arguments)
        if cancel:
            async with factory() as api:
                await api.runs().cancel_run(run["id"])
        finals.append(await factory.wait_run(run["id"]))
        async with factory() as api:
            log = await api.runs().get_log(run["id"])
        logs[i] = sorted(line["text"] for line in log["lines"])

    async def main() -> None:
        async with backend_database("sqlite", tmp_path) as db:
            env = {"FLOWSERV_API_DIR": str(tmp_path / "api"), "FLOWSERV_AUTH": "open"}
            async with LocalAPIFactory(env=env, db=db) as factory:
                command = "sh -c 'echo out $n; echo err $n >&2; sleep $d'"
                parameters = [
                    {"name": "n", "label": "n", "dtype": "string"},
                    {"name": "d", "label": "d", "dtype": "int"},
                ]
                _, group_id = await install(
                    factory, tmp_path / "wf", [step("s", command)], parameters
                )
                stop = anyio.Event()
                async with anyio.create_task_group() as sentinels:
                    sentinels.start_soon(sentinel.run, stop)
                    async with anyio.create_task_group() as runs:
                        for i in range(STEPS):
                            runs.start_soon(one, factory, group_id, i)
                    stop.set()

    assert run_on("uvloop", main) == []
    assert sentinel.faults == []
    states = sorted(run["state"] for run in finals)
    assert states == ["CANCELED"] * (STEPS // 4) + ["SUCCESS"] * (STEPS - STEPS // 4)
    for i, lines in logs.items():
        if i % 4 != 3:
            assert lines == [f"err {i}", f"out {i}"]
