"""``flowserv-async serve``: the REST API on uvicorn (needs the ``server`` extra)."""

from __future__ import annotations

import os
from typing import Any

import anyio
import click

from flowserv_async._util import freeze_startup_heap
from flowserv_async.cli._context import CLIContext, CLIError
from flowserv_async.config import (
    DATABASE_QUEUE,
    FLOWSERV_API_DIR,
    FLOWSERV_API_HOST,
    FLOWSERV_API_PORT,
    FLOWSERV_RUN_QUEUE,
    Settings,
    merge_env,
)
from flowserv_async.db import init_db
from flowserv_async.db.database import async_url


async def _create_schema(env: dict[str, Any]) -> None:
    db = await init_db(dict(env))
    await db.dispose()


def _check_shared(settings: Settings) -> None:
    """Refuse settings under which several worker processes would not act as one service.

    Each worker executes runs; only through the database queue does a cancel reach the
    worker that executes the run, and only PostgreSQL has it.
    """
    if settings.database is None or async_url(settings.database).get_backend_name() != "postgresql":
        raise CLIError("serve --workers above 1 needs PostgreSQL: set FLOWSERV_DATABASE")
    if settings.run_queue != DATABASE_QUEUE:
        raise CLIError(
            f"serve --workers above 1 needs {FLOWSERV_RUN_QUEUE}={DATABASE_QUEUE}"
            f" (it is {settings.run_queue}): runs are shared through the database"
        )


def served_app() -> Any:
    """The app that each ``serve`` worker runs: :func:`create_app` on a frozen start-up heap.

    ``serve`` is an application, so it may make the process-wide choice that the library
    leaves to its users (see :func:`flowserv_async._util.freeze_startup_heap`).
    """
    from flowserv_async.server import create_app

    app = create_app()
    freeze_startup_heap()
    return app


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
    FLOWSERV_AUTH=open is set. The URL of the API is printed on start. Several workers
    need PostgreSQL (FLOWSERV_DATABASE): they share runs through the database queue
    (FLOWSERV_RUN_QUEUE=database, set for them unless given).
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
    if workers > 1:
        os.environ.setdefault(FLOWSERV_RUN_QUEUE, DATABASE_QUEUE)
    env = merge_env()
    settings = Settings.from_env(env)
    if workers > 1:
        _check_shared(settings)
    try:
        obj.basedir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise CLIError(f"cannot create the base folder {obj.basedir}: {exc}") from exc
    # Once, before the workers start, so that they do not race to create it.
    anyio.run(_create_schema, env)
    click.echo(f"flowserv REST API at {settings.api_url}/ (docs: {settings.api_url}/docs)")
    uvicorn.run(
        "flowserv_async.cli.serve:served_app",
        factory=True,
        host=host,
        port=port,
        workers=workers,
        # The engine's descriptors are safe under uvloop (tests/engine/
        # test_process_uvloop.py), but uvloop measured no cheaper per request here, and
        # two of four 384-run HTTP sessions against serve on uvloop saw a client
        # ReadError that asyncio's loop did not give and that is not explained yet.
        loop="asyncio",
        log_level="warning",
    )
