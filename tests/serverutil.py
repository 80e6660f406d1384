"""Constants and helpers of the server tests (imported by tests and their conftest)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import anyio
from sqlalchemy import func, select

import flowserv_async.examples
from flowserv_async import LocalAPIFactory

HELLOWORLD = Path(flowserv_async.examples.__file__).parent / "helloworld"
API_PATH = "/flowserv/api/v1"
BASE_URL = f"http://testserver{API_PATH}"

Login = Callable[..., Awaitable[tuple[str, dict[str, str]]]]


async def count_rows(factory: LocalAPIFactory, model: Any) -> int:
    """The number of rows of an ORM model's table."""
    async with factory.db.session() as session:
        return int(await session.scalar(select(func.count()).select_from(model)) or 0)


async def stored_files(folder: Path) -> list[str]:
    """Every file below ``folder`` (relative paths), read off the event loop."""

    def walk() -> list[str]:
        return sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file())

    return await anyio.to_thread.run_sync(walk)
