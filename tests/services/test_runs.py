"""Runs service and asyncio engine through the public API (SPEC 3.5, 4, 6)."""

from __future__ import annotations

import io
import json
import os
import tarfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import anyio
import pytest
from dbutil import make_admin
from runs_helpers import PY, group_alive, install, start, step, wait_for_process
from sqlalchemy import select

from flowserv_async import LocalAPIFactory
from flowserv_async.db.models import Run, RunFile, RunLogLine
from flowserv_async.errors import (
    DuplicateArgumentError,
    InvalidArgumentError,
    InvalidConfigurationError,
    InvalidRunStateError,
    MissingArgumentError,
    UnauthorizedAccessError,
    UnknownFileError,
    UnknownParameterError,
    UnknownRunError,
    UnknownWorkflowGroupError,
)

HELLOWORLD = Path(__file__).parents[2] / "flowserv_async" / "examples" / "helloworld"


@pytest.fixture
def open_factory(make_factory: Callable[..., LocalAPIFactory]) -> Callable[..., Any]:
    async def make(**env: str) -> LocalAPIFactory:
        factory = make_factory({"FLOWSERV_AUTH": "open", "FLOWSERV_CANCEL_GRACE": "1", **env})
        await factory.open()
        return factory

    return make


async def test_hello_world_end_to_end(open_factory: Callable[..., Any]) -> None:
    factory = await open_factory()
    async with factory() as api:
        wf = await api.workflows().create_workflow(source=str(HELLOWORLD))
        group = await api.groups().create_group(wf["id"], "team")
        upload = await api.uploads().upload_file(group["id"], b"Alice\nBob\n", "names.txt")
    arguments = [
        {"name": "names", "value": {"type": "$file", "value": {"fileId": upload["id"]}}},
        {"name": "greeting", "value": "Hi"},
        {"name": "sleeptime", "value": 0},
    ]
    run = await start(factory, group["id"], arguments)
    assert run["state"] in ("PENDING", "RUNNING")
    assert run["arguments"] == arguments
    final = await factory.wait_run(run["id"], timeout=30)
    assert final["state"] == "SUCCESS", final.get("messages")
    assert {"startedAt", "finishedAt", "files"} <= set(final)
    by_name = {f["name"]: f for f in final["files"]}
    # Named by their output keys, as in flowserv's run view.
    assert set(by_name) == {"greetings", "analytics"}
    assert by_name["greetings"]["title"] == "Greetings"
    async with factory() as api:
        handle = await api.runs().get_result_file(run["id"], by_name["greetings"]["id"])
        assert await handle.read() == b"Hi, Alice!\nHi, Bob!\n"
        archive = await api.runs().get_result_archive(run["id"])
        assert archive.name == f"run.{run['id']}.tar.gz"
        assert archive.mime_type == "application/gzip"
        data = await archive.read()
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        assert sorted(tar.getnames()) == ["results/analytics.json", "results/greetings.txt"]
    # The temporary run folder is gone.
    assert not await anyio.Path(factory.settings.api_dir, "tmp", "runs", run["id"]).exists()


async def test_sync_mode_start_run_returns_the_final_state(
    open_factory: Callable[..., Any], tmp_path: Path
) -> None:
    factory = await open_factory(FLOWSERV_ASYNCENGINE="false")
    _, group_id = await install(
        factory,
        tmp_path / "wf",
        [step("s", f"{PY} -c \"open('out.txt','w').write('x')\"")],
        outputs=["out.txt"],
    )
    run = await start(factory, group_id)
    assert run["state"] == "SUCCESS"
    assert [f["name"] for f in run["files"]] == ["out.txt"]


async def test_independent_steps_run_concurrently(
    open_factory: Callable[..., Any], tmp_path: Path
) -> None:
    factory = await open_factory()
    stamp = (
        "import sys,time; s=time.time(); time.sleep(1);"
        " open(sys.argv[1],'w').write(f'{s} {time.time()}')"
    )
    steps = [
        step("a", f'{PY} -c "{stamp}" a.txt', inputs=[], outputs=["a.txt"]),
        step("b", f'{PY} -c "{stamp}" b.txt', inputs=[], outputs=["b.txt"]),
        step("c", f'{PY} -c "{stamp}" c.txt', inputs=["a.txt", "b.txt"], outputs=["c.txt"]),
    ]
    _, group_id = await install(
        factory, tmp_path / "dag", steps, outputs=["a.txt", "b.txt", "c.txt"]
    )
    run = await factory.wait_run((await start(factory, group_id))["id"], timeout=30)
    assert run["state"] == "SUCCESS", run.get("messages")
    times = {}
    async with factory() as api:
        for f in run["files"]:
            handle = await api.runs().get_result_file(run["id"], f["id"])
            start_t, end_t = map(float, (await handle.read()).split())
            times[f["name"]] = (start_t, end_t)
    (a0, a1), (b0, b1), (c0, _) = times["a.txt"], times["b.txt"], times["c.txt"]
    assert a0 < b1 and b0 < a1, "a and b overlap"
    assert c0 >= max(a1, b1), "c starts after both"


