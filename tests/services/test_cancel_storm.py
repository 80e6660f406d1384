"""Many concurrent cancels: each one completes, every run is CANCELED, no process is left."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import anyio
import anyio.to_thread
import psutil
import pytest
from runs_helpers import install, start, step, step_processes

from flowserv_async import LocalAPIFactory

STORM = 200


def _sleepers() -> list[int]:
    found = []
    for proc in step_processes():
        try:
            if proc.cmdline() == ["sleep", "60"]:
                found.append(proc.pid)
        except psutil.Error:  # it ended while we looked
            continue
    return found


async def wait_for_sleepers(count: int) -> None:
    with anyio.fail_after(120):
        while len(await anyio.to_thread.run_sync(_sleepers)) < count:
            await anyio.sleep(0.2)


@pytest.mark.timeout(300)
async def test_a_storm_of_concurrent_cancels_cancels_every_run(
    make_factory: Callable[..., LocalAPIFactory], tmp_path: Path
) -> None:
    factory = make_factory({"FLOWSERV_AUTH": "open", "FLOWSERV_CANCEL_GRACE": "1"})
    await factory.open()
    _, group_id = await install(factory, tmp_path / "storm", [step("s", "sleep 60")])
    run_ids: list[str] = []

    async def start_one() -> None:
        run_ids.append((await start(factory, group_id))["id"])

    async with anyio.create_task_group() as tg:
        for _ in range(STORM):
            tg.start_soon(start_one)
    await wait_for_sleepers(STORM)

    errors: list[BaseException] = []
    states: dict[str, str] = {}

    async def cancel(run_id: str) -> None:
        try:
            async with factory() as api:
                states[run_id] = (await api.runs().cancel_run(run_id))["state"]
        except Exception as exc:
            errors.append(exc)

    async with anyio.create_task_group() as tg:
        for run_id in run_ids:
            tg.start_soon(cancel, run_id)
    assert errors == []
    assert set(states.values()) == {"CANCELED"}
    # cancel_run returns once the run's processes are gone.
    assert await anyio.to_thread.run_sync(_sleepers) == []
    async with factory() as api:
        listed = await api.runs().list_runs(group_id)
    assert sorted(r["state"] for r in listed["runs"]) == ["CANCELED"] * STORM
