from __future__ import annotations

import os
from pathlib import Path

import anyio
import pytest

from flowserv_async.errors import ConstraintViolationError, UnknownFileError
from flowserv_async.volume import FileSystemVolume, StoreData

from .conftest import Tree


def _make_template(root: Path) -> None:
    """A template source folder: spec, code, data and instructions."""
    for name, content in {
        "flowserv.yaml": b"name: demo",
        "code/run.py": b"print(1)",
        "code/lib/util.py": b"X = 1",
        "data/names.txt": b"alice\nbob",
        "instructions.md": b"# Demo",
    }.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(content)


@pytest.fixture
def source(tmp_path: Path) -> Path:
    root = tmp_path / "template"
    _make_template(root)
    return root


async def read_local(path: Path) -> bytes:
    return await anyio.Path(path).read_bytes()


# -- copy_from_local -----------------------------------------------------------------


async def test_copy_from_local_copies_the_whole_folder(
    volume: FileSystemVolume, source: Path
) -> None:
    keys = await volume.copy_from_local(source, "wf1/static")
    expected = [
        "wf1/static/code/lib/util.py",
        "wf1/static/code/run.py",
        "wf1/static/data/names.txt",
        "wf1/static/flowserv.yaml",
        "wf1/static/instructions.md",
    ]
    assert keys == expected
    assert await volume.walk("wf1/static") == expected
    assert await volume.load("wf1/static/code/lib/util.py") == b"X = 1"


async def test_copy_from_local_copies_listed_files_to_their_targets(
    volume: FileSystemVolume, source: Path
) -> None:
    files: list[tuple[str, str | None]] = [
        ("data/names.txt", None),
        ("code", "src"),
        ("instructions.md", "docs/README.md"),
    ]
    keys = await volume.copy_from_local(source, "wf1/static", files)
    assert keys == [
        "wf1/static/data/names.txt",
        "wf1/static/src/lib/util.py",
        "wf1/static/src/run.py",
        "wf1/static/docs/README.md",
    ]
    assert await volume.load("wf1/static/docs/README.md") == b"# Demo"


async def test_copy_from_local_into_the_volume_root(volume: FileSystemVolume, source: Path) -> None:
    assert await volume.copy_from_local(source, files=[("code/run.py", "run.py")]) == ["run.py"]


@pytest.mark.parametrize(
    "files",
    [
        [("../outside.txt", None)],
        [("code/../../outside.txt", None)],
        [("/etc/hostname", None)],
        [("data/names.txt", "../escaped.txt")],
        [("data/names.txt", "/abs.txt")],
        [("data/names.txt", None), ("code", "a/../../b")],
        [("data\\names.txt", None)],
    ],
)
async def test_copy_from_local_refuses_paths_leaving_source_or_target(
    volume: FileSystemVolume,
    source: Path,
    tmp_path: Path,
    basedir: Path,
    tree: Tree,
    files: list[tuple[str, str | None]],
) -> None:
    await anyio.Path(tmp_path / "outside.txt").write_bytes(b"outside")
    with pytest.raises(ConstraintViolationError):
        await volume.copy_from_local(source, "wf1/static", files)
    assert await tree(basedir) == []


def _link(target: Path, link: Path) -> None:
    os.symlink(target, link)


@pytest.mark.parametrize("link_to_folder", [False, True])
async def test_copy_from_local_refuses_symlinks_leaving_the_source(
    volume: FileSystemVolume,
    source: Path,
    tmp_path: Path,
    basedir: Path,
    tree: Tree,
    link_to_folder: bool,
) -> None:
    outside = tmp_path / "outside"
    await anyio.Path(outside).mkdir()
    await anyio.Path(outside / "secret.txt").write_bytes(b"secret")
    target = outside if link_to_folder else outside / "secret.txt"
    await anyio.to_thread.run_sync(_link, target, source / "data" / "link")
    with pytest.raises(ConstraintViolationError, match="'data/link' leaves the folder"):
        await volume.copy_from_local(source, "wf1/static")
    with pytest.raises(ConstraintViolationError, match="leaves the folder"):
        await volume.copy_from_local(source, "wf1/static", [("data", None)])
    with pytest.raises(ConstraintViolationError, match="'data/link' leaves the folder"):
        await volume.copy_from_local(source, "wf1/static", [("data/link", None)])
    assert await tree(basedir) == []


async def test_copy_from_local_follows_links_that_stay_inside(
    volume: FileSystemVolume, source: Path
) -> None:
    await anyio.to_thread.run_sync(_link, source / "data" / "names.txt", source / "alias.txt")
    await volume.copy_from_local(source, "s", [("alias.txt", None)])
    assert await volume.load("s/alias.txt") == b"alice\nbob"


async def test_copy_from_local_missing_source(
    volume: FileSystemVolume, source: Path, tmp_path: Path, basedir: Path, tree: Tree
) -> None:
    with pytest.raises(UnknownFileError, match=r"'results/missing\.json'"):
        await volume.copy_from_local(
            source, "runs/1", [("data/names.txt", None), ("results/missing.json", None)]
        )
    with pytest.raises(UnknownFileError, match="nowhere"):
        await volume.copy_from_local(tmp_path / "nowhere", "runs/1")
    assert await tree(basedir) == []