async def test_steps_without_files_keep_serial_order(
    open_factory: Callable[..., Any], tmp_path: Path
) -> None:
    factory = await open_factory()
    steps = [
        step("one", f"{PY} -c \"open('log.txt','a').write('1')\""),
        step("two", f"{PY} -c \"open('log.txt','a').write('2')\""),
        step("three", f"{PY} -c \"open('log.txt','a').write('3')\""),
    ]
    _, group_id = await install(factory, tmp_path / "serial", steps, outputs=["log.txt"])
    run = await factory.wait_run((await start(factory, group_id))["id"], timeout=30)
    async with factory() as api:
        handle = await api.runs().get_result_file(run["id"], run["files"][0]["id"])
        assert await handle.read() == b"123"


async def _running_pgid(factory: LocalAPIFactory, run_id: str) -> int:
    proc = await wait_for_process(lambda cmd: cmd == ["/bin/sh", "-c", "sleep 60 & sleep 60"])
    async with factory() as api:
        assert (await api.runs().get_run(run_id))["state"] == "RUNNING"
    return await anyio.to_thread.run_sync(os.getpgid, proc.pid)


async def test_cancel_kills_the_whole_process_group(
    open_factory: Callable[..., Any], tmp_path: Path
) -> None:
    factory = await open_factory()
    _, group_id = await install(factory, tmp_path / "long", [step("s", "sleep 60 & sleep 60")])
    run = await start(factory, group_id)
    pgid = await _running_pgid(factory, run["id"])
    async with factory() as api:
        handle = await api.runs().cancel_run(run["id"], reason="enough")
        # Every process of the run is gone when cancel_run returns.
        assert not await anyio.to_thread.run_sync(group_alive, pgid)
    assert handle["state"] == "CANCELED"
    assert handle["messages"] == ["enough"]
    final = await factory.wait_run(run["id"], timeout=10)
    assert final["state"] == "CANCELED" and final["messages"] == ["enough"]
    with pytest.raises(InvalidRunStateError):
        async with factory() as api:
            await api.runs().cancel_run(run["id"])


async def test_one_session_cancels_several_running_runs(
    open_factory: Callable[..., Any], tmp_path: Path
) -> None:
    factory = await open_factory()
    commands = [f"sleep 6{n} & sleep 6{n}" for n in range(3)]
    runs, pgids = [], []
    for n, command in enumerate(commands):
        _, group_id = await install(factory, tmp_path / f"long{n}", [step("s", command)])
        runs.append((await start(factory, group_id))["id"])
        proc = await wait_for_process(lambda cmd, c=command: cmd == ["/bin/sh", "-c", c])
        pgids.append(await anyio.to_thread.run_sync(os.getpgid, proc.pid))
    async with factory() as api:
        handles = [await api.runs().cancel_run(run_id, reason="enough") for run_id in runs]
        # Each cancel stopped its run (nothing of it runs) and the engine recorded it:
        # this session's own transaction did not hold the engine's write up.
        for run_id, pgid in zip(runs, pgids, strict=True):
            assert not factory.engine.is_active(run_id)
            assert not await anyio.to_thread.run_sync(group_alive, pgid)
        for run_id in runs:
            assert (await api.runs().get_run(run_id))["state"] == "CANCELED"
    assert [(h["state"], h["messages"]) for h in handles] == [("CANCELED", ["enough"])] * 3
    for run_id in runs:
        final = await factory.wait_run(run_id, timeout=10)
        assert (final["state"], final["messages"]) == ("CANCELED", ["enough"])


