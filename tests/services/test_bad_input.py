"""Bad input: every malformed template, manifest and call fails precisely, leaving nothing.

Each case runs in a session of a member of an existing group. It must raise exactly the
expected error class, and afterwards the workflows, groups, members and uploads tables
and the file store must be as they were before the call (SPEC 12).
"""

from __future__ import annotations

import io
import json
import os
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anyio
import anyio.to_thread
import pytest
from dbutil import backend_database, snapshot

from flowserv_async import DB, LocalAPIFactory
from flowserv_async._util import new_id
from flowserv_async.api import API
from flowserv_async.db.models import User
from flowserv_async.errors import (
    ConstraintViolationError,
    InvalidArgumentError,
    InvalidManifestError,
    InvalidParameterError,
    InvalidTemplateError,
    UnknownFileError,
    UnknownParameterError,
    UnknownUserError,
    UnknownWorkflowError,
    UnknownWorkflowGroupError,
)

POSTGRES_URL = os.environ.get(
    "FLOWSERV_TEST_POSTGRES", "postgresql+asyncpg://postgres@127.0.0.1:5432/test"
)
MAX_UPLOAD = 1000
VALID = {"workflow": {"parameters": {"x": "$[[x]]"}}, "parameters": [{"name": "x", "dtype": "int"}]}
MANIFEST = {"name": "bad", "specfile": "spec.json"}


@dataclass
class Case:
    """What a case may use: the session, a scratch folder and the existing objects."""

    api: API
    tmp: Path
    workflow_id: str
    group_id: str
    file_id: str
    other_file_id: str
    inactive_user: str

    async def source(
        self,
        template: Any = VALID,
        manifest: Any = MANIFEST,
        files: dict[str, str] | None = None,
        links: dict[str, str] | None = None,
    ) -> Path:
        """A template folder ``src`` (``spec.json``, ``flowserv.json``, files, links)."""
        folder = anyio.Path(self.tmp / "src")
        await folder.mkdir()
        text = template if isinstance(template, str) else json.dumps(template)
        await (folder / "spec.json").write_text(text)
        if manifest is not None:
            await (folder / "flowserv.json").write_text(json.dumps(manifest))
        for name, content in (files or {}).items():
            await (folder / name).parent.mkdir(parents=True, exist_ok=True)
            await (folder / name).write_text(content)
        for name, target in (links or {}).items():
            await (folder / name).symlink_to(self.tmp / target)
        return Path(folder)

    async def install(self, template: Any = VALID, **kwargs: Any) -> Any:
        """Install a template folder built from ``template`` and the source options."""
        options = {k: kwargs.pop(k) for k in ("manifest", "files", "links") if k in kwargs}
        source = await self.source(template, **options)
        return await self.api.workflows().create_workflow(str(source), **kwargs)

    async def install_twice(self, **kwargs: Any) -> Any:
        """Install one folder twice (the first install is rolled back with the block)."""
        source = await self.source()
        for _ in range(2):
            await self.api.workflows().create_workflow(str(source), **kwargs)

    async def manifest(self, manifest: Any, **kwargs: Any) -> Any:
        return await self.install(VALID, manifest=manifest, **kwargs)

    async def upload(self, content: Any = b"data", name: str = "file.txt") -> Any:
        return await self.api.uploads().upload_file(self.group_id, content, name)

    async def group(self, **kwargs: Any) -> Any:
        args = {"workflow_id": self.workflow_id, "name": "new group", **kwargs}
        if args.get("members") == ["<inactive>"]:
            args["members"] = [self.inactive_user]
        return await self.api.groups().create_group(**args)


def param(*declarations: dict[str, Any]) -> dict[str, Any]:
    """A template whose workflow uses no parameters, with these declarations."""
    return {"workflow": {}, "parameters": list(declarations)}


async def text_stream() -> AsyncIterator[Any]:
    yield b"ok"
    yield "not bytes"


C = Callable[[Case], Awaitable[Any]]

