"""What only the ``s3`` volume has: object names under a prefix, paging, errors, closing.

The volume contract itself is tested on every volume type in ``test_volume.py``.
"""

from __future__ import annotations

import anyio
import pytest
from s3util import BUCKET, MotoS3

from flowserv_async.errors import FlowservError, UnknownFileError
from flowserv_async.volume import s3 as s3_module
from flowserv_async.volume.s3 import S3Volume


def make_volume(server: MotoS3, prefix: str = "store", bucket: str = BUCKET) -> S3Volume:
    args = server.args(prefix)
    return S3Volume(
        bucket, args["prefix"], endpoint_url=args["endpoint_url"], region=args["region"]
    )


async def test_keys_live_under_the_prefix_and_other_objects_stay(s3: MotoS3) -> None:
    async with make_volume(s3, "a/b") as volume, make_volume(s3, "a/bc") as neighbour:
        await volume.store("x/1", b"1")
        await neighbour.store("x/2", b"2")
        assert await anyio.to_thread.run_sync(s3.contents) == ["a/b/x/1", "a/bc/x/2"]
        assert await volume.walk() == ["x/1"]
        await volume.erase()
        assert await anyio.to_thread.run_sync(s3.contents) == ["a/bc/x/2"]
        assert await neighbour.load("x/2") == b"2"


async def test_a_volume_without_prefix_uses_the_whole_bucket(s3: MotoS3) -> None:
    async with make_volume(s3, "") as volume:
        await volume.store("top/file", b"1")
        assert await anyio.to_thread.run_sync(s3.contents) == ["top/file"]
        assert await volume.walk() == ["top/file"]


async def test_walk_and_delete_page_through_many_keys(
    s3: MotoS3, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(s3_module, "LIST_PAGE", 2)
    monkeypatch.setattr(s3_module, "DELETE_BATCH", 3)
    keys = sorted(f"runs/1/f{index}" for index in range(8))
    async with make_volume(s3) as volume:
        for key in keys:
            await volume.store(key, b"x")
        await volume.store("runs/2/keep", b"y")
        assert await volume.walk("runs/1") == keys
        await volume.delete("runs/1")
        assert await volume.walk() == ["runs/2/keep"]
        assert await anyio.to_thread.run_sync(s3.contents) == ["store/runs/2/keep"]


async def test_a_missing_bucket_is_a_flowserv_error(s3: MotoS3) -> None:
    async with make_volume(s3, bucket="no-such-bucket") as volume:
        with pytest.raises(FlowservError, match="cannot write 'k'") as info:
            await volume.store("k", b"1")
        assert type(info.value) is FlowservError
        with pytest.raises(FlowservError, match="cannot read") as info:
            await volume.walk()
        assert not isinstance(info.value, UnknownFileError)


async def test_a_closed_volume_refuses_use(s3: MotoS3) -> None:
    volume = make_volume(s3)
    await volume.store("k", b"1")
    await volume.aclose()
    with pytest.raises(FlowservError, match="is closed"):
        await volume.load("k")
    await volume.aclose()


def test_an_empty_bucket_name_is_refused() -> None:
    with pytest.raises(FlowservError, match="invalid S3 bucket"):
        S3Volume("")
