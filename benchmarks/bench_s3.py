"""Upload and download throughput of the S3 volume (on moto) beside the fs volume.

Usage: python benchmarks/bench_s3.py [--large 4] [--large-mib 16] [--small 200] [--small-kib 10]

Stores ``--large`` files of ``--large-mib`` MiB (streamed in 1 MiB chunks, so S3 uses
multipart uploads) and ``--small`` files of ``--small-kib`` KiB, then reads them all back,
on an ``fs`` volume in a temporary folder and on an ``s3`` volume on a moto server
(``moto_server`` in a process of its own on 127.0.0.1, so that it does not share the
benchmark's interpreter). Prints the machine, the date, N and MiB/s (files/s for the
small files) side by side. moto keeps objects in memory: these numbers say what the
volume code costs, not what a real S3 endpoint delivers.
"""

from __future__ import annotations

import argparse
import os
import platform
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path

import anyio

from flowserv_async.volume import FileSystemVolume, StorageVolume
from flowserv_async.volume.s3 import S3Volume

MIB = 1024 * 1024
BUCKET = "bench"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def start_moto() -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    os.environ.update(
        AWS_ACCESS_KEY_ID="bench", AWS_SECRET_ACCESS_KEY="bench", AWS_DEFAULT_REGION="us-east-1"
    )
    moto = Path(sys.executable).parent / "moto_server"
    proc = subprocess.Popen(
        [str(moto), "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    for _ in range(100):
        try:
            urllib.request.urlopen(f"{url}/moto-api/", timeout=1).close()
            break
        except OSError:
            time.sleep(0.1)
    else:
        proc.kill()
        raise RuntimeError("moto_server did not start")
    request = urllib.request.Request(f"{url}/{BUCKET}", method="PUT")
    urllib.request.urlopen(request, timeout=10).close()
    return proc, url


async def stream(size: int, seed: int) -> AsyncIterator[bytes]:
    chunk = bytes([seed % 251]) * MIB
    left = size
    while left > 0:
        yield chunk[: min(MIB, left)]
        left -= MIB


async def timed(action: Callable[[], Awaitable[None]]) -> float:
    start = time.perf_counter()
    await action()
    return time.perf_counter() - start


async def measure(volume: StorageVolume, args: argparse.Namespace) -> dict[str, float]:
    large = args.large_mib * MIB
    small = args.small_kib * 1024
    payload = b"s" * small

    async def put_large() -> None:
        for index in range(args.large):
            await volume.store(f"large/{index}", stream(large, index))

    async def get_large() -> None:
        for index in range(args.large):
            async for _ in volume.iter_bytes(f"large/{index}", MIB):
                pass

    async def put_small() -> None:
        async with anyio.create_task_group() as tg:
            for index in range(args.small):
                tg.start_soon(volume.store, f"small/{index}", payload)

    async def get_small() -> None:
        async with anyio.create_task_group() as tg:
            for index in range(args.small):
                tg.start_soon(volume.load, f"small/{index}")

    total = args.large * large / MIB
    result = {
        "upload MiB/s (large)": total / await timed(put_large),
        "download MiB/s (large)": total / await timed(get_large),
        "upload files/s (small)": args.small / await timed(put_small),
        "download files/s (small)": args.small / await timed(get_small),
    }
    await volume.erase()
    return result


async def main(args: argparse.Namespace) -> None:
    proc, url = start_moto()
    try:
        with tempfile.TemporaryDirectory() as folder:
            fs = await measure(FileSystemVolume(Path(folder, "store")), args)
        async with S3Volume(BUCKET, "bench", endpoint_url=url, region="us-east-1") as volume:
            s3 = await measure(volume, args)
    finally:
        proc.terminate()
        proc.wait(timeout=10)
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores,")
    print(f"  Python {platform.python_version()}, load {os.getloadavg()[0]:.2f}")
    print(f"date: {datetime.now(UTC).isoformat(timespec='seconds')}")
    print(
        f"N: {args.large} x {args.large_mib} MiB (1 MiB chunks), "
        f"{args.small} x {args.small_kib} KiB (concurrent)"
    )
    print(f"{'metric':28} {'fs':>10} {'s3 (moto)':>10} {'fs/s3':>7}")
    for name, value in fs.items():
        print(f"{name:28} {value:10.1f} {s3[name]:10.1f} {value / s3[name]:7.1f}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--large", type=int, default=4)
    parser.add_argument("--large-mib", type=int, default=16)
    parser.add_argument("--small", type=int, default=200)
    parser.add_argument("--small-kib", type=int, default=10)
    anyio.run(main, parser.parse_args())