async def test_a_cancel_stays_recorded_when_the_block_fails_afterwards(
    make_factory: Callable[..., LocalAPIFactory], tmp_path: Path
) -> None:
    # The run executes in another factory's engine (as in another process): this
    # session's CANCELED is the record of the cancel.
    env = {"FLOWSERV_AUTH": "open", "FLOWSERV_CANCEL_GRACE": "1"}
    executing, other = make_factory(env), make_factory(env)
    await executing.open()
    await other.open()
    _, group_id = await install(executing, tmp_path / "long", [step("s", "sleep 60 & sleep 60")])
    run = await start(executing, group_id)
    await _running_pgid(executing, run["id"])
    with pytest.raises(RuntimeError, match="later"):
        async with other() as api:
            assert (await api.runs().cancel_run(run["id"], reason="enough"))["state"] == "CANCELED"
            raise RuntimeError("a later failure of the block")
    async with other() as api:
        final = await api.runs().get_run(run["id"])
    assert (final["state"], final.get("messages")) == ("CANCELED", ["enough"])


async def test_step_timeout_is_an_error_and_kills_the_step(
    open_factory: Callable[..., Any], tmp_path: Path
) -> None:
    factory = await open_factory(FLOWSERV_STEP_TIMEOUT="0.5")
    _, group_id = await install(factory, tmp_path / "slow", [step("slow", "sleep 60 & sleep 60")])
    run = await start(factory, group_id)
    pgid = await _running_pgid(factory, run["id"])
    final = await factory.wait_run(run["id"], timeout=20)
    assert final["state"] == "ERROR"
    assert any("slow" in m and "0.5" in m for m in final["messages"]), final["messages"]
    assert not await anyio.to_thread.run_sync(group_alive, pgid)


async def test_closing_the_factory_cancels_active_runs(
    make_factory: Callable[..., LocalAPIFactory], tmp_path: Path
) -> None:
    factory = make_factory({"FLOWSERV_AUTH": "open", "FLOWSERV_CANCEL_GRACE": "1"})
    await factory.open()
    _, group_id = await install(factory, tmp_path / "long", [step("s", "sleep 60 & sleep 60")])
    run = await start(factory, group_id)
    pgid = await _running_pgid(factory, run["id"])
    await factory.aclose()
    assert not await anyio.to_thread.run_sync(group_alive, pgid)
    other = make_factory({"FLOWSERV_AUTH": "open"})
    async with other() as api:
        final = await api.runs().get_run(run["id"])
    assert final["state"] == "CANCELED"
    assert final["messages"] == ["the service shut down"]


async def test_failures_are_errors_with_clear_messages(
    open_factory: Callable[..., Any], tmp_path: Path
) -> None:
    factory = await open_factory()
    cases = {
        "exit": [
            step(
                "boom", f"{PY} -c \"import sys; print('bad thing', file=sys.stderr); sys.exit(3)\""
            )
        ],
        "missing": [step("none", "true", outputs=["never.txt"])],
        "code": [
            {
                "name": "raise",
                "action": {
                    "func": "json.loads",
                    "arg": "x",
                    "variables": [{"arg": "s", "var": "text"}],
                },
            }
        ],
    }
    results = {}
    for name, steps in cases.items():
        outputs = ["never.txt"] if name == "missing" else None
        extra = {"parameters": []}
        _, group_id = await install(factory, tmp_path / name, steps, outputs=outputs)
        del extra
        run = await start(factory, group_id)
        results[name] = await factory.wait_run(run["id"], timeout=20)
    assert all(r["state"] == "ERROR" for r in results.values())
    exit_msgs = " ".join(results["exit"]["messages"])
    assert "3" in exit_msgs and "bad thing" in exit_msgs
    assert "never.txt" in " ".join(results["missing"]["messages"])
    assert "raise" in " ".join(results["code"]["messages"])


async def test_max_concurrent_runs_queue_in_order_and_pending_cancels_at_once(
    open_factory: Callable[..., Any], tmp_path: Path, database: Any
) -> None:
    factory = await open_factory(FLOWSERV_MAX_CONCURRENT_RUNS="1")
    _, group_id = await install(factory, tmp_path / "q", [step("s", "sleep 0.3")])
    runs = [await start(factory, group_id) for _ in range(3)]
    async with factory() as api:
        third = await api.runs().cancel_run(runs[2]["id"])
    assert third["state"] == "CANCELED"
    assert third["startedAt"] == third["finishedAt"]
    for run in runs[:2]:
        assert (await factory.wait_run(run["id"], timeout=20))["state"] == "SUCCESS"
    async with database.session() as s:
        rows = {r.run_id: r for r in (await s.scalars(select(Run))).all()}
    first, second = rows[runs[0]["id"]], rows[runs[1]["id"]]
    assert first.ended_at is not None and second.started_at is not None
    assert second.started_at >= first.ended_at


