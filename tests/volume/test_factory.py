from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import anyio
import pytest

from flowserv_async.errors import InvalidConfigurationError
from flowserv_async.volume import FileSystemVolume, volume_from_spec


async def test_dict_spec(tmp_path: Path) -> None:
    spec = {"type": "fs", "id": "main", "args": {"basedir": str(tmp_path / "files")}}
    volume = await volume_from_spec(spec)
    assert isinstance(volume, FileSystemVolume)
    assert volume.identifier == "main"
    assert volume.basedir == tmp_path / "files"
    assert volume.to_dict() == spec


async def test_dict_spec_without_id_gets_a_new_identifier(tmp_path: Path) -> None:
    volume = await volume_from_spec({"type": "fs", "args": {"basedir": str(tmp_path)}})
    assert isinstance(volume.identifier, str)
    assert volume.identifier


@pytest.mark.parametrize("as_path", [False, True])
async def test_folder_path(tmp_path: Path, as_path: bool) -> None:
    folder = tmp_path / "store"
    volume = await volume_from_spec(folder if as_path else str(folder))
    assert isinstance(volume, FileSystemVolume)
    assert volume.basedir == folder
    await volume.store("a", b"1")
    assert await anyio.Path(folder / "a").read_bytes() == b"1"


async def test_existing_folder_path(tmp_path: Path) -> None:
    volume = await volume_from_spec(tmp_path)
    assert isinstance(volume, FileSystemVolume)
    assert volume.basedir == tmp_path


async def test_json_spec_file(tmp_path: Path) -> None:
    spec = {"type": "fs", "id": "j", "args": {"basedir": str(tmp_path / "files")}}
    path = tmp_path / "volume.json"
    await anyio.Path(path).write_text(json.dumps(spec))
    volume = await volume_from_spec(str(path))
    assert isinstance(volume, FileSystemVolume)
    assert (volume.identifier, volume.basedir) == ("j", tmp_path / "files")


@pytest.mark.parametrize("name", ["volume.yaml", "volume.yml", "volume.conf"])
async def test_yaml_spec_file_with_relative_basedir(tmp_path: Path, name: str) -> None:
    path = tmp_path / "config" / name
    await anyio.Path(path.parent).mkdir()
    await anyio.Path(path).write_text("type: fs\nid: y\nargs:\n  basedir: ../files\n")
    volume = await volume_from_spec(path)
    assert isinstance(volume, FileSystemVolume)
    assert volume.identifier == "y"
    assert volume.basedir == tmp_path / "config" / ".." / "files"


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ({"type": "gcs", "args": {"basedir": "x"}}, "unknown volume type 'gcs'"),
        ({"type": "s3", "args": {"basedir": "x"}}, "unknown args basedir"),
        ({"type": "s3", "args": {}}, "invalid volume bucket None"),
        ({"type": "s3", "args": {"bucket": ""}}, "invalid volume bucket ''"),
        ({"type": "s3", "args": {"bucket": "b", "region": 1}}, "invalid volume region 1"),
        ({"type": "s3", "args": {"bucket": "b", "prefix": "../x"}}, "'..' is not allowed"),
        ({"type": None, "args": {"basedir": "x"}}, "unknown volume type None"),
        ({"args": {"basedir": "x"}}, "missing 'type'"),
        ({"type": "fs", "args": {"basedir": "x"}, "extra": 1}, "unknown keys extra"),
        ({"type": "fs"}, "'args' must be an object"),
        ({"type": "fs", "args": ["basedir", "x"]}, "'args' must be an object"),
        ({"type": "fs", "args": {"basedir": "x", "bucket": "b"}}, "unknown args bucket"),
        ({"type": "fs", "args": {}}, "invalid volume basedir None"),
        ({"type": "fs", "args": {"basedir": ""}}, "invalid volume basedir ''"),
        ({"type": "fs", "args": {"basedir": 42}}, "invalid volume basedir 42"),
        ({"type": "fs", "id": 7, "args": {"basedir": "x"}}, "invalid volume id 7"),
        ({"type": "fs", "id": "", "args": {"basedir": "x"}}, "invalid volume id ''"),
    ],
)
async def test_malformed_dict_spec(spec: dict[str, Any], message: str) -> None:
    with pytest.raises(InvalidConfigurationError) as info:
        await volume_from_spec(spec)
    assert type(info.value) is InvalidConfigurationError
    assert message in info.value.message


@pytest.mark.parametrize(
    ("name", "text", "message"),
    [
        ("bad.json", '{"type": "fs", ', "invalid JSON in volume spec file"),
        ("bad.yaml", "type: [fs\n", "invalid YAML in volume spec file"),
        ("list.json", '["fs"]', "expected an object, got list"),
        ("empty.yaml", "", "expected an object, got NoneType"),
        ("s3.yaml", "type: s3\nargs: {bucket: b, acl: x}\n", "unknown args acl"),
    ],
)
async def test_malformed_spec_file(tmp_path: Path, name: str, text: str, message: str) -> None:
    path = tmp_path / name
    await anyio.Path(path).write_text(text)
    with pytest.raises(InvalidConfigurationError) as info:
        await volume_from_spec(path)
    assert message in info.value.message
    assert str(path) in info.value.message


async def test_spec_file_that_is_not_utf8(tmp_path: Path) -> None:
    path = tmp_path / "volume.yaml"
    await anyio.Path(path).write_bytes(b"\xff\xfe\x00type")
    with pytest.raises(InvalidConfigurationError, match="cannot read volume spec file"):
        await volume_from_spec(path)


@pytest.mark.parametrize("name", ["missing.json", "missing.yaml", "missing.YML"])
async def test_missing_spec_file(tmp_path: Path, name: str) -> None:
    with pytest.raises(InvalidConfigurationError, match=f"'{tmp_path / name}' does not exist"):
        await volume_from_spec(tmp_path / name)


async def test_empty_path() -> None:
    with pytest.raises(InvalidConfigurationError, match="empty path"):
        await volume_from_spec("")


async def test_s3_dict_spec() -> None:
    from flowserv_async.volume.s3 import S3Volume

    spec = {
        "type": "s3",
        "id": "shared",
        "args": {"bucket": "runs", "prefix": "a/b", "endpoint_url": "http://x", "region": "r"},
    }
    async with await volume_from_spec(spec) as volume:
        assert isinstance(volume, S3Volume)
        assert (volume.bucket, volume.prefix, volume.identifier) == ("runs", "a/b", "shared")
        assert volume.to_dict() == spec


async def test_s3_yaml_spec_file_with_defaults(tmp_path: Path) -> None:
    path = tmp_path / "store.yaml"
    await anyio.Path(path).write_text("type: s3\nargs:\n  bucket: runs\n")
    async with await volume_from_spec(path) as volume:
        assert volume.to_dict()["args"] == {"bucket": "runs", "prefix": ""}
