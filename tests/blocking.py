"""The blocking-call guard of the async tests (blockbuster), with its few allowed calls."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from blockbuster import BlockBuster, blockbuster_ctx


@contextmanager
def blocking_guard(modules: str | None = None) -> Iterator[BlockBuster]:
    """Fail on calls that block a running event loop (made from ``modules`` only, if given)."""
    with blockbuster_ctx(modules) as bb:
        # SQLAlchemy normalises the SQLite file name when it creates an engine; for the
        # absolute paths used here that is string work, no disk access.
        bb.functions["os.path.abspath"].can_block_in(
            "sqlalchemy/dialects/sqlite/pysqlite.py", "create_connect_args"
        )
        # asyncpg looks for ~/.pgpass and client certificates when it opens a connection;
        # pooled connections are opened rarely, and that is a file stat, not a wait.
        for function in bb.functions.values():
            function.can_block_in("asyncpg/connect_utils.py", "_parse_connect_dsn_and_args")
        yield bb