async def test_log_is_readable_while_the_run_is_running(
    open_factory: Callable[..., Any], tmp_path: Path
) -> None:
    factory = await open_factory()
    script = (
        "import sys,time; print('hello', flush=True);"
        " print('oops', file=sys.stderr, flush=True); time.sleep(60)"
    )
    _, group_id = await install(factory, tmp_path / "log", [step("talk", f'{PY} -c "{script}"')])
    run = await start(factory, group_id)
    with anyio.fail_after(10):
        while True:
            async with factory() as api:
                log = await api.runs().get_log(run["id"])
            if len(log["lines"]) >= 2:
                break
            await anyio.sleep(0.05)
    assert log["state"] == "RUNNING"
    texts = {(line["stream"], line["text"]) for line in log["lines"]}
    assert {("stdout", "hello"), ("stderr", "oops")} <= texts
    assert all(line["step"] == "talk" for line in log["lines"])
    async with factory() as api:
        later = await api.runs().get_log(run["id"], offset=log["next"])
        assert later["lines"] == []
        await api.runs().cancel_run(run["id"])
    with pytest.raises(InvalidArgumentError):
        async with factory() as api:
            await api.runs().get_log(run["id"], offset=-1)


async def test_64_runs_from_8_tasks_all_end_final(
    open_factory: Callable[..., Any], tmp_path: Path, database: Any
) -> None:
    factory = await open_factory()
    _, ok_group = await install(factory, tmp_path / "ok", [step("s", "true")], group="ok")
    _, bad_group = await install(factory, tmp_path / "bad", [step("s", "false")], group="bad")
    started: list[tuple[str, str]] = []

    async def starter(index: int) -> None:
        for i in range(8):
            group = ok_group if (index + i) % 2 else bad_group
            run = await start(factory, group)
            started.append((run["id"], group))

    async with anyio.create_task_group() as tg:
        for index in range(8):
            tg.start_soon(starter, index)
    finals = {}
    for run_id, _ in started:
        finals[run_id] = (await factory.wait_run(run_id, timeout=60))["state"]
    assert len(finals) == 64
    for run_id, group in started:
        assert finals[run_id] == ("SUCCESS" if group == ok_group else "ERROR")
    async with database.session() as s:
        states = set((await s.scalars(select(Run.state))).all())
    assert states <= {"SUCCESS", "ERROR"}


async def test_cancelling_a_sync_mode_caller_cancels_the_run(
    open_factory: Callable[..., Any], tmp_path: Path, database: Any
) -> None:
    factory = await open_factory(FLOWSERV_ASYNCENGINE="false")
    _, group_id = await install(factory, tmp_path / "sync", [step("s", "sleep 60")])
    with anyio.move_on_after(1.0):
        await start(factory, group_id)
    async with database.session() as s:
        run = (await s.scalars(select(Run))).one()
    assert run.state == "CANCELED"
    assert run.messages == ["the caller of start_run was cancelled"]


async def test_bad_arguments_and_config_write_nothing(
    open_factory: Callable[..., Any], tmp_path: Path, count_rows: Callable[..., Any]
) -> None:
    factory = await open_factory()
    parameters = [
        {"name": "n", "dtype": "int", "range": "[0,10]"},
        {"name": "f", "dtype": "file", "isRequired": False, "target": "in.txt"},
    ]
    _, group_id = await install(
        factory, tmp_path / "args", [step("s", "echo ${n}")], parameters=parameters
    )
    cases: list[tuple[Any, Any, type[Exception]]] = [
        ([{"name": "n", "value": 1}, {"name": "n", "value": 2}], None, DuplicateArgumentError),
        ([{"name": "x", "value": 1}], None, UnknownParameterError),
        ([{"name": "n", "value": "eleven"}], None, InvalidArgumentError),
        ([{"name": "n", "value": 11}], None, InvalidArgumentError),
        ([], None, MissingArgumentError),
        ([{"value": 1}], None, InvalidArgumentError),
        ("n=1", None, InvalidArgumentError),
        (
            [
                {"name": "n", "value": 1},
                {"name": "f", "value": {"type": "$file", "value": {"fileId": "nope"}}},
            ],
            None,
            UnknownFileError,
        ),
        (
            [{"name": "n", "value": 1}],
            {"workers": [{"name": "w", "type": "teleport"}]},
            InvalidConfigurationError,
        ),
        (
            [{"name": "n", "value": 1}],
            {"workflow": [{"step": "s", "worker": "missing"}]},
            InvalidConfigurationError,
        ),
        ([{"name": "n", "value": 1}], "not a mapping", InvalidArgumentError),
    ]
    for arguments, config, error in cases:
        with pytest.raises(error):
            async with factory() as api:
                await api.runs().start_run(group_id, arguments, config=config)
    assert await count_rows(Run) == 0
    with pytest.raises(UnknownWorkflowGroupError):
        async with factory() as api:
            await api.runs().start_run("nope", [])
    assert not await anyio.Path(factory.settings.api_dir, "tmp").exists()


