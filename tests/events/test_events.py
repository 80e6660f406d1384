"""Run events (flowserv_async.events) on both backends, through ``factory.events()``."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, NamedTuple

import anyio
import pytest
from anyio.streams.text import TextReceiveStream
from dbutil import make_admin
from runs_helpers import PY, start, step
from sqlalchemy import event as sqlalchemy_event

from flowserv_async import DB, LocalAPIFactory, Settings, events
from flowserv_async.errors import (
    EventsExpiredError,
    FlowservError,
    InvalidConfigurationError,
    UnauthenticatedAccessError,
    UnauthorizedAccessError,
    UnknownRunError,
    UnknownWorkflowError,
    UnknownWorkflowGroupError,
)
from flowserv_async.events import Event, EventStream

SCORE = "import json; json.dump({'score': 1.5}, open('results.json','w'))"
PEER = Path(__file__).with_name("peer.py")
COLLECT = "import os; os.makedirs('out', exist_ok=True); open('out/n.txt','w').write('ok')"


def spec() -> dict[str, Any]:
    """Two steps (one prints a line), a ranked result and post-processing."""
    return {
        "workflow": {
            "files": {"inputs": [], "outputs": ["results.json"]},
            "steps": [
                step("hello", f"{PY} -c \"print('hello')\""),
                step("score", f'{PY} -c "{SCORE}"'),
            ],
        },
        "results": {
            "file": "results.json",
            "schema": [{"name": "score", "label": "Score", "dtype": "float"}],
        },
        "postproc": {
            "workflow": {
                "files": {"inputs": ["runs"], "outputs": ["out/n.txt"]},
                "steps": [step("collect", f'{PY} -c "{COLLECT}"')],
            },
            "inputs": {"files": ["results.json"]},
        },
    }


async def install(factory: LocalAPIFactory, folder: Path, name: str = "bench") -> tuple[str, str]:
    await anyio.Path(folder).mkdir(parents=True)
    await anyio.Path(folder, "spec.json").write_text(json.dumps(spec()))
    async with factory() as api:
        wf = await api.workflows().create_workflow(str(folder), name=name, specfile="spec.json")
        group = await api.groups().create_group(wf["id"], "team")
    return wf["id"], group["id"]


async def read_until(stream: EventStream, done: Callable[[Event], bool]) -> list[Event]:
    seen: list[Event] = []
    with anyio.fail_after(30):
        async for event in stream:
            seen.append(event)
            if done(event):
                return seen
    raise AssertionError(f"the stream ended after {seen}")


async def install_plain(factory: LocalAPIFactory, folder: Path) -> tuple[str, str]:
    """A one-step workflow without results, and a group."""
    await anyio.Path(folder).mkdir(parents=True)
    doc = {"workflow": {"steps": [step("s", f"{PY} -c pass")]}}
    await anyio.Path(folder, "spec.json").write_text(json.dumps(doc))
    async with factory() as api:
        wf = await api.workflows().create_workflow(str(folder), name="plain", specfile="spec.json")
        group = await api.groups().create_group(wf["id"], "team")
    return wf["id"], group["id"]


def postproc_done(event: Event) -> bool:
    return event.type == "postproc.finished"


@pytest.fixture
async def open_factory(make_factory: Callable[..., LocalAPIFactory]) -> LocalAPIFactory:
    factory = make_factory({"FLOWSERV_AUTH": "open"})
    await factory.open()
    return factory


async def test_every_event_kind_in_order_for_a_ranked_two_step_run(
    open_factory: LocalAPIFactory, tmp_path: Path
) -> None:
    wf_id, group_id = await install(open_factory, tmp_path / "wf")
    async with open_factory.events(workflow_id=wf_id) as stream:
        run = await start(open_factory, group_id)
        events = await read_until(stream, postproc_done)
    docs = [e.to_dict() for e in events]
    ids = [d["id"] for d in docs]
    assert ids == sorted(ids) and len(set(ids)) == len(ids)
    own = [d for d in docs if d["runId"] == run["id"]]
    assert [d["type"] for d in own if d["type"] != "run.log"] == [
        "run.created",
        "run.state",
        "run.state",
    ]
    assert [d["data"]["state"] for d in own if d["type"] == "run.state"] == ["RUNNING", "SUCCESS"]
    success = [d for d in own if d["type"] == "run.state"][-1]
    assert success["groupId"] == group_id and success["workflowId"] == wf_id
    assert success["data"]["startedAt"] and success["data"]["finishedAt"]
    assert success["data"]["messages"] == []
    # The run's log lines are stored (and told) before its final state.
    assert own[-1]["type"] == "run.state"
    lines = [line for d in own if d["type"] == "run.log" for line in d["data"]["lines"]]
    assert {"step": "hello", "stream": "stdout", "text": "hello"}.items() <= lines[0].items()
    kinds = [d["type"] for d in docs]
    # The ranking changes with the success; then post-processing runs over it.
    assert kinds.index("ranking.changed") < kinds.index("postproc.started")
    assert docs[kinds.index("ranking.changed")]["data"] == {"runId": run["id"], "reason": "ranked"}
    post = [d for d in docs if d["runId"] not in (run["id"], None)]
    assert [d["type"] for d in post] == [
        "run.created",
        "postproc.started",
        "run.state",
        "run.state",
        "postproc.finished",
    ]
    assert post[-1]["data"]["state"] == "SUCCESS" and post[-1]["groupId"] is None
    assert json.loads(json.dumps(docs)) == docs


async def test_after_resumes_with_exactly_the_missing_events(
    open_factory: LocalAPIFactory, tmp_path: Path
) -> None:
    wf_id, group_id = await install(open_factory, tmp_path / "wf")
    async with open_factory.events(workflow_id=wf_id) as stream:
        await start(open_factory, group_id)
        everything = await read_until(stream, postproc_done)
    middle = everything[2].id
    async with open_factory.events(workflow_id=wf_id, after=middle) as resumed:
        rest = await read_until(resumed, postproc_done)
    assert [e.id for e in rest] == [e.id for e in everything[3:]]
    assert rest == everything[3:]


async def test_two_processes_see_each_others_run_events(
    make_factory: Callable[..., LocalAPIFactory], database: DB, basedir: Path, tmp_path: Path
) -> None:
    factory = make_factory({"FLOWSERV_AUTH": "open"})
    await factory.open()
    wf_id, group_id = await install_plain(factory, tmp_path / "wf")
    schema = database.connect_args.get("server_settings", {}).get("search_path", "")
    url = database.url.render_as_string(hide_password=False)
    command = [PY, str(PEER), url, schema, str(basedir), wf_id, group_id]
    ended: set[str] = set()
    latencies: dict[str, float] = {}
    with anyio.fail_after(60):
        async with (
            factory.events(workflow_id=wf_id) as stream,
            await anyio.open_process(command) as peer,
        ):
            assert peer.stdout is not None
            lines = TextReceiveStream(peer.stdout)
            output = ""
            while "ready\n" not in output:
                output += await lines.receive()
            mine = (await start(factory, group_id))["id"]
            async for event in stream:
                sent = event.time.timestamp()
                latencies.setdefault(f"{event.run_id} {event.type}", time.time() - sent)
                if event.type == "run.state" and event.data["state"] == "SUCCESS":
                    ended.add(str(event.run_id))
                if mine in ended and len(ended) == 2:
                    break
            async for chunk in lines:
                output += chunk
            assert await peer.wait() == 0
    report = json.loads(output.split("ready\n", 1)[1])
    theirs = report["own"]
    assert ended == {mine, theirs}
    seen_by_peer = {(run_id, kind) for _, kind, run_id, _ in report["seen"]}
    assert {(mine, "run.created"), (mine, "run.state")} <= seen_by_peer
    assert f"{theirs} run.created" in latencies
    # Generous bounds (shared CPUs); benchmarks/bench_events.py reports the real numbers.
    assert max(latencies.values()) < 5
    assert max(lat for *_, lat in report["seen"]) < 5


class AliceAndBob(NamedTuple):
    """An open factory of no user, Alice's, the two users, the workflow and its group."""

    factory: LocalAPIFactory
    as_alice: LocalAPIFactory
    alice: str
    bob: str
    workflow_id: str
    group_id: str


