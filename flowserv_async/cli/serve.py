"""``flowserv-async serve``: the REST API on uvicorn (needs the ``server`` extra)."""

from __future__ import annotations

import os
from typing import Any

import anyio
import click

from flowserv_async.cli._context import CLIContext, CLIError
from flowserv_async.config import (
    FLOWSERV_API_DIR,
    FLOWSERV_API_HOST,
    FLOWSERV_API_PORT,
    Settings,
    merge_env,
)
from flowserv_async.db import init_db


async def _create_schema(env: dict[str, Any]) -> None:
    db = await init_db(dict(env))
    await db.dispose()


@click.command()
@click.option("--host", default="127.0.0.1", show_default=True, help="Interface to listen on.")
@click.option("--port", default=5000, show_default=True, type=click.IntRange(1, 65535))
@click.option(
    "--workers", default=1, show_default=True, type=click.IntRange(min=1), help="Processes."
)
@click.pass_obj
def serve(obj: CLIContext, host: str, port: int, workers: int) -> None:
    """Serve flowserv's REST API over HTTP (SQLite and files in the base folder).

    Unlike the other commands, the server uses token authentication unless
    FLOWSERV_AUTH=open is set. The URL of the API is printed on start.
    """
    try:
        import uvicorn  # the optional 'server' extra
    except ImportError as exc:
        raise CLIError(
            "serve needs the 'server' extra: pip install 'flowserv-async[server]'"
        ) from exc
    # The workers are new processes: they read their configuration from the environment.
    os.environ[FLOWSERV_API_DIR] = str(obj.basedir)
    os.environ.setdefault(FLOWSERV_API_HOST, "localhost" if host == "127.0.0.1" else host)
    os.environ.setdefault(FLOWSERV_API_PORT, str(port))
    env = merge_env()
    settings = Settings.from_env(env)
    try:
        obj.basedir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise CLIError(f"cannot create the base folder {obj.basedir}: {exc}") from exc
    # Once, before the workers start, so that they do not race to create it.
    anyio.run(_create_schema, env)
    click.echo(f"flowserv REST API at {settings.api_url}/ (docs: {settings.api_url}/docs)")
    uvicorn.run(
        "flowserv_async.server:create_app",
        factory=True,
        host=host,
        port=port,
        workers=workers,
        log_level="warning",
    )