async def test_unknown_worker_type_in_the_engine_config_file(
    open_factory: Callable[..., Any], tmp_path: Path, count_rows: Callable[..., Any]
) -> None:
    config = tmp_path / "engine.json"
    await anyio.Path(config).write_text(json.dumps({"workers": [{"name": "x", "type": "gpu"}]}))
    factory = await open_factory(FLOWSERV_SERIAL_ENGINECONFIG=str(config))
    _, group_id = await install(factory, tmp_path / "w", [step("s", "true")])
    with pytest.raises(InvalidConfigurationError, match="gpu"):
        await start(factory, group_id)
    assert await count_rows(Run) == 0


async def test_delete_run(
    open_factory: Callable[..., Any], tmp_path: Path, count_rows: Callable[..., Any]
) -> None:
    factory = await open_factory()
    _, group_id = await install(factory, tmp_path / "d", [step("s", "sleep 60")], group="g")
    long = await start(factory, group_id)
    await wait_for_process(lambda cmd: cmd == ["sleep", "60"])
    with pytest.raises(InvalidRunStateError):
        async with factory() as api:
            await api.runs().delete_run(long["id"])
    async with factory() as api:
        await api.runs().cancel_run(long["id"])
        await api.runs().delete_run(long["id"])
    assert await count_rows(Run) == 0
    with pytest.raises(UnknownRunError):
        async with factory() as api:
            await api.runs().get_run(long["id"])


async def test_delete_run_removes_its_files_after_commit(
    open_factory: Callable[..., Any], tmp_path: Path, count_rows: Callable[..., Any]
) -> None:
    factory = await open_factory()
    wf_id, group_id = await install(
        factory, tmp_path / "files", [step("s", "sh -c 'echo hi > out.txt'")], outputs=["out.txt"]
    )
    run = await factory.wait_run((await start(factory, group_id))["id"], timeout=20)
    folder = anyio.Path(factory.settings.api_dir, wf_id, "runs", run["id"])
    assert await (folder / "out.txt").exists()
    with pytest.raises(RuntimeError):
        async with factory() as api:
            await api.runs().delete_run(run["id"])
            raise RuntimeError("changed my mind")
    assert await (folder / "out.txt").exists()
    assert await count_rows(RunFile) == 1
    async with factory() as api:
        await api.runs().delete_run(run["id"])
    assert not await folder.exists()
    assert await count_rows(RunFile) == 0
    assert await count_rows(RunLogLine) == 0


async def test_non_members_cannot_touch_runs(
    make_factory: Callable[..., LocalAPIFactory], tmp_path: Path
) -> None:
    factory = make_factory()
    await factory.open()
    async with factory() as api:
        alice = (await api.users().register_user("alice", "pw"))["id"]
        await api.users().register_user("bob", "pw")
    await make_admin(factory.db, alice)  # she installs the workflow
    as_alice = make_factory(user_id=alice)
    await as_alice.open()
    _, group_id = await install(
        as_alice, tmp_path / "auth", [step("s", "echo hi > out.txt")], outputs=["out.txt"]
    )
    run = await as_alice.wait_run((await start(as_alice, group_id))["id"], timeout=20)
    async with factory() as api:
        bob_token = (await api.users().login_user("bob", "pw"))["token"]
    file_id = run["files"][0]["id"]
    calls = [
        ("start_run", (group_id, [])),
        ("get_run", (run["id"],)),
        ("list_runs", (group_id,)),
        ("cancel_run", (run["id"],)),
        ("delete_run", (run["id"],)),
        ("get_log", (run["id"],)),
        ("get_result_file", (run["id"], file_id)),
        ("get_result_archive", (run["id"],)),
    ]
    for name, args in calls:
        with pytest.raises(UnauthorizedAccessError):
            async with factory(access_token=bob_token) as api:
                await getattr(api.runs(), name)(*args)
    async with factory(access_token=bob_token) as api:
        group = await api.groups().get_group(group_id)
    assert "runs" not in group