CASES: list[Any] = [
    # -- Templates ------------------------------------------------------------------
    (
        lambda c: c.install(param({"name": "a", "dtype": "int", "defaultValue": "x"})),
        InvalidParameterError,
        "param-default-wrong-type",
    ),
    (
        lambda c: c.install(param({"name": "a", "dtype": "complex"})),
        InvalidParameterError,
        "param-unknown-dtype",
    ),
    (
        lambda c: c.install(param({"name": "a", "dtype": "int", "colour": "red"})),
        InvalidParameterError,
        "param-unknown-key",
    ),
    (
        lambda c: c.install(param({"name": 5, "dtype": "int"})),
        InvalidParameterError,
        "param-name-not-a-string",
    ),
    (
        lambda c: c.install(param({"name": "a", "dtype": "int", "isRequired": "yes"})),
        InvalidParameterError,
        "param-isRequired-not-bool",
    ),
    (
        lambda c: c.install(param({"name": "a", "dtype": "int", "range": "[10,0"})),
        InvalidParameterError,
        "param-range-malformed",
    ),
    (
        lambda c: c.install(param({"name": "a", "dtype": "float", "range": "[10,0]"})),
        InvalidParameterError,
        "param-range-reversed",
    ),
    (
        lambda c: c.install(
            param({"name": "a", "dtype": "int", "range": "[0,9]", "defaultValue": 10})
        ),
        InvalidParameterError,
        "param-default-out-of-range",
    ),
    (
        lambda c: c.install(param({"name": "a", "dtype": "select", "values": []})),
        InvalidParameterError,
        "select-no-values",
    ),
    (
        lambda c: c.install(
            param(
                {
                    "name": "a",
                    "dtype": "select",
                    "values": [{"name": "x", "value": "x"}],
                    "defaultValue": "y",
                }
            )
        ),
        InvalidParameterError,
        "select-default-not-an-option",
    ),
    (
        lambda c: c.install(param({"name": "a", "dtype": "list"})),
        InvalidParameterError,
        "list-without-para",
    ),
    (
        lambda c: c.install(param({"name": "f", "dtype": "file", "target": "/etc/passwd"})),
        InvalidParameterError,
        "file-target-absolute",
    ),
    (
        lambda c: c.install(param({"name": "a", "dtype": "int"}, {"name": "a", "dtype": "string"})),
        InvalidTemplateError,
        "duplicate-parameter-names",
    ),
    (
        lambda c: c.install(param({"name": "a", "dtype": "int", "group": "nope"})),
        InvalidTemplateError,
        "param-unknown-group",
    ),
    (
        lambda c: c.install({"workflow": {"parameters": {"x": "$[[x]]"}}}),
        UnknownParameterError,
        "unknown-reference",
    ),
    (
        lambda c: c.install({"workflow": {"steps": [{"name": "s", "action": "$[[actor]]"}]}}),
        UnknownParameterError,
        "unknown-actor-reference",
    ),
    (
        lambda c: c.install({**VALID, "outputs": [{"source": "../secret"}]}),
        InvalidTemplateError,
        "output-source-escapes",
    ),
    (
        lambda c: c.install(
            {
                **VALID,
                "results": {
                    "file": "r.json",
                    "schema": [{"name": "a", "label": "A", "dtype": "int"}],
                    "orderBy": [{"name": "b"}],
                },
            }
        ),
        InvalidTemplateError,
        "orderBy-missing-column",
    ),
    (
        lambda c: c.install(
            {
                **VALID,
                "results": {
                    "file": "r.json",
                    "schema": [{"name": "a", "label": "A", "dtype": "decimal"}],
                },
            }
        ),
        InvalidTemplateError,
        "result-column-bad-dtype",
    ),
    (
        lambda c: c.install({**VALID, "leaderboard": {}}),
        InvalidTemplateError,
        "unknown-top-level-key",
    ),
    (lambda c: c.install({"parameters": []}), InvalidTemplateError, "no-workflow"),
    (
        lambda c: c.install({"workflow": [], "parameters": []}),
        InvalidTemplateError,
        "workflow-not-a-mapping",
    ),
    (
        lambda c: c.install({"workflow": {}, "parameters": {"a": 1}}),
        InvalidTemplateError,
        "parameters-not-a-list",
    ),
    (lambda c: c.install("{not json"), InvalidTemplateError, "spec-not-parseable"),
    (
        lambda c: c.install({"workflow": {"files": {"outputs": ["../../x"]}}}),
        InvalidTemplateError,
        "workflow-output-leaves-run-folder",
    ),
    (
        lambda c: c.install(
            {"workflow": {"steps": [{"name": "s", "files": {"inputs": ["/etc/passwd"]}}]}}
        ),
        InvalidTemplateError,
        "step-input-absolute",
    ),
    (
        lambda c: c.install("[" * 3000 + "]" * 3000),
        InvalidTemplateError,
        "spec-nested-too-deeply",
    ),
    (
        lambda c: c.manifest(
            {"name": "x", "specfile": "spec.yaml"},
            files={"spec.yaml": "workflow: !include ../outside.yaml"},
        ),
        InvalidTemplateError,
        "include-escapes-the-folder",
    ),
    # -- Manifests and install arguments -------------------------------------------
    (
        lambda c: c.manifest({**MANIFEST, "files": [{"source": "../outside.yaml"}]}),
        InvalidManifestError,
        "files-dotdot",
    ),
    (
        lambda c: c.manifest({**MANIFEST, "files": [{"source": "/etc/passwd"}]}),
        InvalidManifestError,
        "files-absolute",
    ),
    (
        lambda c: c.manifest(
            {**MANIFEST, "files": [{"source": "link"}]}, links={"link": "outside.yaml"}
        ),
        InvalidManifestError,
        "files-symlink-out",
    ),
    (
        lambda c: c.manifest({**MANIFEST, "files": [{"source": "spec.json", "target": "../x"}]}),
        InvalidManifestError,
        "files-target-dotdot",
    ),
    (
        lambda c: c.manifest({**MANIFEST, "files": [{"source": "missing.txt"}]}),
        InvalidManifestError,
        "files-missing-source",
    ),
    (
        lambda c: c.manifest({"name": "x", "specfile": "../outside.yaml"}),
        InvalidManifestError,
        "specfile-outside-source",
    ),
    (
        lambda c: c.manifest(MANIFEST, specfile="../outside.yaml"),
        InvalidManifestError,
        "specfile-argument-outside-source",
    ),
    (
        lambda c: c.manifest({"name": "x", "specfile": "link"}, links={"link": "outside.yaml"}),
        InvalidManifestError,
        "specfile-symlink-out",
    ),
    (
        lambda c: c.manifest({**MANIFEST, "version": 2}),
        InvalidManifestError,
        "manifest-unknown-key",
    ),
    (lambda c: c.manifest({"specfile": "spec.json"}), InvalidManifestError, "manifest-no-name"),
    (lambda c: c.manifest({"name": "x"}), InvalidManifestError, "manifest-no-specfile"),
    (
        lambda c: c.manifest(
            {**MANIFEST, "instructions": "doc.md"}, files={"doc.md": "{{../outside.yaml}}"}
        ),
        InvalidManifestError,
        "instructions-include-escapes",
    ),
    (
        lambda c: c.manifest(None, name="x", specfile="spec.json", manifestfile="../outside.yaml"),
        InvalidManifestError,
        "manifestfile-outside-source",
    ),
    (
        lambda c: c.manifest(None, links={"link": "outside.yaml"}, name="x", specfile="spec.json"),
        ConstraintViolationError,
        "whole-folder-with-symlink-out",
    ),
    (
        lambda c: c.api.workflows().create_workflow(str(c.tmp / "missing")),
        InvalidManifestError,
        "source-missing",
    ),
    (
        lambda c: c.api.workflows().create_workflow("https://example.org/t.git"),
        InvalidManifestError,
        "source-url",
    ),
    (
        lambda c: c.manifest(MANIFEST, identifier="bad-id"),
        ConstraintViolationError,
        "workflow-identifier-invalid",
    ),
    (
        lambda c: c.manifest(MANIFEST, identifier="x" * 33),
        ConstraintViolationError,
        "workflow-identifier-too-long",
    ),
    (
        lambda c: c.manifest(MANIFEST, identifier=c.workflow_id),
        ConstraintViolationError,
        "workflow-identifier-taken",
    ),
    (lambda c: c.manifest(MANIFEST, name="   "), ConstraintViolationError, "workflow-name-blank"),
    (
        lambda c: c.manifest(MANIFEST, name="x" * 513),
        ConstraintViolationError,
        "workflow-name-too-long",
    ),
    (
        lambda c: c.install_twice(name="x" * 512),
        ConstraintViolationError,
        "workflow-name-too-long-with-suffix",
    ),
    (
        lambda c: c.manifest(MANIFEST, engine_config=["workers"]),
        ConstraintViolationError,
        "engine-config-not-a-mapping",
    ),
    (
        lambda c: c.api.workflows().update_workflow(c.workflow_id, name="   "),
        ConstraintViolationError,
        "update-name-blank",
    ),
    (
        lambda c: c.api.workflows().update_workflow(c.workflow_id, description=["text"]),
        ConstraintViolationError,
        "update-description-not-a-string",
    ),
    # -- Uploads -------------------------------------------------------------------
    (lambda c: c.upload(name=".."), InvalidArgumentError, "upload-name-dotdot"),
    (lambda c: c.upload(name="a/../../b"), InvalidArgumentError, "upload-name-dotdot-inside"),
    (lambda c: c.upload(name="/etc/passwd"), InvalidArgumentError, "upload-name-absolute"),
    (lambda c: c.upload(name="a\x00b"), InvalidArgumentError, "upload-name-nul"),
    (lambda c: c.upload(name="a\nb"), InvalidArgumentError, "upload-name-newline"),
    (lambda c: c.upload(name="\x1b[31m.txt"), InvalidArgumentError, "upload-name-escape"),
    (lambda c: c.upload(name="a\\b"), InvalidArgumentError, "upload-name-backslash"),
    (lambda c: c.upload(name=""), InvalidArgumentError, "upload-name-empty"),
    (lambda c: c.upload(name="x" * 2000), InvalidArgumentError, "upload-name-too-long"),
    (lambda c: c.upload(b"x" * (MAX_UPLOAD + 1)), ConstraintViolationError, "upload-too-large"),
    (
        lambda c: c.upload(io.BytesIO(b"x" * (MAX_UPLOAD + 1))),
        ConstraintViolationError,
        "upload-file-object-too-large",
    ),
    (lambda c: c.upload(12345), InvalidArgumentError, "upload-content-int"),
    (lambda c: c.upload(text_stream()), InvalidArgumentError, "upload-stream-of-text"),
    (lambda c: c.upload(io.StringIO("text")), InvalidArgumentError, "upload-text-file-object"),
    (lambda c: c.upload(str(c.tmp / "missing.bin")), UnknownFileError, "upload-missing-local-path"),
    (
        lambda c: c.api.uploads().upload_file("unknown", b"x", "a.txt"),
        UnknownWorkflowGroupError,
        "upload-unknown-group",
    ),
    # -- Groups --------------------------------------------------------------------
    (lambda c: c.group(identifier="bad-id"), ConstraintViolationError, "group-identifier-dash"),
    (lambda c: c.group(identifier="x" * 33), ConstraintViolationError, "group-identifier-too-long"),
    (lambda c: c.group(identifier=""), ConstraintViolationError, "group-identifier-empty"),
    (lambda c: c.group(identifier=c.group_id), ConstraintViolationError, "group-identifier-taken"),
    (lambda c: c.group(name="  "), ConstraintViolationError, "group-name-blank"),
    (lambda c: c.group(name="x" * 513), ConstraintViolationError, "group-name-too-long"),
    (lambda c: c.group(name=" team "), ConstraintViolationError, "group-name-taken"),
    (lambda c: c.group(members=["nobody"]), UnknownUserError, "group-unknown-member"),
    (lambda c: c.group(members=["<inactive>"]), UnknownUserError, "group-inactive-member"),
    (
        lambda c: c.group(parameters=[{"name": "x", "dtype": "int", "oops": 1}]),
        InvalidParameterError,
        "group-bad-parameter",
    ),
    (lambda c: c.group(workflow_id="unknown"), UnknownWorkflowError, "group-unknown-workflow"),
    (
        lambda c: c.api.groups().update_group(c.group_id, members=["nobody"]),
        UnknownUserError,
        "update-group-unknown-member",
    ),
    # -- Unknown identifiers -------------------------------------------------------
    (
        lambda c: c.api.workflows().get_workflow("unknown"),
        UnknownWorkflowError,
        "get-unknown-workflow",
    ),
    (
        lambda c: c.api.workflows().delete_workflow("unknown"),
        UnknownWorkflowError,
        "delete-unknown-workflow",
    ),
    (lambda c: c.api.groups().get_group("unknown"), UnknownWorkflowGroupError, "get-unknown-group"),
    (
        lambda c: c.api.groups().delete_group("unknown"),
        UnknownWorkflowGroupError,
        "delete-unknown-group",
    ),
    (
        lambda c: c.api.uploads().list_uploaded_files("unknown"),
        UnknownWorkflowGroupError,
        "list-files-unknown-group",
    ),
    (
        lambda c: c.api.uploads().get_uploaded_file(c.group_id, "unknown"),
        UnknownFileError,
        "get-unknown-file",
    ),
    (
        lambda c: c.api.uploads().delete_file(c.group_id, "unknown"),
        UnknownFileError,
        "delete-unknown-file",
    ),
    (
        lambda c: c.api.uploads().get_uploaded_file(c.group_id, c.other_file_id),
        UnknownFileError,
        "get-file-of-another-group",
    ),
    (
        lambda c: c.api.uploads().delete_file(c.group_id, c.other_file_id),
        UnknownFileError,
        "delete-file-of-another-group",
    ),
]


