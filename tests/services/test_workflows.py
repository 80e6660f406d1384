"""Workflows service: install, list, read, update and delete templates (SPEC 3.2, 5.5)."""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import anyio
import anyio.to_thread
import pytest
from sqlalchemy import update

from flowserv_async import DB, LocalAPIFactory
from flowserv_async._util import new_id
from flowserv_async.db.models import Group, Run, UploadedFile, User, Workflow
from flowserv_async.errors import (
    ConstraintViolationError,
    InvalidManifestError,
    UnauthorizedAccessError,
    UnknownWorkflowError,
)

HELLOWORLD = Path(__file__).parents[2] / "flowserv_async" / "examples" / "helloworld"
SPEC = {
    "workflow": {"steps": [{"name": "s", "action": {"environment": "py", "commands": ["true"]}}]}
}


def _files(folder: Path, skip_db: bool = True) -> list[str]:
    if not folder.is_dir():
        return []
    found = []
    for dirpath, _, filenames in os.walk(folder):
        for name in filenames:
            if skip_db and name.startswith("flowserv.db"):
                continue
            found.append(Path(dirpath, name).relative_to(folder).as_posix())
    return sorted(found)


async def stored_files(folder: Path) -> list[str]:
    """The files below a folder (relative POSIX paths), read off the event loop."""
    return await anyio.to_thread.run_sync(_files, folder)


async def write_template(
    folder: Path,
    template: dict[str, Any] | None = None,
    manifest: dict[str, Any] | None = None,
    files: dict[str, str] | None = None,
) -> Path:
    """A template source folder: ``spec.json``, an optional manifest and more files."""
    await anyio.Path(folder).mkdir(parents=True, exist_ok=True)
    await anyio.Path(folder, "spec.json").write_text(json.dumps(template or SPEC))
    if manifest is not None:
        await anyio.Path(folder, "flowserv.json").write_text(json.dumps(manifest))
    for name, text in (files or {}).items():
        await anyio.Path(folder, name).parent.mkdir(parents=True, exist_ok=True)
        await anyio.Path(folder, name).write_text(text)
    return folder


async def login(factory: LocalAPIFactory, name: str) -> tuple[str, str]:
    """Register and log in a user; return the user id and the token."""
    async with factory() as api:
        user = await api.users().register_user(name, "pw")
        token = (await api.users().login_user(name, "pw"))["token"]
    return user["id"], token


async def install(factory: LocalAPIFactory, source: Path | str = HELLOWORLD, **kw: Any) -> Any:
    async with factory() as api:
        return await api.workflows().create_workflow(str(source), **kw)


HELLOWORLD_PARAMETERS = [
    {
        "name": "names",
        "dtype": "file",
        "index": 0,
        "isRequired": True,
        "label": "Names file",
        "help": "Text file with one name per line.",
        "target": "data/names.txt",
    },
    {
        "name": "sleeptime",
        "dtype": "float",
        "index": 1,
        "isRequired": False,
        "label": "Sleep time (s)",
        "help": "Seconds to wait before writing the greetings.",
        "defaultValue": 0.1,
        "range": "[0,10]",
    },
    {
        "name": "greeting",
        "dtype": "string",
        "index": 2,
        "isRequired": False,
        "label": "Greeting",
        "defaultValue": "Hello",
    },
]


async def test_install_hello_world(factory: LocalAPIFactory, basedir: Path) -> None:
    wf = await install(factory)
    assert set(wf) == {
        "id",
        "name",
        "description",
        "instructions",
        "parameters",
        "outputs",
        "groups",
    }
    assert len(wf["id"]) == 32
    assert wf["name"] == "Hello World"
    assert wf["description"] == (
        "Say hello to a list of names and rank the greetings by line statistics."
    )
    text = await anyio.Path(HELLOWORLD, "instructions.md").read_text()
    assert wf["instructions"] == text.strip()  # as flowserv: no trailing newline
    assert wf["parameters"] == HELLOWORLD_PARAMETERS
    assert [(o["key"], o["source"]) for o in wf["outputs"]] == [
        ("greetings", "results/greetings.txt"),
        ("analytics", "results/analytics.json"),
    ]
    assert wf["groups"] == []
    # Without a files list the whole folder becomes the static files.
    source_files = await anyio.to_thread.run_sync(_files, HELLOWORLD, False)
    assert await stored_files(basedir / wf["id"] / "static") == source_files
    assert await stored_files(basedir) == [f"{wf['id']}/static/{f}" for f in source_files]
    async with factory() as api:
        assert await api.workflows().get_workflow(wf["id"]) == wf