async def test_update_run_never_leaves_a_final_state(
    open_factory: Callable[..., Any], tmp_path: Path
) -> None:
    factory = await open_factory()
    _, group_id = await install(factory, tmp_path / "u", [step("s", "true")])
    run = await factory.wait_run((await start(factory, group_id))["id"], timeout=20)
    assert run["state"] == "SUCCESS"
    async with factory() as api:
        again = await api.runs().update_run(run["id"], "RUNNING")
        error = await api.runs().update_run(run["id"], "ERROR", messages=["late"])
    assert again["state"] == "SUCCESS" and error["state"] == "SUCCESS"
    with pytest.raises(InvalidArgumentError):
        async with factory() as api:
            await api.runs().update_run(run["id"], "DONE")
    with pytest.raises(UnknownRunError):
        async with factory() as api:
            await api.runs().update_run("nope", "ERROR")


async def test_list_runs_filters_by_state(open_factory: Callable[..., Any], tmp_path: Path) -> None:
    factory = await open_factory()
    _, group_id = await install(factory, tmp_path / "l", [step("s", "true")])
    ids = [(await start(factory, group_id))["id"] for _ in range(3)]
    for run_id in ids:
        await factory.wait_run(run_id, timeout=20)
    async with factory() as api:
        all_runs = (await api.runs().list_runs(group_id))["runs"]
        assert [r["id"] for r in all_runs] == ids
        assert (await api.runs().list_runs(group_id, state="ERROR"))["runs"] == []
        assert len((await api.runs().list_runs(group_id, state=["SUCCESS"], limit=2))["runs"]) == 2
        with pytest.raises(InvalidArgumentError):
            await api.runs().list_runs(group_id, state="DONE")


async def test_wait_run_errors(open_factory: Callable[..., Any], tmp_path: Path) -> None:
    factory = await open_factory()
    with pytest.raises(UnknownRunError):
        await factory.wait_run("nope", timeout=5)
    _, group_id = await install(factory, tmp_path / "w", [step("s", "sleep 60")])
    run = await start(factory, group_id)
    with pytest.raises(TimeoutError):
        await factory.wait_run(run["id"], timeout=0.2)
    await factory.cancel_run(run["id"])
    assert (await factory.wait_run(run["id"], timeout=10))["state"] == "CANCELED"


async def test_update_run_success_copies_files_from_the_runstore(
    open_factory: Callable[..., Any], tmp_path: Path, database: Any
) -> None:
    # A custom engine reports through update_run: RUNNING, then SUCCESS with a folder.
    factory = await open_factory()
    _, group_id = await install(
        factory, tmp_path / "custom", [step("s", "true")], outputs=["out.txt"]
    )
    async with database.write_session() as s:
        s.add(
            Run(
                run_id="r1",
                workflow_id=(await _workflow_of(database, group_id)),
                group_id=group_id,
                state="PENDING",
            )
        )
    store = anyio.Path(tmp_path / "store")
    await store.mkdir()
    await (store / "out.txt").write_text("result")
    async with factory() as api:
        running = await api.runs().update_run("r1", "RUNNING")
        assert running["state"] == "RUNNING"
        with pytest.raises(InvalidArgumentError):
            await api.runs().update_run("r1", "SUCCESS")
    async with factory() as api:
        done = await api.runs().update_run("r1", "SUCCESS", runstore=str(store))
        assert done["state"] == "SUCCESS"
        assert [f["name"] for f in done["files"]] == ["out.txt"]
        handle = await api.runs().get_result_file("r1", done["files"][0]["id"])
        assert await handle.read() == b"result"


async def _workflow_of(database: Any, group_id: str) -> str:
    from flowserv_async.db.models import Group

    async with database.session() as s:
        group = await s.get(Group, group_id)
        assert group is not None
        return group.workflow_id