async def test_copy_from_local_refuses_special_files(
    volume: FileSystemVolume, source: Path, basedir: Path, tree: Tree
) -> None:
    await anyio.to_thread.run_sync(os.mkfifo, source / "data" / "pipe")
    with pytest.raises(ConstraintViolationError, match="'data/pipe' is not a regular file"):
        await volume.copy_from_local(source, "wf1/static")
    assert await tree(basedir) == []


class FailingVolume(FileSystemVolume):
    """Fails to store any key that contains ``fail``."""

    async def store(
        self, key: str, data: StoreData, *, max_size: int | None = None, name: str | None = None
    ) -> int:
        if "fail" in key:
            raise OSError("disk on fire")
        return await super().store(key, data, max_size=max_size, name=name)


async def test_copy_from_local_removes_copied_files_when_a_copy_fails(
    basedir: Path, source: Path, tree: Tree
) -> None:
    volume = FailingVolume(basedir)
    files: list[tuple[str, str | None]] = [("code", None), ("data/names.txt", "fail.txt")]
    with pytest.raises(OSError, match="disk on fire"):
        await volume.copy_from_local(source, "wf1/static", files)
    assert await volume.walk() == []


# -- copy_to_local -------------------------------------------------------------------


async def test_copy_to_local_copies_a_prefix(
    volume: FileSystemVolume, source: Path, tmp_path: Path, tree: Tree
) -> None:
    await volume.copy_from_local(source, "wf1/static")
    rundir = tmp_path / "run"
    written = await volume.copy_to_local(rundir, "wf1/static")
    assert written == [
        "code/lib/util.py",
        "code/run.py",
        "data/names.txt",
        "flowserv.yaml",
        "instructions.md",
    ]
    assert await tree(rundir) == await tree(source)
    assert await read_local(rundir / "code" / "run.py") == b"print(1)"


async def test_copy_to_local_copies_listed_files_to_their_targets(
    volume: FileSystemVolume, tmp_path: Path
) -> None:
    await volume.store("wf1/groups/g1/files/f1/upload.csv", b"a,b")
    await volume.store("wf1/static/code/x.py", b"x")
    rundir = tmp_path / "run"
    written = await volume.copy_to_local(
        rundir,
        "wf1",
        [("groups/g1/files/f1/upload.csv", "data/input.csv"), ("static/code", None)],
    )
    assert written == ["data/input.csv", "static/code/x.py"]
    assert await read_local(rundir / "data" / "input.csv") == b"a,b"
    assert await read_local(rundir / "static" / "code" / "x.py") == b"x"


async def test_copy_to_local_of_a_single_file_prefix_uses_its_name(
    volume: FileSystemVolume, tmp_path: Path
) -> None:
    await volume.store("a/b/result.json", b"{}")
    assert await volume.copy_to_local(tmp_path / "out", "a/b/result.json") == ["result.json"]
    assert await read_local(tmp_path / "out" / "result.json") == b"{}"


async def test_copy_to_local_missing_source(volume: FileSystemVolume, tmp_path: Path) -> None:
    with pytest.raises(UnknownFileError, match="'wf1/missing'"):
        await volume.copy_to_local(tmp_path / "run", "wf1", [("missing", "x")])


async def test_copy_to_local_refuses_targets_leaving_the_folder(
    volume: FileSystemVolume, tmp_path: Path, tree: Tree
) -> None:
    await volume.store("k", b"1")
    rundir, outside = tmp_path / "run", tmp_path / "outside"
    await anyio.Path(rundir).mkdir()
    await anyio.Path(outside).mkdir()
    await anyio.to_thread.run_sync(_link, outside, rundir / "link")
    with pytest.raises(ConstraintViolationError, match="'link/k' leaves the folder"):
        await volume.copy_to_local(rundir, files=[("k", "link/k")])
    with pytest.raises(ConstraintViolationError):
        await volume.copy_to_local(rundir, files=[("k", "../k")])
    assert await tree(outside) == []


async def test_stage_a_run_and_copy_its_outputs_back(
    volume: FileSystemVolume, source: Path, tmp_path: Path
) -> None:
    await volume.copy_from_local(source, "wf1/static")
    await volume.store("wf1/groups/g1/files/f1", b"uploaded")
    rundir = tmp_path / "tmp-run"
    await volume.copy_to_local(rundir, "wf1/static")
    await volume.copy_to_local(rundir, "wf1/groups/g1/files", [("f1", "data/upload.txt")])
    await anyio.Path(rundir / "results").mkdir()
    await anyio.Path(rundir / "results" / "out.json").write_bytes(b'{"ok": true}')
    keys = await volume.copy_from_local(rundir, "wf1/runs/r1", [("results/out.json", None)])
    assert keys == ["wf1/runs/r1/results/out.json"]
    assert await volume.load("wf1/runs/r1/results/out.json") == b'{"ok": true}'
    assert await read_local(rundir / "data" / "upload.txt") == b"uploaded"
