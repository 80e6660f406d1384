"""Test databases on both backends (used by conftest and module-scoped fixtures).

PostgreSQL comes from ``FLOWSERV_TEST_POSTGRES`` (default 127.0.0.1:5432/test), one
schema per database. Without a reachable server the test is skipped with the reason
shown, except under CI (``CI=true``), where it fails.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import pytest
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError

from flowserv_async import DB

POSTGRES_URL = os.environ.get(
    "FLOWSERV_TEST_POSTGRES", "postgresql+asyncpg://postgres@127.0.0.1:5432/test"
)


@asynccontextmanager
async def backend_database(kind: str, folder: Path) -> AsyncIterator[DB]:
    """An empty database with the schema and the default user: ``sqlite`` or ``postgres``."""
    if kind == "sqlite":
        db = DB(f"sqlite+aiosqlite:///{folder / 'flowserv.db'}")
        await db.create_schema()
        try:
            yield db
        finally:
            await db.dispose()
        return
    schema = f"t_{uuid.uuid4().hex}"
    admin = DB(POSTGRES_URL)
    try:
        async with admin.engine.begin() as conn:
            await conn.execute(text(f'CREATE SCHEMA "{schema}"'))
    except (OSError, DBAPIError) as exc:
        await admin.dispose()
        message = f"PostgreSQL not reachable at {POSTGRES_URL}: {exc!r}"
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(message)
        pytest.skip(message)
    db = DB(POSTGRES_URL, connect_args={"server_settings": {"search_path": schema}})
    try:
        await db.create_schema()
        yield db
    finally:
        await db.dispose()
        async with admin.engine.begin() as conn:
            await conn.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
        await admin.dispose()