async def test_a_run_of_a_group_created_in_the_same_session_starts(
    open_factory: Callable[..., Any], tmp_path: Path
) -> None:
    # The run is written by the run store in its own transaction: the session's group
    # must be committed before it.
    factory = await open_factory()
    wf_id, _ = await install(factory, tmp_path / "wf", [step("s", f"{PY} -c pass")])
    async with factory() as api:
        group = await api.groups().create_group(wf_id, "same session")
        run = await api.runs().start_run(group["id"], [])
        assert (await api.runs().get_run(run["id"]))["groupId"] == group["id"]
    final = await factory.wait_run(run["id"], timeout=30)
    assert final["state"] == "SUCCESS", final.get("messages")


async def _workflow(factory: LocalAPIFactory, folder: Path, param: str, identifier: str) -> None:
    """Install a one-step workflow that echoes its one required parameter ``param``."""
    template = {
        "workflow": {"steps": [step("s", f"echo ${{{param}}}")]},
        "parameters": [{"name": param, "dtype": "string"}],
    }
    await anyio.Path(folder).mkdir(parents=True, exist_ok=True)
    await anyio.Path(folder, "spec.json").write_text(json.dumps(template))
    async with factory() as api:
        await api.workflows().create_workflow(
            source=str(folder), identifier=identifier, name=identifier, specfile="spec.json"
        )


async def _run_log(factory: LocalAPIFactory, group_id: str, param: str, value: str) -> list[str]:
    run = await start(factory, group_id, [{"name": param, "value": value}])
    assert [p["name"] for p in run["parameters"]] == [param]
    final = await factory.wait_run(run["id"], timeout=30)
    assert final["state"] == "SUCCESS", final.get("messages")
    async with factory() as api:
        log = await api.runs().get_log(run["id"])
    return [line["text"] for line in log["lines"] if line["stream"] == "stdout"]


async def _ran_once(factory: LocalAPIFactory, tmp_path: Path) -> LocalAPIFactory:
    """Install workflow ``wfa`` (parameter ``n``) with group ``team1``, run it once."""
    await _workflow(factory, tmp_path / "a", "n", "wfa")
    async with factory() as api:
        await api.groups().create_group("wfa", "team", identifier="team1")
    assert await _run_log(factory, "team1", "n", "first") == ["first"]
    return factory


async def _runs_the_new_template(factory: LocalAPIFactory) -> None:
    """Group ``team1`` now has parameter ``m`` instead of ``n``."""
    with pytest.raises(UnknownParameterError):
        await start(factory, "team1", [{"name": "n", "value": "stale"}])
    assert await _run_log(factory, "team1", "m", "second") == ["second"]


async def test_a_group_created_again_under_its_identifier_runs_the_new_template(
    open_factory: Callable[..., Any], tmp_path: Path
) -> None:
    # start_run keeps the templates it prepared: the group's new version must win.
    factory = await _ran_once(await open_factory(), tmp_path)
    await _workflow(factory, tmp_path / "b", "m", "wfb")
    async with factory() as api:
        await api.groups().delete_group("team1")
        await api.groups().create_group("wfb", "team", identifier="team1")
    await _runs_the_new_template(factory)


async def test_a_workflow_created_again_under_its_identifier_runs_the_new_template(
    open_factory: Callable[..., Any], tmp_path: Path
) -> None:
    factory = await _ran_once(await open_factory(), tmp_path)
    async with factory() as api:
        await api.workflows().delete_workflow("wfa")
    with pytest.raises(UnknownWorkflowGroupError):
        await start(factory, "team1", [{"name": "n", "value": "gone"}])
    await _workflow(factory, tmp_path / "b", "m", "wfa")
    async with factory() as api:
        await api.groups().create_group("wfa", "team", identifier="team1")
    await _runs_the_new_template(factory)


async def test_changing_a_run_handle_does_not_change_the_next_one(
    open_factory: Callable[..., Any], tmp_path: Path
) -> None:
    factory = await open_factory()
    await _workflow(factory, tmp_path / "a", "n", "wfa")
    async with factory() as api:
        await api.groups().create_group("wfa", "team", identifier="team1")
    first = await start(factory, "team1", [{"name": "n", "value": "x"}])
    first["parameters"][0]["name"] = "changed"
    second = await start(factory, "team1", [{"name": "n", "value": "y"}])
    assert [p["name"] for p in second["parameters"]] == ["n"]
    for run in (first, second):
        await factory.wait_run(run["id"], timeout=30)
