"""Groups service: create, read, list, update and delete groups (SPEC 3.3)."""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import anyio
import anyio.to_thread
import pytest

from flowserv_async import DB, LocalAPIFactory
from flowserv_async._util import new_id
from flowserv_async.db.models import Group, GroupMember, UploadedFile, User
from flowserv_async.errors import (
    ConstraintViolationError,
    UnauthenticatedAccessError,
    UnauthorizedAccessError,
    UnknownUserError,
    UnknownWorkflowError,
    UnknownWorkflowGroupError,
)
from flowserv_async.services import groups

TEMPLATE = {
    "workflow": {"parameters": {"a": "$[[a]]", "b": "$[[b]]"}},
    "parameters": [
        {"name": "a", "dtype": "int", "defaultValue": 1},
        {"name": "b", "dtype": "string", "label": "B"},
    ],
}


def _files(folder: Path) -> list[str]:
    found = []
    for dirpath, _, filenames in os.walk(folder):
        found += [Path(dirpath, n).relative_to(folder).as_posix() for n in filenames]
    return sorted(found)


async def stored_files(folder: Path) -> list[str]:
    return await anyio.to_thread.run_sync(_files, folder)


async def add_user(database: DB, name: str, active: bool = True) -> str:
    """A user row (no password needed: these tests pass user ids)."""
    user_id = new_id()
    async with database.session() as s, s.begin():
        s.add(User(user_id=user_id, name=name, secret="-", active=active))
    return user_id


@pytest.fixture
async def workflow_id(factory: LocalAPIFactory, tmp_path: Path) -> str:
    source = anyio.Path(tmp_path / "template")
    await source.mkdir()
    await (source / "spec.json").write_text(json.dumps(TEMPLATE))
    async with factory() as api:
        wf = await api.workflows().create_workflow(
            str(source), name="wf", specfile="spec.json", engine_config={"workers": []}
        )
    return str(wf["id"])


async def test_create_group(factory: LocalAPIFactory, database: DB, workflow_id: str) -> None:
    alice = await add_user(database, "alice")
    bob = await add_user(database, "bob")
    async with factory(user_id=alice) as api:
        group = await api.groups().create_group(workflow_id, "  Team A  ", members=[bob, alice])
    assert len(group["id"]) == 32
    assert group == {
        "id": group["id"],
        "name": "Team A",
        "workflow": workflow_id,
        "members": [{"id": alice, "username": "alice"}, {"id": bob, "username": "bob"}],
        "parameters": [
            {"name": "a", "dtype": "int", "index": 0, "isRequired": False, "defaultValue": 1},
            {"name": "b", "dtype": "string", "index": 1, "isRequired": True, "label": "B"},
        ],
        "files": [],
        "config": {"workers": []},
        "runs": [],
    }
    async with factory(user_id=bob) as api:
        assert await api.groups().get_group(group["id"]) == group


@pytest.mark.parametrize("race", ["workflow deleted", "name taken"])
async def test_what_changed_after_the_checks_is_refused_and_no_group_is_left(
    factory: LocalAPIFactory,
    database: DB,
    workflow_id: str,
    count_rows: Callable[..., Any],
    monkeypatch: pytest.MonkeyPatch,
    race: str,
) -> None:
    # The checks read before the write lock; here what they saw changed before the
    # group is inserted: its foreign key or its unique name then fails.
    alice = await add_user(database, "alice")
    real = groups._read_new_group
    error: type[Exception]
    if race == "workflow deleted":
        target, error = "gone", UnknownWorkflowError

        def stale(executor: Any, gone: str, users: Any, name: str) -> Any:
            return real(executor, workflow_id, users, name)

    else:
        async with factory(user_id=alice) as api:
            await api.groups().create_group(workflow_id, "t")
        target, error = workflow_id, ConstraintViolationError

        def stale(executor: Any, wf: str, users: Any, name: str) -> Any:
            workflow, found, _ = real(executor, wf, users, name)
            return workflow, found, False  # not taken yet when looked at

    groups_before = await count_rows(Group)
    monkeypatch.setattr(groups, "_read_new_group", stale)
    with pytest.raises(error):
        async with factory(user_id=alice) as api:
            await api.groups().create_group(target, "t")
    assert await count_rows(Group) == groups_before
    assert await count_rows(GroupMember) == groups_before


