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

import anyio.to_thread
import pytest
from sqlalchemy import func, select, text, update
from sqlalchemy.exc import DBAPIError

from flowserv_async import DB
from flowserv_async.db.models import Group, GroupMember, Run, UploadedFile, User, Workflow

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


def _snapshot_files(folder: Path) -> dict[str, bytes]:
    files = {}
    for dirpath, _, filenames in os.walk(folder):
        for name in filenames:
            if name.startswith("flowserv.db"):
                continue
            path = Path(dirpath, name)
            files[path.relative_to(folder).as_posix()] = path.read_bytes()
    return files


async def snapshot(database: DB, basedir: Path) -> tuple[dict[str, int], dict[str, bytes]]:
    """Row counts of the tables that a call could write, and the stored files."""
    counts = {}
    async with database.session() as s:
        for model in (Workflow, Group, GroupMember, UploadedFile, Run, User):
            stmt = select(func.count()).select_from(model)
            counts[model.__tablename__] = int((await s.execute(stmt)).scalar_one())
    return counts, await anyio.to_thread.run_sync(_snapshot_files, basedir)


async def make_admin(db: DB, user_id: str) -> None:
    """Set a user's ``is_admin`` flag (no API does: the operator sets it)."""
    async with db.write_session() as session:
        await session.execute(update(User).where(User.user_id == user_id).values(is_admin=True))