async def alice_and_bob(make_factory: Callable[..., LocalAPIFactory], folder: Path) -> AliceAndBob:
    """Register Alice and Bob; Alice (made an administrator) installs the workflow."""
    factory = make_factory()
    await factory.open()
    async with factory() as api:
        alice = (await api.users().register_user("alice", "pw"))["id"]
        bob = (await api.users().register_user("bob", "pw"))["id"]
    await make_admin(factory.db, alice)
    as_alice = make_factory(user_id=alice)
    await as_alice.open()
    workflow_id, group_id = await install(as_alice, folder)
    return AliceAndBob(factory, as_alice, alice, bob, workflow_id, group_id)


async def test_non_members_see_no_group_events_and_bad_filters_raise(
    make_factory: Callable[..., LocalAPIFactory], tmp_path: Path
) -> None:
    factory, as_alice, alice, bob, wf_id, group_id = await alice_and_bob(
        make_factory, tmp_path / "wf"
    )
    async with (
        factory.events(workflow_id=wf_id, user_id=bob) as bobs,
        factory.events(workflow_id=wf_id, user_id=alice) as alices,
    ):
        run_id = (await start(as_alice, group_id))["id"]
        everything = await read_until(alices, postproc_done)
        visible = await read_until(bobs, postproc_done)
    assert {e.group_id for e in everything} == {group_id, None}
    # Bob sees the workflow's leaderboard and post-processing, nothing of the group.
    assert visible == [e for e in everything if e.group_id is None]
    assert {e.type for e in visible} == {
        "ranking.changed",
        "postproc.started",
        "postproc.finished",
        "run.created",
        "run.state",
    }
    with pytest.raises(UnauthorizedAccessError):
        await factory.events(run_id=run_id, user_id=bob).start()
    with pytest.raises(UnauthorizedAccessError):
        await factory.events(group_id=group_id, user_id=bob).start()
    with pytest.raises(UnauthenticatedAccessError):
        await factory.events(run_id=run_id).start()
    with pytest.raises(UnknownRunError):
        await factory.events(run_id="nope", user_id=bob).start()
    with pytest.raises(UnknownWorkflowGroupError):
        await factory.events(group_id="nope", user_id=bob).start()
    with pytest.raises(UnknownWorkflowError):
        await factory.events(workflow_id="nope", user_id=bob).start()
    with pytest.raises(TypeError):
        factory.events(after="3")  # type: ignore[arg-type]
    assert not factory._hub._streams  # type: ignore[union-attr]


