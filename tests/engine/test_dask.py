"""The Dask engine on one LocalCluster of 2 worker processes, shared by these tests.

The cluster is the test process's own (its scheduler runs here, its workers are
grandchildren of this process), so the steps' processes are visible with psutil. Only
this module uses it, so it is started once per session; it is module-scoped so that it
is gone before other modules run (its threads would compete with their timing, and the
blocking-call guard of their tests would trip over Dask's own threads).
"""

from __future__ import annotations

import inspect
import multiprocessing.resource_tracker as resource_tracker
import os
import signal
import threading
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import anyio
import dask
import pytest
from blockbuster import BlockBuster
from blocking import blocking_guard
from dbutil import backend_database
from distributed import LocalCluster
from runs_helpers import (
    PY,
    engine_of,
    group_alive,
    install,
    run_hello_world,
    start,
    step,
    step_processes,
    wait_for_process,
)

from flowserv_async import DB, LocalAPIFactory
from flowserv_async.engine.dask import WORKER_DIED, DaskEngine
from flowserv_async.engine.dask.reaper import run_root
from flowserv_async.errors import InvalidConfigurationError


@pytest.fixture
async def database(tmp_path: Path) -> AsyncIterator[DB]:
    """SQLite only: the engine records through the RunStore, tested on both backends elsewhere."""
    async with backend_database("sqlite", tmp_path) as db:
        yield db


@pytest.fixture(autouse=True)
def blockbuster(request: pytest.FixtureRequest) -> Iterator[BlockBuster | None]:
    """Blocking calls made by our code fail the test, as everywhere (see conftest).

    Only those: Dask's client and this LocalCluster's scheduler run event loops of their
    own in threads of this process, where Dask reads /proc and files as it likes.
    """
    if not inspect.iscoroutinefunction(getattr(request.node, "obj", None)):
        yield None
        return
    with blocking_guard("flowserv_async") as bb:
        yield bb


@pytest.fixture(scope="module")
def dask_scheduler() -> Iterator[str]:
    """A LocalCluster of 2 worker processes (2 slots each) that fails a task whose worker dies."""
    with dask.config.set({"distributed.scheduler.allowed-failures": 0}):
        cluster = LocalCluster(
            n_workers=2, threads_per_worker=2, processes=True, dashboard_address=":0"
        )
    try:
        yield cluster.scheduler_address
    finally:
        cluster.close()
        # The worker processes started multiprocessing's resource tracker, a child of
        # this process that would outlive the module: stop it too.
        resource_tracker._resource_tracker._stop()


@pytest.fixture
def open_factory(
    make_factory: Callable[..., LocalAPIFactory], dask_scheduler: str
) -> Callable[..., Any]:
    async def make(**env: str) -> LocalAPIFactory:
        factory = make_factory(
            {
                "FLOWSERV_AUTH": "open",
                "FLOWSERV_CANCEL_GRACE": "1",
                "FLOWSERV_BACKEND_MODULE": "flowserv_async.engine.dask",
                "FLOWSERV_BACKEND_CLASS": "DaskEngine",
                "FLOWSERV_DASK_SCHEDULER": dask_scheduler,
                **env,
            }
        )
        await factory.open()
        return factory

    return make


async def start_long_run(
    factory: LocalAPIFactory, folder: Path, command: str
) -> tuple[dict[str, Any], int]:
    """Start a one-step run of ``command`` and wait until it runs; the run and its pgid."""
    _, group_id = await install(factory, folder, [step("s", command)])
    run = await start(factory, group_id)
    proc = await wait_for_process(lambda cmd: cmd == ["/bin/sh", "-c", command], timeout=30)
    return run, await anyio.to_thread.run_sync(os.getpgid, proc.pid)


async def test_hello_world_runs_on_a_worker(open_factory: Callable[..., Any]) -> None:
    factory = await open_factory()
    done = await run_hello_world(factory)
    async with factory() as api:
        ranking = await api.workflows().get_ranking(done["workflow"])
    assert [entry["run"]["id"] for entry in ranking["ranking"]] == [done["run"]["id"]]


async def test_log_lines_arrive_while_the_step_runs(
    open_factory: Callable[..., Any], tmp_path: Path
) -> None:
    factory = await open_factory()
    marker = tmp_path / "go"
    code = (
        f"import pathlib, time; print('waiting', flush=True); p = pathlib.Path({str(marker)!r})\n"
        "while not p.exists(): time.sleep(0.05)\nprint('done')"
    )
    script = tmp_path / "wait.py"
    await anyio.Path(script).write_text(code)
    _, group_id = await install(factory, tmp_path / "wf", [step("s", f"{PY} {script}")])
    run = await start(factory, group_id)
    with anyio.fail_after(30):
        while True:
            async with factory() as api:
                lines = (await api.runs().get_log(run["id"]))["lines"]
            if lines:
                break
            await anyio.sleep(0.1)
    assert [(line["step"], line["text"]) for line in lines] == [("s", "waiting")]
    await anyio.Path(marker).touch()
    final = await factory.wait_run(run["id"], timeout=30)
    assert final["state"] == "SUCCESS", final.get("messages")
    async with factory() as api:
        lines = (await api.runs().get_log(run["id"]))["lines"]
    assert [line["text"] for line in lines] == ["waiting", "done"]