async def test_handle_lists_the_callers_groups(factory: LocalAPIFactory) -> None:
    wf = await install(factory)
    alice, _ = await login(factory, "alice")
    bob, _ = await login(factory, "bob")
    async with factory(user_id=alice) as api:
        g1 = await api.groups().create_group(wf["id"], "first")
        g2 = await api.groups().create_group(wf["id"], "second", members=[bob])
    async with factory(user_id=bob) as api:
        await api.groups().create_group(wf["id"], "bobs")
    async with factory(user_id=alice) as api:
        handle = await api.workflows().get_workflow(wf["id"])
    assert handle["groups"] == [
        {"id": g1["id"], "name": "first", "workflow": wf["id"]},
        {"id": g2["id"], "name": "second", "workflow": wf["id"]},
    ]
    async with factory() as api:  # anonymous
        assert (await api.workflows().get_workflow(wf["id"]))["groups"] == []


async def test_parameters_in_index_order_with_groups(
    factory: LocalAPIFactory, tmp_path: Path
) -> None:
    template = {
        "workflow": {"parameters": {"a": "$[[a]]", "b": "$[[b]]", "c": "$[[c]]"}},
        "parameters": [
            {"name": "c", "dtype": "int", "index": 2, "group": "main", "range": "[0,)"},
            {"name": "a", "dtype": "bool", "index": 0, "defaultValue": False},
            {
                "name": "b",
                "dtype": "select",
                "index": 1,
                "group": "more",
                "values": [
                    {"name": "X", "value": "x", "isDefault": True},
                    {"name": "Y", "value": "y"},
                ],
            },
        ],
        "parameterGroups": [{"name": "main", "title": "Main"}, {"name": "more", "title": "More"}],
    }
    source = await write_template(tmp_path / "src", template)
    wf = await install(factory, source, name="ordered", specfile="spec.json")
    assert wf["parameters"] == [
        {"name": "a", "dtype": "bool", "index": 0, "isRequired": False, "defaultValue": False},
        {
            "name": "b",
            "dtype": "select",
            "index": 1,
            "isRequired": True,
            "group": "more",
            "values": [
                {"name": "X", "value": "x", "isDefault": True},
                {"name": "Y", "value": "y"},
            ],
        },
        {
            "name": "c",
            "dtype": "int",
            "index": 2,
            "isRequired": True,
            "group": "main",
            "range": "[0,)",
        },
    ]
    assert wf["parameterGroups"] == [
        {"name": "main", "title": "Main", "index": 0},
        {"name": "more", "title": "More", "index": 1},
    ]
    assert "outputs" not in wf and "description" not in wf and "instructions" not in wf


async def test_taken_names_get_a_number(factory: LocalAPIFactory) -> None:
    names = [(await install(factory))["name"] for _ in range(3)]
    assert names == ["Hello World", "Hello World (1)", "Hello World (2)"]
    assert (await install(factory, name="  Hello World ", identifier="hw"))["name"] == (
        "Hello World (3)"
    )
    # A name that merely starts like a taken one is free.
    assert (await install(factory, name="Hello"))["name"] == "Hello"


async def test_concurrent_installs_of_one_template_get_distinct_names(
    factory: LocalAPIFactory, basedir: Path
) -> None:
    handles: list[dict[str, Any]] = []

    async def one() -> None:
        handles.append(await install(factory))

    async with anyio.create_task_group() as tg:
        for _ in range(5):
            tg.start_soon(one)
    assert sorted(h["name"] for h in handles) == [
        "Hello World",
        *(f"Hello World ({i})" for i in range(1, 5)),
    ]
    async with factory() as api:
        listed = (await api.workflows().list_workflows())["workflows"]
    assert {w["id"] for w in listed} == {h["id"] for h in handles}
    for handle in handles:
        assert await anyio.Path(basedir, handle["id"], "static", "benchmark.yaml").is_file()


