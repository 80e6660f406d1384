"""A crashed engine's runs are failed by the next engine, and its steps die with it."""

from __future__ import annotations

import json
import secrets
import signal
import sys
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import anyio
import psutil
import pytest
from runs_helpers import install, step, wait_for_process

from flowserv_async import DB, LocalAPIFactory

CHILD = """
import json, sys, anyio
from flowserv_async import DB, LocalAPIFactory

async def main(cfg):
    db = DB(cfg["url"], connect_args=cfg["connect_args"])
    env = {"FLOWSERV_API_DIR": cfg["api_dir"], "FLOWSERV_AUTH": "open",
           "FLOWSERV_HEARTBEAT": "0.2", "FLOWSERV_RUN_LEASE": "1",
           "FLOWSERV_CONTAINMENT": cfg["containment"]}
    async with LocalAPIFactory(env=env, db=db) as factory:
        async with factory() as api:
            run = await api.runs().start_run(cfg["group_id"], [])
        print(run["id"], flush=True)
        await anyio.sleep_forever()

anyio.run(main, json.loads(sys.argv[1]))
"""


async def _read_line(proc: anyio.abc.Process) -> str:
    assert proc.stdout is not None
    data = b""
    with anyio.fail_after(20):
        while not data.endswith(b"\n"):
            data += await proc.stdout.receive()
    return data.decode().strip()


async def next_engine(
    make_factory: Callable[..., LocalAPIFactory], tmp_path: Path, command: str
) -> tuple[LocalAPIFactory, str]:
    """The engine that survives (short lease), with a one-step workflow's group."""
    env = {"FLOWSERV_AUTH": "open", "FLOWSERV_HEARTBEAT": "0.2", "FLOWSERV_RUN_LEASE": "1"}
    factory = make_factory(env)
    await factory.open()
    _, group_id = await install(factory, tmp_path / "crash", [step("s", command)])
    return factory, group_id


@asynccontextmanager
async def crashing_service(
    database: DB, basedir: Path, group_id: str, containment: str = "auto"
) -> AsyncIterator[anyio.abc.Process]:
    """A service process on the same database that starts one run and prints its id.

    The process is killed when the block ends, also when the test fails inside it (a
    plain ``async with`` on the process would wait for it forever).
    """
    cfg: dict[str, Any] = {
        "url": database.url.render_as_string(hide_password=False),
        "connect_args": database.connect_args,
        "api_dir": str(basedir),
        "group_id": group_id,
        "containment": containment,
    }
    async with await anyio.open_process([sys.executable, "-c", CHILD, json.dumps(cfg)]) as proc:
        try:
            yield proc
        finally:
            if proc.returncode is None:
                proc.kill()


def _gone(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


async def test_killed_engine_run_becomes_error_and_its_step_dies(
    make_factory: Callable[..., LocalAPIFactory], database: DB, basedir: Path, tmp_path: Path
) -> None:
    factory, group_id = await next_engine(make_factory, tmp_path, "sleep 60")
    async with crashing_service(database, basedir, group_id) as child:
        run_id = await _read_line(child)
        sleeper = await wait_for_process(lambda cmd: cmd == ["sleep", "60"])
        child.send_signal(signal.SIGKILL)
        await child.wait()
    # The step process dies with its engine (PR_SET_PDEATHSIG).
    with anyio.fail_after(5):
        while not await anyio.to_thread.run_sync(_gone, sleeper.pid):
            await anyio.sleep(0.05)
    # This factory's engine notices the missing heartbeats within the lease.
    final = await factory.wait_run(run_id, timeout=10)
    assert final["state"] == "ERROR"
    assert "interrupted" in final["messages"][0]


# A shell step that forks two grandchildren, one of them in a session of its own.
def forking_step() -> tuple[str, list[list[str]]]:
    """A step that forks a sleeper and a ``setsid`` sleeper, and their command lines.

    The durations are drawn per test, so that suites running side by side on one machine
    never count each other's sleepers.
    """
    seconds = 100_000 + secrets.randbelow(10**6)
    command = f"sh -c 'sleep {seconds} & setsid sleep {seconds + 1} & wait'"
    return command, [["sleep", str(seconds)], ["sleep", str(seconds + 1)]]


def _sleepers(cmdlines: list[list[str]]) -> list[psutil.Process]:
    return [p for p in psutil.process_iter(["cmdline"]) if p.info["cmdline"] in cmdlines]


def _alive(procs: list[psutil.Process]) -> list[psutil.Process]:
    alive = []
    for proc in procs:
        try:
            if proc.is_running() and proc.status() != psutil.STATUS_ZOMBIE:
                alive.append(proc)
        except psutil.NoSuchProcess:
            continue
    return alive


@pytest.mark.parametrize("containment", ["auto", "tag"])
async def test_next_engine_kills_what_a_crashed_service_left_and_removes_its_run_folder(
    make_factory: Callable[..., LocalAPIFactory],
    database: DB,
    basedir: Path,
    tmp_path: Path,
    containment: str,
) -> None:
    command, cmdlines = forking_step()
    factory, group_id = await next_engine(make_factory, tmp_path, command)
    async with crashing_service(database, basedir, group_id, containment) as child:
        run_id = await _read_line(child)
        with anyio.fail_after(20):
            while len(sleepers := await anyio.to_thread.run_sync(_sleepers, cmdlines)) < 2:
                await anyio.sleep(0.05)
        rundir = anyio.Path(basedir, "tmp", "runs", run_id)
        assert await rundir.is_dir()
        child.send_signal(signal.SIGKILL)
        await child.wait()
    final = await factory.wait_run(run_id, timeout=20)
    assert final["state"] == "ERROR"
    # The sweep that failed the run goes on to kill its processes and remove its folder.
    with anyio.fail_after(20):
        while await anyio.to_thread.run_sync(_alive, sleepers) or await rundir.exists():
            await anyio.sleep(0.05)


async def test_runs_of_a_live_engine_are_not_failed(
    make_factory: Callable[..., LocalAPIFactory], tmp_path: Path
) -> None:
    env = {"FLOWSERV_AUTH": "open", "FLOWSERV_HEARTBEAT": "0.1", "FLOWSERV_RUN_LEASE": "0.5"}
    first = make_factory(env)
    await first.open()
    _, group_id = await install(first, tmp_path / "live", [step("s", "sleep 2")])
    async with first() as api:
        run = await api.runs().start_run(group_id, [])
    second = make_factory(env)
    await second.open()
    await anyio.sleep(1.2)
    async with second() as api:
        assert (await api.runs().get_run(run["id"]))["state"] == "RUNNING"
    assert (await first.wait_run(run["id"], timeout=10))["state"] == "SUCCESS"