async def test_caller_is_always_a_member(
    factory: LocalAPIFactory, database: DB, workflow_id: str
) -> None:
    alice = await add_user(database, "alice")
    bob = await add_user(database, "bob")
    async with factory(user_id=alice) as api:
        group = await api.groups().create_group(workflow_id, "t", members=[bob])
    assert {m["id"] for m in group["members"]} == {alice, bob}
    async with factory(user_id=alice) as api:
        group = await api.groups().create_group(workflow_id, "u")
    assert group["members"] == [{"id": alice, "username": "alice"}]


async def test_identifier_given(
    factory: LocalAPIFactory, database: DB, workflow_id: str, count_rows: Callable[..., Any]
) -> None:
    alice = await add_user(database, "alice")
    async with factory(user_id=alice) as api:
        group = await api.groups().create_group(workflow_id, "t", identifier="A_1" + "z" * 29)
    assert group["id"] == "A_1" + "z" * 29
    with pytest.raises(ConstraintViolationError, match="exists"):
        async with factory(user_id=alice) as api:
            await api.groups().create_group(workflow_id, "other", identifier=group["id"])
    assert await count_rows(Group) == 1


async def test_parameters_extend_and_override_the_workflows(
    factory: LocalAPIFactory, database: DB, workflow_id: str
) -> None:
    alice = await add_user(database, "alice")
    async with factory(user_id=alice) as api:
        group = await api.groups().create_group(
            workflow_id,
            "t",
            parameters=[
                {"name": "b", "dtype": "select", "values": [{"name": "X", "value": "x"}]},
                {"name": "c", "dtype": "bool", "index": 5, "defaultValue": True},
            ],
        )
        handle = await api.workflows().get_workflow(workflow_id)
    assert group["parameters"] == [
        {"name": "a", "dtype": "int", "index": 0, "isRequired": False, "defaultValue": 1},
        {
            "name": "b",
            "dtype": "select",
            "index": 0,
            "isRequired": True,
            "values": [{"name": "X", "value": "x"}],
        },
        {"name": "c", "dtype": "bool", "index": 5, "isRequired": False, "defaultValue": True},
    ]
    # The workflow keeps its own declarations.
    assert [p["dtype"] for p in handle["parameters"]] == ["int", "string"]


async def test_engine_config_given_or_from_the_workflow(
    factory: LocalAPIFactory, database: DB, workflow_id: str
) -> None:
    alice = await add_user(database, "alice")
    config = {"workers": [{"name": "w", "type": "code"}]}
    async with factory(user_id=alice) as api:
        own = await api.groups().create_group(workflow_id, "own", engine_config=config)
        default = await api.groups().create_group(workflow_id, "default")
    assert own["config"] == config
    assert default["config"] == {"workers": []}


async def test_anonymous_callers_cannot_create_groups(
    factory: LocalAPIFactory, workflow_id: str, count_rows: Callable[..., Any]
) -> None:
    for token in (None, "0" * 64):
        with pytest.raises(UnauthenticatedAccessError):
            async with factory(access_token=token) as api:
                await api.groups().create_group(workflow_id, "t")
    assert await count_rows(Group) == 0


async def test_an_unknown_caller_cannot_create_groups(
    factory: LocalAPIFactory, workflow_id: str, count_rows: Callable[..., Any]
) -> None:
    with pytest.raises(UnknownUserError, match="ghost"):
        async with factory(user_id="ghost") as api:
            await api.groups().create_group(workflow_id, "t")
    assert await count_rows(Group) == 0