async def test_identifier_given_and_taken(
    factory: LocalAPIFactory, basedir: Path, tmp_path: Path, count_rows: Callable[..., Any]
) -> None:
    wf = await install(factory, identifier="hello_World_1")
    assert wf["id"] == "hello_World_1"
    before = await stored_files(basedir)
    spec = await anyio.Path(basedir, "hello_World_1", "static", "benchmark.yaml").read_text()
    other = await write_template(
        tmp_path / "other", manifest={"name": "x", "specfile": "spec.json"}
    )
    with pytest.raises(ConstraintViolationError, match="hello_World_1"):
        await install(factory, other, identifier="hello_World_1")
    assert await stored_files(basedir) == before
    assert await anyio.Path(basedir, "hello_World_1", "static", "benchmark.yaml").read_text() == (
        spec
    )
    assert await count_rows(Workflow) == 1
    async with factory() as api:
        assert (await api.workflows().get_workflow("hello_World_1"))["name"] == "Hello World"


async def test_call_arguments_override_the_manifest(
    factory: LocalAPIFactory, tmp_path: Path, basedir: Path
) -> None:
    other = {**SPEC, "parameters": [{"name": "p", "dtype": "string", "defaultValue": "v"}]}
    source = await write_template(
        tmp_path / "src",
        manifest={
            "name": "from manifest",
            "description": "manifest text",
            "instructions": "a.md",
            "specfile": "spec.json",
        },
        files={
            "a.md": "A",
            "b.md": "B says {{ parts/c.md }}",
            "parts/c.md": "C",
            "other.json": json.dumps(other),
            "alt.json": json.dumps({"name": "alt", "specfile": "spec.json"}),
        },
    )
    wf = await install(factory, source)
    assert (wf["name"], wf["description"], wf["instructions"]) == (
        "from manifest",
        "manifest text",
        "A",
    )
    assert wf["parameters"] == []
    wf = await install(
        factory,
        source,
        name="by call",
        description="call text",
        instructions="b.md",
        specfile="other.json",
    )
    assert (wf["name"], wf["description"], wf["instructions"]) == (
        "by call",
        "call text",
        "B says C",
    )
    assert [p["name"] for p in wf["parameters"]] == ["p"]
    wf = await install(factory, source, manifestfile="alt.json")
    assert wf["name"] == "alt" and "instructions" not in wf


async def test_manifest_files_copy_only_those_files(
    factory: LocalAPIFactory, tmp_path: Path, basedir: Path
) -> None:
    source = await write_template(
        tmp_path / "src",
        manifest={
            "name": "files",
            "specfile": "spec.json",
            "files": [
                {"source": "code/run.py", "target": "bin/main.py"},
                {"source": "data"},
                {"source": "data/a.txt", "target": "copy.txt"},
            ],
        },
        files={"code/run.py": "print()", "code/skip.py": "", "data/a.txt": "a", "data/b/c": "c"},
    )
    wf = await install(factory, source)
    prefix = f"{wf['id']}/static/"
    assert await stored_files(basedir) == sorted(
        prefix + name for name in ("bin/main.py", "data/a.txt", "data/b/c", "copy.txt")
    )
    text = await anyio.Path(basedir, wf["id"], "static", "bin", "main.py").read_text()
    assert text == "print()"


