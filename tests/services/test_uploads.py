"""Uploads service: upload, list, download and delete a group's files (SPEC 3.4)."""

from __future__ import annotations

import gc
import io
import json
import os
import tracemalloc
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import anyio
import anyio.to_thread
import pytest

from flowserv_async import DB, LocalAPIFactory
from flowserv_async._util import new_id
from flowserv_async.db.models import UploadedFile, User
from flowserv_async.errors import (
    ConstraintViolationError,
    FlowservError,
    InvalidArgumentError,
    UnknownFileError,
)


def _files(folder: Path) -> list[str]:
    found = []
    for dirpath, _, filenames in os.walk(folder):
        found += [Path(dirpath, n).relative_to(folder).as_posix() for n in filenames]
    return sorted(found)


async def stored_files(folder: Path) -> list[str]:
    return await anyio.to_thread.run_sync(_files, folder)


@pytest.fixture
async def group(factory: LocalAPIFactory, database: DB, tmp_path: Path) -> dict[str, Any]:
    """A workflow with a group of one member; ``user`` is the member's id."""
    source = anyio.Path(tmp_path / "template")
    await source.mkdir()
    await (source / "spec.json").write_text(json.dumps({"workflow": {}}))
    user_id = new_id()
    async with database.session() as s, s.begin():
        s.add(User(user_id=user_id, name="alice", secret="-", active=True))
    async with factory() as api:  # installing is for administrators: local code here
        wf = await api.workflows().create_workflow(str(source), name="wf", specfile="spec.json")
    async with factory(user_id=user_id) as api:
        handle = await api.groups().create_group(wf["id"], "team")
    return {**handle, "user": user_id}


async def chunks(*parts: bytes) -> AsyncIterator[bytes]:
    for part in parts:
        await anyio.sleep(0)
        yield part


async def test_upload_every_kind_of_content(
    factory: LocalAPIFactory, group: dict[str, Any], tmp_path: Path, basedir: Path
) -> None:
    local = anyio.Path(tmp_path / "local.csv")
    await local.write_bytes(b"a,b\n1,2\n")
    contents: list[tuple[Any, str, bytes, str]] = [
        (b"Alice\nBob\n", "names.txt", b"Alice\nBob\n", "text/plain"),
        (bytearray(b"{}"), "data/config.json", b"{}", "application/json"),
        (str(local), "table.csv", b"a,b\n1,2\n", "text/csv"),
        (Path(local), "copy.csv", b"a,b\n1,2\n", "text/csv"),
        (io.BytesIO(b"\x00\x01" * 1000), "blob", b"\x00\x01" * 1000, "application/octet-stream"),
        (
            chunks(b"x" * 10, b"", b"y" * 5),
            "stream.tar.gz",
            b"x" * 10 + b"y" * 5,
            "application/gzip",
        ),
        (b"", "empty.txt", b"", "text/plain"),
    ]
    handles = []
    async with factory(user_id=group["user"]) as api:
        for content, name, _, _ in contents:
            handles.append(await api.uploads().upload_file(group["id"], content, name))
    for handle, (_, name, data, _) in zip(handles, contents, strict=True):
        assert set(handle) == {"id", "name", "createdAt", "size"}
        assert (handle["name"], handle["size"]) == (name, len(data))
        assert handle["createdAt"].endswith("+00:00")
    async with factory(user_id=group["user"]) as api:
        listing = await api.uploads().list_uploaded_files(group["id"])
        assert listing == {"files": handles}
        page = await api.uploads().list_uploaded_files(group["id"], limit=2, offset=1)
        assert page == {"files": handles[1:3]}
        assert (await api.groups().get_group(group["id"]))["files"] == handles
        for handle, (_, name, data, mime_type) in zip(handles, contents, strict=True):
            download = await api.uploads().get_uploaded_file(group["id"], handle["id"])
            assert (download.name, download.mime_type, download.size) == (
                name,
                mime_type,
                len(data),
            )
            assert await download.read() == data
            parts = [chunk async for chunk in download.iter_bytes(7)]
            assert b"".join(parts) == data
            assert all(len(part) <= 7 for part in parts)
    folder = basedir / group["workflow"] / "groups"
    assert await stored_files(folder) == sorted(f"{group['id']}/files/{h['id']}" for h in handles)


async def test_delete_file_removes_it_after_commit(
    factory: LocalAPIFactory, group: dict[str, Any], basedir: Path, count_rows: Callable[..., Any]
) -> None:
    async with factory(user_id=group["user"]) as api:
        keep = await api.uploads().upload_file(group["id"], b"keep", "keep.txt")
        gone = await api.uploads().upload_file(group["id"], b"gone", "gone.txt")
    path = anyio.Path(basedir, group["workflow"], "groups", group["id"], "files", gone["id"])
    with pytest.raises(RuntimeError):
        async with factory(user_id=group["user"]) as api:
            await api.uploads().delete_file(group["id"], gone["id"])
            raise RuntimeError("boom")
    assert await path.read_bytes() == b"gone"
    async with factory(user_id=group["user"]) as api:
        await api.uploads().delete_file(group["id"], gone["id"])
        assert await path.is_file()
    assert not await path.exists()
    assert await count_rows(UploadedFile) == 1
    async with factory(user_id=group["user"]) as api:
        assert (await api.uploads().list_uploaded_files(group["id"]))["files"] == [keep]
    for call in ("get_uploaded_file", "delete_file"):
        with pytest.raises(UnknownFileError, match=gone["id"]):
            async with factory(user_id=group["user"]) as api:
                await getattr(api.uploads(), call)(group["id"], gone["id"])


