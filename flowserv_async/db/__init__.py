"""Async database: engine, sessions and ORM models."""

from flowserv_async.db.database import DB, async_url, init_db

__all__ = ["DB", "async_url", "init_db"]