async def test_a_removed_member_or_deleted_group_shows_no_more_group_events(
    make_factory: Callable[..., LocalAPIFactory], tmp_path: Path
) -> None:
    factory, as_alice, alice, bob, wf_id, group_id = await alice_and_bob(
        make_factory, tmp_path / "wf"
    )
    async with as_alice() as api:
        await api.groups().update_group(group_id, members=[alice, bob])
        # Bob stays in this one: the creation of its runs marks how far a stream read.
        marks = (await api.groups().create_group(wf_id, "marks", members=[bob]))["id"]

    async def run_and_mark() -> Callable[[Event], bool]:
        """A run of the group to its end, then the start of a run in ``marks``."""
        run_id = (await start(as_alice, group_id))["id"]
        await as_alice.wait_run(run_id, timeout=30)
        mark = (await start(as_alice, marks))["id"]
        return lambda event: event.run_id == mark and event.type == "run.created"

    async with (
        factory.events(workflow_id=wf_id, user_id=bob) as bobs,
        factory.events(group_id=group_id, user_id=bob) as bobs_group,
        factory.events(workflow_id=wf_id, user_id=alice) as alices,
    ):
        done = await run_and_mark()
        everything = await read_until(alices, done)
        assert await read_until(bobs, done) == everything
        assert (await bobs_group.__anext__()).group_id == group_id
        # Bob leaves the group: he sees no more of its events.
        async with as_alice() as api:
            await api.groups().update_group(group_id, members=[alice])
        done = await run_and_mark()
        everything = await read_until(alices, done)
        assert group_id in {e.group_id for e in everything}
        assert await read_until(bobs, done) == [e for e in everything if e.group_id != group_id]
        # The stream of the group itself ends with the next event it would show (one of
        # the first run's, read after the removal), and stays closed.
        with pytest.raises(UnauthorizedAccessError, match=group_id):
            while True:
                await bobs_group.__anext__()
        assert [e async for e in bobs_group] == []
        # Back in the group, then the group is deleted and Alice makes one of her own
        # under the same identifier: Bob sees nothing of the new one.
        async with as_alice() as api:
            await api.groups().update_group(group_id, members=[alice, bob])
        done = await run_and_mark()
        assert await read_until(bobs, done) == await read_until(alices, done)
        async with as_alice() as api:
            await api.groups().delete_group(group_id)
            await api.groups().create_group(wf_id, "again", identifier=group_id)
        done = await run_and_mark()
        everything = await read_until(alices, done)
        assert group_id in {e.group_id for e in everything}
        assert await read_until(bobs, done) == [e for e in everything if e.group_id != group_id]