async def test_cancel_kills_the_step_on_its_worker(
    open_factory: Callable[..., Any], tmp_path: Path
) -> None:
    factory = await open_factory()
    command = "sleep 61 & sleep 61"
    _, group_id = await install(factory, tmp_path / "long", [step("s", command)])
    run = await start(factory, group_id)
    proc = await wait_for_process(lambda cmd: cmd == ["/bin/sh", "-c", command], timeout=30)
    pgid = await anyio.to_thread.run_sync(os.getpgid, proc.pid)
    async with factory() as api:
        handle = await api.runs().cancel_run(run["id"], reason="enough")
        # Every process of the step is gone on the worker when cancel_run returns.
        assert not await anyio.to_thread.run_sync(group_alive, pgid)
    assert handle["state"] == "CANCELED"
    assert handle["messages"] == ["enough"]
    # The slot is free at once: a new run on the same cluster succeeds.
    _, quick = await install(factory, tmp_path / "quick", [step("q", "true")])
    again = await start(factory, quick)
    assert (await factory.wait_run(again["id"], timeout=60))["state"] == "SUCCESS"


async def test_a_killed_worker_fails_its_run(
    open_factory: Callable[..., Any], tmp_path: Path
) -> None:
    factory = await open_factory()
    command = "sleep 62 & sleep 62"
    _, group_id = await install(factory, tmp_path / "doomed", [step("s", command)])
    run = await start(factory, group_id)
    proc = await wait_for_process(lambda cmd: cmd == ["/bin/sh", "-c", command], timeout=30)
    pgid = await anyio.to_thread.run_sync(os.getpgid, proc.pid)
    worker = await anyio.to_thread.run_sync(engine_of, proc)
    # The worker's reaper looks at the worker's steps every 0.2 s: let it see this one.
    await anyio.sleep(1)
    assert await anyio.Path(run_root(worker.pid)).is_dir()
    await anyio.to_thread.run_sync(os.kill, worker.pid, signal.SIGKILL)
    final = await factory.wait_run(run["id"], timeout=60)
    assert final["state"] == "ERROR"
    assert final["messages"] == [WORKER_DIED]
    # Every process of the step dies with its worker, the background sleep too, and the
    # worker's run folders go with them.
    rundirs = anyio.Path(run_root(worker.pid))
    with anyio.fail_after(10):
        while await anyio.to_thread.run_sync(group_alive, pgid) or await rundirs.exists():
            await anyio.sleep(0.05)


async def test_a_run_cancelled_before_a_worker_took_it_never_starts(
    open_factory: Callable[..., Any], tmp_path: Path
) -> None:
    factory = await open_factory()
    # The cluster has 2 workers x 2 slots: four long runs take every slot.
    _, busy_group = await install(factory, tmp_path / "busy", [step("s", "sleep 63")])
    busy = [await start(factory, busy_group) for _ in range(4)]
    with anyio.fail_after(30):
        while len(await anyio.to_thread.run_sync(_sleeps, "63")) < 4:
            await anyio.sleep(0.05)
    _, queued_group = await install(factory, tmp_path / "queued", [step("s", "sleep 64")])
    queued = await start(factory, queued_group)
    async with factory() as api:
        handle = await api.runs().cancel_run(queued["id"])
    assert handle["state"] == "CANCELED"
    for run in busy:
        async with factory() as api:
            await api.runs().cancel_run(run["id"])
    # Its task never ran: no step of it was ever started, and every slot is free again.
    assert await anyio.to_thread.run_sync(_sleeps, "64") == []
    assert await anyio.to_thread.run_sync(_sleeps, "63") == []
    _, quick = await install(factory, tmp_path / "quick", [step("q", "true")])
    again = [await start(factory, quick) for _ in range(4)]
    for run in again:
        assert (await factory.wait_run(run["id"], timeout=60))["state"] == "SUCCESS"


def _sleeps(seconds: str) -> list[int]:
    return [proc.pid for proc in step_processes() if proc.cmdline() == ["sleep", seconds]]


async def test_closing_the_factory_cancels_runs_on_the_workers(
    make_factory: Callable[..., LocalAPIFactory], dask_scheduler: str, tmp_path: Path
) -> None:
    env = {
        "FLOWSERV_AUTH": "open",
        "FLOWSERV_CANCEL_GRACE": "1",
        "FLOWSERV_BACKEND_MODULE": "flowserv_async.engine.dask",
        "FLOWSERV_BACKEND_CLASS": "DaskEngine",
        "FLOWSERV_DASK_SCHEDULER": dask_scheduler,
    }
    factory = make_factory(env)
    await factory.open()
    command = "sleep 65 & sleep 65"
    _, group_id = await install(factory, tmp_path / "long", [step("s", command)])
    run = await start(factory, group_id)
    proc = await wait_for_process(lambda cmd: cmd == ["/bin/sh", "-c", command], timeout=30)
    pgid = await anyio.to_thread.run_sync(os.getpgid, proc.pid)
    await factory.aclose()
    assert not await anyio.to_thread.run_sync(group_alive, pgid)
    async with make_factory({"FLOWSERV_AUTH": "open"})() as api:
        final = await api.runs().get_run(run["id"])
    assert final["state"] == "CANCELED"
    assert final["messages"] == ["the service shut down"]