async def test_failed_block_leaves_no_upload(
    factory: LocalAPIFactory, group: dict[str, Any], basedir: Path, count_rows: Callable[..., Any]
) -> None:
    before = await stored_files(basedir)
    with pytest.raises(RuntimeError):
        async with factory(user_id=group["user"]) as api:
            await api.uploads().upload_file(group["id"], b"data", "a.txt")
            await api.uploads().upload_file(group["id"], chunks(b"more"), "b.txt")
            raise RuntimeError("boom")
    assert await count_rows(UploadedFile) == 0
    assert await stored_files(basedir) == before


async def dropped_connection() -> AsyncIterator[bytes]:
    yield b"first part"
    await anyio.sleep(0)
    raise ConnectionResetError(104, "Connection reset by peer")


async def test_interrupted_stream_says_so_and_leaves_nothing(
    factory: LocalAPIFactory, group: dict[str, Any], basedir: Path, count_rows: Callable[..., Any]
) -> None:
    before = await stored_files(basedir)
    with pytest.raises(FlowservError) as caught:
        async with factory(user_id=group["user"]) as api:
            await api.uploads().upload_file(group["id"], dropped_connection(), "data.csv")
    assert type(caught.value) is FlowservError
    assert caught.value.message == (
        "'data.csv' was not stored: the upload was interrupted (Connection reset by peer)"
    )
    assert isinstance(caught.value.__cause__, ConnectionResetError)
    assert await count_rows(UploadedFile) == 0
    assert await stored_files(basedir) == before


@pytest.mark.parametrize(
    "name",
    ["invoice\u202etxt.exe", "a\u200bb.txt", "line\u2028break.txt", "\ufeffbom.txt", "x\u2066.csv"],
    ids=["rtl-override", "zero-width-space", "line-separator", "bom", "isolate"],
)
async def test_deceptive_upload_names_are_refused(
    factory: LocalAPIFactory,
    group: dict[str, Any],
    basedir: Path,
    count_rows: Callable[..., Any],
    name: str,
) -> None:
    before = await stored_files(basedir)
    with pytest.raises(InvalidArgumentError, match="invisible or direction-changing"):
        async with factory(user_id=group["user"]) as api:
            await api.uploads().upload_file(group["id"], b"x", name)
    assert await count_rows(UploadedFile) == 0
    assert await stored_files(basedir) == before


async def test_names_in_any_script_are_accepted(
    factory: LocalAPIFactory, group: dict[str, Any]
) -> None:
    names = ["Größe.txt", "数据/表.csv", "ملف.txt", "naïve café.md", "emoji-🎉.txt"]
    async with factory(user_id=group["user"]) as api:
        for name in names:
            await api.uploads().upload_file(group["id"], b"x", name)
        listed = await api.uploads().list_uploaded_files(group["id"])
    assert [f["name"] for f in listed["files"]] == names


@pytest.mark.parametrize(
    "content",
    [b"x" * 11, [b"x" * 6, b"x" * 5], "local", "file"],
    ids=["bytes", "stream", "path", "file"],
)
async def test_size_limit(
    make_factory: Callable[..., LocalAPIFactory],
    group: dict[str, Any],
    basedir: Path,
    tmp_path: Path,
    count_rows: Callable[..., Any],
    content: Any,
) -> None:
    factory = make_factory({"FLOWSERV_MAX_UPLOAD_SIZE": "10"})
    local = anyio.Path(tmp_path / "big.bin")
    await local.write_bytes(b"x" * 11)
    before = await stored_files(basedir)
    async with factory(user_id=group["user"]) as api:
        fits = await api.uploads().upload_file(group["id"], b"x" * 10, "fits.bin")
    assert fits["size"] == 10
    if content == "local":
        content = str(local)
    elif content == "file":
        content = io.BytesIO(b"x" * 11)
    elif isinstance(content, list):
        content = chunks(*content)
    with pytest.raises(ConstraintViolationError, match=r"^file 'big\.bin' exceeds .* 10 bytes$"):
        async with factory(user_id=group["user"]) as api:
            await api.uploads().upload_file(group["id"], content, "big.bin")
    assert await count_rows(UploadedFile) == 1
    prefix = f"{group['workflow']}/groups/{group['id']}/files/"
    assert await stored_files(basedir) == sorted([*before, prefix + fits["id"]])


@pytest.mark.parametrize("database", ["sqlite"], indirect=True)
async def test_streamed_upload_is_not_buffered(
    factory: LocalAPIFactory, group: dict[str, Any], basedir: Path
) -> None:
    chunk = b"\x5a" * (1024 * 1024)
    count = 200

    async def stream() -> AsyncIterator[bytes]:
        for _ in range(count):
            yield chunk

    gc.collect()
    tracemalloc.start()
    try:
        start, _ = tracemalloc.get_traced_memory()
        async with factory(user_id=group["user"]) as api:
            handle = await api.uploads().upload_file(group["id"], stream(), "big.bin")
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert handle["size"] == count * len(chunk)
    assert peak - start < 50 * 1024 * 1024
    path = anyio.Path(basedir, group["workflow"], "groups", group["id"], "files", handle["id"])
    assert (await path.stat()).st_size == count * len(chunk)
