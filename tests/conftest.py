"""Shared fixtures.

Async tests run on anyio's asyncio backend (``anyio_mode = "auto"``), inside
``blockbuster`` (a blocking call on the event loop fails the test). Database tests run
on both backends: SQLite in ``tmp_path`` and PostgreSQL (``FLOWSERV_TEST_POSTGRES``,
default 127.0.0.1:5432/test), each test in a schema of its own. Without a reachable
PostgreSQL those tests are skipped with the reason shown, except under CI (``CI=true``),
where they fail.
"""

from __future__ import annotations

import inspect
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from blockbuster import BlockBuster
from blocking import blocking_guard
from dbutil import backend_database
from s3util import MotoS3, moto_s3

from flowserv_async import DB, LocalAPIFactory


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture(autouse=True)
def blockbuster(request: pytest.FixtureRequest) -> Iterator[BlockBuster | None]:
    """Fail an async test when anything blocks the event loop (file I/O, sleep, ...)."""
    if not inspect.iscoroutinefunction(getattr(request.node, "obj", None)):
        yield None
        return
    with blocking_guard() as bb:
        yield bb


@pytest.fixture(params=["sqlite", "postgres"])
async def database(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[DB]:
    """An empty database with the schema and the default user, on each backend."""
    async with backend_database(request.param, tmp_path) as db:
        yield db


@pytest.fixture
async def pg(tmp_path: Path) -> AsyncIterator[DB]:
    """An empty PostgreSQL schema, for the tests of that backend alone."""
    async with backend_database("postgres", tmp_path) as db:
        yield db


@pytest.fixture
def basedir(tmp_path: Path) -> Path:
    """The factory's base folder (file store and temporary run folders)."""
    path = tmp_path / "api"
    path.mkdir()
    return path


@pytest.fixture
async def make_factory(
    database: DB, basedir: Path
) -> AsyncIterator[Callable[..., LocalAPIFactory]]:
    """Create open-able factories on the test database; all are closed after the test."""
    factories: list[LocalAPIFactory] = []

    def make(env: dict[str, Any] | None = None, **kwargs: Any) -> LocalAPIFactory:
        config = {"FLOWSERV_API_DIR": str(basedir), "FLOWSERV_AUTH": "default"}
        config.update(env or {})
        factory = LocalAPIFactory(env=config, db=database, **kwargs)
        factories.append(factory)
        return factory

    yield make
    for factory in factories:
        await factory.aclose()


@pytest.fixture
async def factory(make_factory: Callable[..., LocalAPIFactory]) -> LocalAPIFactory:
    """An open factory under the default (token) policy."""
    f = make_factory()
    await f.open()
    return f


@pytest.fixture
def count_rows(database: DB) -> Callable[..., Any]:
    """Count the rows of a model (optionally filtered) in a fresh session."""
    from sqlalchemy import func, select

    async def count(model: Any, *where: Any) -> int:
        async with database.session() as session:
            stmt = select(func.count()).select_from(model).where(*where)
            return int((await session.execute(stmt)).scalar_one())

    return count


@pytest.fixture(scope="session")
def moto_server() -> Iterator[MotoS3]:
    """One moto S3 server for the whole session (see ``s3util``)."""
    with moto_s3() as server:
        yield server


@pytest.fixture
def s3(moto_server: MotoS3) -> MotoS3:
    """The moto S3 server, emptied, with an empty test bucket."""
    moto_server.reset()
    return moto_server