async def test_install_by_repository_key(
    make_factory: Callable[..., LocalAPIFactory], tmp_path: Path
) -> None:
    await write_template(
        tmp_path / "repo" / "relative",
        manifest={"name": "relative", "specfile": "spec.json"},
        files={"alt.json": json.dumps({"name": "alternative", "specfile": "spec.json"})},
    )
    index = [
        {"id": "hello", "description": "Hello World demo", "url": str(HELLOWORLD)},
        {"id": "uri", "description": "as file URL", "url": f"file://{HELLOWORLD}"},
        {"id": "rel", "description": "next to the index", "url": "relative"},
        {"id": "alt", "description": "own manifest", "url": "relative", "manifest": "alt.json"},
        {"id": "gone", "description": "no such folder", "url": str(tmp_path / "gone")},
    ]
    await anyio.Path(tmp_path / "repo" / "index.json").write_text(json.dumps(index))
    factory = make_factory({"FLOWSERV_REPOSITORY": str(tmp_path / "repo" / "index.json")})
    names = [(await install(factory, key))["name"] for key in ("hello", "uri", "rel", "alt")]
    assert names == ["Hello World", "Hello World (1)", "relative", "alternative"]
    for key in ("gone", "unknown"):
        with pytest.raises(InvalidManifestError, match=key):
            await install(factory, key)


async def test_url_sources_are_refused_without_network(
    factory: LocalAPIFactory, basedir: Path, count_rows: Callable[..., Any]
) -> None:
    for url in ("https://github.com/scailfin/flowserv-helloworld-demo.git", "git://host/x"):
        with pytest.raises(InvalidManifestError, match="only local folders"):
            await install(factory, url)
    assert await count_rows(Workflow) == 0
    assert await stored_files(basedir) == []


async def test_list_workflows_in_creation_order(factory: LocalAPIFactory) -> None:
    ids = [(await install(factory))["id"] for _ in range(4)]
    async with factory() as api:
        listing = await api.workflows().list_workflows()
        assert [w["id"] for w in listing["workflows"]] == ids
        assert set(listing["workflows"][0]) == {"id", "name", "description", "instructions"}
        page = await api.workflows().list_workflows(limit=2, offset=1)
        assert [w["id"] for w in page["workflows"]] == ids[1:3]
        assert (await api.workflows().list_workflows(offset=4)) == {"workflows": []}


async def test_update_workflow(factory: LocalAPIFactory) -> None:
    wf = await install(factory)
    other = await install(factory, name="Other")
    async with factory() as api:
        handle = await api.workflows().update_workflow(
            wf["id"], name="  Renamed  ", description="new", instructions="read me"
        )
    assert (handle["name"], handle["description"], handle["instructions"]) == (
        "Renamed",
        "new",
        "read me",
    )
    assert handle["parameters"] == HELLOWORLD_PARAMETERS
    async with factory() as api:
        # Unchanged values and the own name are fine.
        same = await api.workflows().update_workflow(wf["id"], name="Renamed")
        assert same == handle
        assert await api.workflows().get_workflow(wf["id"]) == handle
    for bad in ("", "   ", "x" * 513, "Other"):
        with pytest.raises(ConstraintViolationError):
            async with factory() as api:
                await api.workflows().update_workflow(wf["id"], name=bad, description="lost")
    async with factory() as api:
        assert await api.workflows().get_workflow(wf["id"]) == handle
        assert (await api.workflows().get_workflow(other["id"]))["name"] == "Other"
    with pytest.raises(UnknownWorkflowError):
        async with factory() as api:
            await api.workflows().update_workflow("unknown", name="x")


async def _populate(factory: LocalAPIFactory, database: DB, basedir: Path) -> tuple[str, str]:
    """A workflow with a group, an upload and a finished run with a result file."""
    wf = await install(factory)
    user, _ = await login(factory, "alice")
    async with factory(user_id=user) as api:
        group = await api.groups().create_group(wf["id"], "team")
        await api.uploads().upload_file(group["id"], b"Alice\n", "names.txt")
    run_id = new_id()
    async with database.session() as s, s.begin():
        s.add(Run(run_id=run_id, workflow_id=wf["id"], group_id=group["id"], state="SUCCESS"))
    result = anyio.Path(basedir, wf["id"], "runs", run_id, "results", "out.txt")
    await result.parent.mkdir(parents=True)
    await result.write_text("done")
    return wf["id"], user