async def test_without_a_scheduler_the_engine_runs_its_own_cluster(
    make_factory: Callable[..., LocalAPIFactory], tmp_path: Path
) -> None:
    factory = make_factory(
        {
            "FLOWSERV_AUTH": "open",
            "FLOWSERV_BACKEND_MODULE": "flowserv_async.engine.dask",
            "FLOWSERV_BACKEND_CLASS": "DaskEngine",
            "FLOWSERV_DASK_WORKERS": "1",
            "FLOWSERV_DASK_SLOTS": "1",
        }
    )
    before = {proc.pid for proc in await anyio.to_thread.run_sync(step_processes)}
    await factory.open()
    _, group_id = await install(factory, tmp_path / "wf", [step("s", "echo on my own")])
    run = await start(factory, group_id)
    assert (await factory.wait_run(run["id"], timeout=60))["state"] == "SUCCESS"
    async with factory() as api:
        lines = (await api.runs().get_log(run["id"]))["lines"]
    assert [line["text"] for line in lines] == ["on my own"]
    await factory.aclose()
    # Its worker processes are gone with it.
    with anyio.fail_after(30):
        while {p.pid for p in await anyio.to_thread.run_sync(step_processes)} - before:
            await anyio.sleep(0.1)


async def test_an_unreachable_scheduler_is_a_configuration_error(
    make_factory: Callable[..., LocalAPIFactory],
) -> None:
    factory = make_factory(
        {
            "FLOWSERV_BACKEND_MODULE": "flowserv_async.engine.dask",
            "FLOWSERV_BACKEND_CLASS": "DaskEngine",
            "FLOWSERV_DASK_SCHEDULER": "tcp://127.0.0.1:9",
        }
    )
    with (
        dask.config.set({"distributed.comm.timeouts.connect": "1s"}),
        pytest.raises(InvalidConfigurationError, match=r"tcp://127\.0\.0\.1:9"),
    ):
        await factory.open()
    assert not factory.is_open


@pytest.mark.parametrize("name", ["FLOWSERV_DASK_WORKERS", "FLOWSERV_DASK_SLOTS"])
@pytest.mark.parametrize("value", ["0", "-1", "many"])
def test_a_bad_cluster_size_is_a_configuration_error(name: str, value: str) -> None:
    with pytest.raises(InvalidConfigurationError, match=name):
        LocalAPIFactory(env={name: value})


async def test_a_run_whose_engine_vanished_is_stopped_on_its_worker(
    open_factory: Callable[..., Any], tmp_path: Path
) -> None:
    factory = await open_factory()
    _, pgid = await start_long_run(factory, tmp_path / "orphan", "sleep 66 & sleep 66")
    # As if the engine's process died: its client leaves, the scheduler drops its tasks.
    engine = factory.engine
    assert isinstance(engine, DaskEngine)
    await anyio.to_thread.run_sync(engine.client.close)
    with anyio.fail_after(30):
        while await anyio.to_thread.run_sync(group_alive, pgid):
            await anyio.sleep(0.05)


async def test_closing_with_a_stuck_client_is_bounded_and_still_stops_the_run(
    open_factory: Callable[..., Any],
    make_factory: Callable[..., LocalAPIFactory],
    tmp_path: Path,
) -> None:
    factory = await open_factory()
    run, pgid = await start_long_run(factory, tmp_path / "stuck", "sleep 67 & sleep 67")
    engine = factory.engine
    assert isinstance(engine, DaskEngine)
    client = engine.client
    # The client's IO loop hangs (a broken client): no call into it ever completes.
    # The watchdog only keeps a regression from hanging the suite: closing must end
    # while the loop is still stuck.
    release = threading.Event()
    watchdog = threading.Timer(120, release.set)
    watchdog.start()
    client.loop.add_callback(release.wait)
    try:
        await factory.aclose()
        assert not release.is_set()
    finally:
        release.set()
        watchdog.cancel()
    # The loop goes on: the client's close completes and the scheduler drops its task,
    # so the run stops on its worker.
    await anyio.to_thread.run_sync(client.close)
    with anyio.fail_after(30):
        while await anyio.to_thread.run_sync(group_alive, pgid):
            await anyio.sleep(0.05)
    async with make_factory({"FLOWSERV_AUTH": "open"})() as api:
        final = await api.runs().get_run(run["id"])
    assert final["state"] == "CANCELED"
    assert final["messages"] == ["the service shut down"]