@dataclass
class Existing:
    """The objects that every case starts from (shared by the cases of one backend)."""

    factory: LocalAPIFactory
    database: DB
    basedir: Path
    user_id: str
    inactive_user: str
    workflow_id: str
    group_id: str
    file_id: str
    other_file_id: str


# The cases share one database and file store per backend: creating both for each of
# the many cases would take most of the test time. Sharing is sound because every case
# must leave the database and the store exactly as it found them, which it checks.
@pytest.fixture(scope="module")
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture(scope="module", params=["sqlite", "postgres"])
async def existing(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[Existing]:
    folder = tmp_path_factory.mktemp(request.param)
    basedir = folder / "api"
    async with backend_database(request.param, folder) as database:
        env = {
            "FLOWSERV_API_DIR": str(basedir),
            "FLOWSERV_AUTH": "default",
            "FLOWSERV_MAX_UPLOAD_SIZE": str(MAX_UPLOAD),
        }
        async with LocalAPIFactory(env=env, db=database) as factory:
            alice, inactive = new_id(), new_id()
            async with database.session() as s, s.begin():
                # An administrator: the bad input of admin operations reaches its checks.
                s.add(User(user_id=alice, name="alice", secret="-", active=True, is_admin=True))
                s.add(User(user_id=inactive, name="inactive", secret="-", active=False))
            source = anyio.Path(folder / "existing")
            await source.mkdir()
            await (source / "spec.json").write_text(json.dumps(VALID))
            async with factory(user_id=alice) as api:
                wf = await api.workflows().create_workflow(
                    str(source), name="bad", specfile="spec.json"
                )
                group = await api.groups().create_group(wf["id"], "team")
                other = await api.groups().create_group(wf["id"], "other")
                upload = await api.uploads().upload_file(group["id"], b"kept", "kept.txt")
                foreign = await api.uploads().upload_file(other["id"], b"other", "other.txt")
            yield Existing(
                factory,
                database,
                basedir,
                alice,
                inactive,
                wf["id"],
                group["id"],
                upload["id"],
                foreign["id"],
            )


@pytest.mark.parametrize(("call", "error"), [pytest.param(c, e, id=i) for c, e, i in CASES])
async def test_bad_input_fails_precisely_and_leaves_nothing(
    existing: Existing, tmp_path: Path, call: C, error: type[Exception]
) -> None:
    await anyio.Path(tmp_path / "outside.yaml").write_text("secret: 1\n")
    before = await snapshot(existing.database, existing.basedir)
    with pytest.raises(error) as caught:
        async with existing.factory(user_id=existing.user_id) as api:
            case = Case(
                api,
                tmp_path,
                existing.workflow_id,
                existing.group_id,
                existing.file_id,
                existing.other_file_id,
                existing.inactive_user,
            )
            await call(case)
    assert type(caught.value) is error, repr(caught.value)
    assert await snapshot(existing.database, existing.basedir) == before