async def test_delete_workflow_removes_rows_and_files_after_commit(
    factory: LocalAPIFactory, database: DB, basedir: Path, count_rows: Callable[..., Any]
) -> None:
    keep = await install(factory)
    workflow_id, _ = await _populate(factory, database, basedir)
    kept_files = await stored_files(basedir / keep["id"])
    async with factory() as api:
        await api.workflows().delete_workflow(workflow_id)
        # Not committed yet: the files are still there.
        assert await anyio.Path(basedir, workflow_id, "static").is_dir()
    assert not await anyio.Path(basedir, workflow_id).exists()
    # The kept workflow has no groups, uploads or runs.
    for model in (Group, UploadedFile, Run):
        assert await count_rows(model) == 0, model
    assert await count_rows(Workflow, Workflow.workflow_id == workflow_id) == 0
    assert await count_rows(Workflow) == 1
    assert await stored_files(basedir / keep["id"]) == kept_files
    with pytest.raises(UnknownWorkflowError):
        async with factory() as api:
            await api.workflows().get_workflow(workflow_id)
    with pytest.raises(UnknownWorkflowError):
        async with factory() as api:
            await api.workflows().delete_workflow(workflow_id)


async def test_failed_block_keeps_the_deleted_workflow(
    factory: LocalAPIFactory, database: DB, basedir: Path, count_rows: Callable[..., Any]
) -> None:
    workflow_id, user = await _populate(factory, database, basedir)
    files = await stored_files(basedir)
    with pytest.raises(RuntimeError):
        async with factory() as api:
            await api.workflows().delete_workflow(workflow_id)
            raise RuntimeError("boom")
    assert await stored_files(basedir) == files
    for model in (Workflow, Group, UploadedFile, Run):
        assert await count_rows(model) == 1, model
    async with factory(user_id=user) as api:
        handle = await api.workflows().get_workflow(workflow_id)
    assert [g["name"] for g in handle["groups"]] == ["team"]


async def test_failed_block_removes_the_installed_files(
    factory: LocalAPIFactory, basedir: Path, count_rows: Callable[..., Any]
) -> None:
    with pytest.raises(RuntimeError):
        async with factory() as api:
            wf = await api.workflows().create_workflow(str(HELLOWORLD))
            assert await anyio.Path(basedir, wf["id"], "static", "benchmark.yaml").is_file()
            raise RuntimeError("boom")
    assert await count_rows(Workflow) == 0
    assert await stored_files(basedir) == []


async def test_admin_rules_for_workflow_changes(
    make_factory: Callable[..., LocalAPIFactory],
    database: DB,
    basedir: Path,
    count_rows: Callable[..., Any],
) -> None:
    factory = make_factory()
    user, token = await login(factory, "alice")
    wf = await install(factory)  # no token: local use is allowed
    files = await stored_files(basedir)
    calls: list[tuple[str, tuple[Any, ...]]] = [
        ("create_workflow", (str(HELLOWORLD),)),
        ("update_workflow", (wf["id"], "renamed")),
        ("delete_workflow", (wf["id"],)),
    ]
    for method, args in calls:
        with pytest.raises(UnauthorizedAccessError, match=user):
            async with factory(access_token=token) as api:
                await getattr(api.workflows(), method)(*args)
    assert await count_rows(Workflow) == 1
    assert await stored_files(basedir) == files
    async with factory(access_token=token) as api:  # reading needs no admin
        assert (await api.workflows().get_workflow(wf["id"]))["name"] == "Hello World"
    # An explicit user id without a token is that user, not local use (SPEC 2).
    with pytest.raises(UnauthorizedAccessError, match=user):
        async with factory(user_id=user) as api:
            await api.workflows().update_workflow(wf["id"], name="by user id")
    assert await count_rows(Workflow) == 1
    # Under the open policy anyone may; with the admin flag a token user may.
    open_factory = make_factory({"FLOWSERV_AUTH": "open"})
    async with open_factory(access_token=token) as api:
        await api.workflows().update_workflow(wf["id"], name="open")
    async with database.session() as s, s.begin():
        await s.execute(update(User).where(User.user_id == user).values(is_admin=True))
    async with factory(access_token=token) as api:
        second = await api.workflows().create_workflow(str(HELLOWORLD))
        await api.workflows().update_workflow(second["id"], name="admin")
        await api.workflows().delete_workflow(wf["id"])
    async with factory() as api:
        assert [w["name"] for w in (await api.workflows().list_workflows())["workflows"]] == [
            "admin"
        ]