async def test_a_consumer_that_lags_reads_on_from_the_store(
    make_factory: Callable[..., LocalAPIFactory], tmp_path: Path
) -> None:
    # A buffer of 2 events: the stream overflows while it is not read.
    factory = make_factory({"FLOWSERV_AUTH": "open", "FLOWSERV_EVENTS_BUFFER": "2"})
    await factory.open()
    wf_id, group_id = await install(factory, tmp_path / "wf")
    async with factory.events(workflow_id=wf_id) as idle, factory.events() as reader:
        await start(factory, group_id)
        live = await read_until(reader, postproc_done)
        assert len(live) > 2
        late = await read_until(idle, postproc_done)
    assert late == live


async def test_positions_older_than_retention_raise_events_expired(
    make_factory: Callable[..., LocalAPIFactory], tmp_path: Path
) -> None:
    factory = make_factory({"FLOWSERV_AUTH": "open", "FLOWSERV_EVENTS_KEEP": "3"})
    await factory.open()
    wf_id, group_id = await install(factory, tmp_path / "wf")
    async with factory.events(workflow_id=wf_id) as stream:
        await start(factory, group_id)
        events = await read_until(stream, postproc_done)
    assert len(events) > 6
    with pytest.raises(EventsExpiredError, match=f"after id {events[0].id}"):
        await anext(factory.events(after=events[0].id))
    kept = [e async for e in _take(factory.events(after=events[-4].id), 3)]
    assert kept == events[-3:]


async def _take(stream: EventStream, count: int) -> Any:
    async with stream:
        async for event in stream:
            yield event
            count -= 1
            if count == 0:
                return


async def test_closing_a_stream_leaves_no_task_and_ends_iteration(
    open_factory: LocalAPIFactory,
) -> None:
    before = len(asyncio.all_tasks())
    stream = open_factory.events()
    async with anyio.create_task_group() as tg:
        reading: list[Event] = []

        async def read() -> None:
            reading.extend([e async for e in stream])

        await stream.start()
        tg.start_soon(read)
        await anyio.sleep(0)
        await stream.aclose()
    assert reading == []
    assert len(asyncio.all_tasks()) == before
    assert not open_factory._hub._streams  # type: ignore[union-attr]
    with pytest.raises(StopAsyncIteration):
        await anext(stream)


async def test_closing_the_factory_ends_open_streams_loudly(
    make_factory: Callable[..., LocalAPIFactory],
) -> None:
    factory = make_factory({"FLOWSERV_AUTH": "open"})
    await factory.open()
    stream = factory.events()
    await stream.start()
    await factory.aclose()
    with pytest.raises(FlowservError, match="factory closed"):
        await anext(stream)
    with pytest.raises(FlowservError, match="closed"):
        factory.events()


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("FLOWSERV_EVENTS_KEEP", "-1"),
        ("FLOWSERV_EVENTS_POLL", "0"),
        ("FLOWSERV_EVENTS_POLL", "soon"),
        ("FLOWSERV_EVENTS_BUFFER", "0"),
    ],
)
def test_malformed_event_settings_name_the_variable(name: str, value: str) -> None:
    with pytest.raises(InvalidConfigurationError, match=name):
        Settings.from_env({name: value})


def test_the_events_module_exports_sorted_public_names() -> None:
    assert events.__all__ == sorted(events.__all__)
    assert all(getattr(events, name) for name in events.__all__)


async def test_without_a_stream_commits_read_no_events_and_a_later_stream_starts_after_them(
    open_factory: LocalAPIFactory, tmp_path: Path
) -> None:
    wf_id, group_id = await install_plain(open_factory, tmp_path / "wf")
    reads: list[str] = []

    def record(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        # Event rows, not the largest id (PostgreSQL's notifications still look that up:
        # their channel is shared by the schemas of a database).
        if "FROM events" in statement and "ORDER BY" in statement:
            reads.append(statement)

    engine = open_factory.db.engine.sync_engine
    sqlalchemy_event.listen(engine, "before_cursor_execute", record)
    try:
        first = await start(open_factory, group_id)
        await open_factory.wait_run(first["id"], timeout=30)
    finally:
        sqlalchemy_event.remove(engine, "before_cursor_execute", record)
    assert reads == []
    async with open_factory.events(workflow_id=wf_id) as stream:
        second = await start(open_factory, group_id)
        seen = await read_until(stream, lambda e: e.data.get("state") == "SUCCESS")
    assert {e.run_id for e in seen} == {second["id"]}
    assert seen[0].type == "run.created"