async def test_list_groups(
    factory: LocalAPIFactory, database: DB, workflow_id: str, tmp_path: Path
) -> None:
    alice = await add_user(database, "alice")
    bob = await add_user(database, "bob")
    async with factory() as api:
        other = await api.workflows().create_workflow(
            str(tmp_path / "template"), name="other", specfile="spec.json"
        )
    async with factory(user_id=alice) as api:
        g1 = await api.groups().create_group(workflow_id, "one")
        g2 = await api.groups().create_group(other["id"], "two", members=[bob])
    async with factory(user_id=bob) as api:
        g3 = await api.groups().create_group(workflow_id, "three")

    def ids(listing: dict[str, Any]) -> list[str]:
        return [g["id"] for g in listing["groups"]]

    async with factory(user_id=alice) as api:
        mine = await api.groups().list_groups()
        assert mine == {
            "groups": [
                {"id": g1["id"], "name": "one", "workflow": workflow_id},
                {"id": g2["id"], "name": "two", "workflow": other["id"]},
            ]
        }
        assert ids(await api.groups().list_groups(workflow_id)) == [g1["id"]]
    async with factory(user_id=bob) as api:
        assert ids(await api.groups().list_groups()) == [g2["id"], g3["id"]]
        assert ids(await api.groups().list_groups(workflow_id=workflow_id)) == [g3["id"]]
    async with factory() as api:  # anonymous: all groups
        assert ids(await api.groups().list_groups()) == [g1["id"], g2["id"], g3["id"]]
        assert ids(await api.groups().list_groups(workflow_id)) == [g1["id"], g3["id"]]
        assert ids(await api.groups().list_groups(limit=1, offset=1)) == [g2["id"]]


async def test_update_group(
    factory: LocalAPIFactory, database: DB, workflow_id: str, count_rows: Callable[..., Any]
) -> None:
    alice = await add_user(database, "alice")
    bob = await add_user(database, "bob")
    carol = await add_user(database, "carol")
    async with factory(user_id=alice) as api:
        group = await api.groups().create_group(workflow_id, "one")
        await api.groups().create_group(workflow_id, "two")
        updated = await api.groups().update_group(group["id"], name=" renamed ", members=[bob])
    assert updated["name"] == "renamed"
    assert updated["members"] == [{"id": bob, "username": "bob"}]
    # Alice is no member any more; Bob is.
    with pytest.raises(UnauthorizedAccessError):
        async with factory(user_id=alice) as api:
            await api.groups().update_group(group["id"], name="back")
    async with factory(user_id=bob) as api:
        same = await api.groups().update_group(group["id"], name="renamed")
        assert same["name"] == "renamed"
        again = await api.groups().update_group(group["id"], members=[carol, bob, carol])
        assert [m["username"] for m in again["members"]] == ["bob", "carol"]
    for kwargs, error in (
        ({"name": "two"}, ConstraintViolationError),
        ({"name": ""}, ConstraintViolationError),
        ({"members": []}, ConstraintViolationError),
        ({"members": ["nobody"]}, UnknownUserError),
    ):
        with pytest.raises(error):
            async with factory(user_id=bob) as api:
                await api.groups().update_group(group["id"], **kwargs)
    async with factory(user_id=bob) as api:
        final = await api.groups().get_group(group["id"])
    assert final == again
    assert await count_rows(GroupMember, GroupMember.group_id == group["id"]) == 2
    with pytest.raises(UnknownWorkflowGroupError):
        async with factory(user_id=bob) as api:
            await api.groups().update_group("unknown", name="x")


async def test_delete_group_removes_uploads_and_folder_after_commit(
    factory: LocalAPIFactory,
    database: DB,
    workflow_id: str,
    basedir: Path,
    count_rows: Callable[..., Any],
) -> None:
    alice = await add_user(database, "alice")
    bob = await add_user(database, "bob")
    async with factory(user_id=alice) as api:
        group = await api.groups().create_group(workflow_id, "one")
        keep = await api.groups().create_group(workflow_id, "two")
        await api.uploads().upload_file(group["id"], b"a", "a.txt")
        await api.uploads().upload_file(keep["id"], b"b", "b.txt")
    folder = anyio.Path(basedir, workflow_id, "groups", group["id"])
    with pytest.raises(UnauthorizedAccessError):
        async with factory(user_id=bob) as api:
            await api.groups().delete_group(group["id"])
    with pytest.raises(RuntimeError):
        async with factory(user_id=alice) as api:
            await api.groups().delete_group(group["id"])
            raise RuntimeError("boom")
    assert await count_rows(Group) == 2 and await count_rows(UploadedFile) == 2
    assert len(await stored_files(Path(folder))) == 1
    async with factory(user_id=alice) as api:
        await api.groups().delete_group(group["id"])
        assert await folder.is_dir()
    assert not await folder.exists()
    assert await count_rows(Group) == 1
    assert await count_rows(UploadedFile) == 1
    assert await count_rows(GroupMember, GroupMember.group_id == group["id"]) == 0
    assert len(await stored_files(basedir / workflow_id / "groups")) == 1
    with pytest.raises(UnknownWorkflowGroupError):
        async with factory(user_id=alice) as api:
            await api.groups().get_group(group["id"])
    with pytest.raises(UnknownWorkflowGroupError):
        async with factory(user_id=alice) as api:
            await api.groups().delete_group(group["id"])


async def test_open_policy_lets_anyone_act_for_a_group(
    make_factory: Callable[..., LocalAPIFactory], workflow_id: str
) -> None:
    factory = make_factory({"FLOWSERV_AUTH": "open"})
    async with factory() as api:
        group = await api.groups().create_group(workflow_id, "open")
    assert [m["id"] for m in group["members"]] == ["00000000"]
    async with factory(access_token="not-a-token") as api:
        renamed = await api.groups().update_group(group["id"], name="renamed")
        assert renamed["name"] == "renamed"
        await api.groups().delete_group(group["id"])
        assert (await api.groups().list_groups()) == {"groups": []}


async def test_authorization_matrix_under_the_default_policy(
    factory: LocalAPIFactory,
    workflow_id: str,
    basedir: Path,
    count_rows: Callable[..., Any],
) -> None:
    async with factory() as api:
        alice = (await api.users().register_user("alice", "pw"))["id"]
        await api.users().register_user("bob", "pw")
        token = (await api.users().login_user("bob", "pw"))["token"]
    async with factory(user_id=alice) as api:
        group = await api.groups().create_group(workflow_id, "A")
        upload = await api.uploads().upload_file(group["id"], b"secret", "secret.txt")
    gid, fid = group["id"], upload["id"]
    files = await stored_files(basedir)
    calls: list[tuple[str, str, tuple[Any, ...]]] = [
        ("groups", "update_group", (gid, "taken by bob")),
        ("groups", "update_group", (gid, None, ["bob"])),
        ("groups", "delete_group", (gid,)),
        ("uploads", "upload_file", (gid, b"x", "x.txt")),
        ("uploads", "list_uploaded_files", (gid,)),
        ("uploads", "get_uploaded_file", (gid, fid)),
        ("uploads", "delete_file", (gid, fid)),
    ]
    for service, method, args in calls:
        with pytest.raises(UnauthorizedAccessError, match=gid):
            async with factory(access_token=token) as api:
                await getattr(getattr(api, service)(), method)(*args)
    async with factory(access_token=token) as api:
        seen = await api.groups().get_group(gid)
    assert "runs" not in seen
    assert seen["files"] == []
    assert seen["name"] == "A"
    assert [m["username"] for m in seen["members"]] == ["alice"]
    # Anonymous callers (no token, or one that is not valid) must authenticate.
    for anonymous in (None, "0" * 64):
        with pytest.raises(UnauthenticatedAccessError):
            async with factory(access_token=anonymous) as api:
                await api.groups().create_group(workflow_id, "anon")
        with pytest.raises(UnauthenticatedAccessError):
            async with factory(access_token=anonymous) as api:
                await api.uploads().upload_file(gid, b"x", "x.txt")
    assert await count_rows(Group) == 1
    assert await count_rows(UploadedFile) == 1
    assert await count_rows(GroupMember) == 1
    assert await stored_files(basedir) == files
    async with factory(user_id=alice) as api:
        mine = await api.groups().get_group(gid)
    assert [f["id"] for f in mine["files"]] == [fid]
    assert mine["runs"] == []
