"""The ``flowserv-async`` command: root group, error handling, ``init`` and ``config``."""

from __future__ import annotations

import dataclasses
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import anyio
import click
from sqlalchemy import inspect
from sqlalchemy.exc import SQLAlchemyError

from flowserv_async import examples as bundled_examples
from flowserv_async.cli._context import EXIT_INTERRUPTED, CLIContext, CLIError, json_option
from flowserv_async.cli.groups import files, groups
from flowserv_async.cli.render import Output
from flowserv_async.cli.run import run
from flowserv_async.cli.runs import runs
from flowserv_async.cli.serve import serve
from flowserv_async.cli.users import users
from flowserv_async.cli.workflows import workflows
from flowserv_async.db import DB
from flowserv_async.db.models import Base
from flowserv_async.errors import FlowservError
from flowserv_async.template.manifest import MANIFEST_FILES
from flowserv_async.version import __version__

PROG_NAME = "flowserv-async"
EXIT_USAGE = 2


def _single(group: BaseExceptionGroup[Any]) -> BaseException:
    """The error to report for an exception group that a task group raised."""
    leaves: list[BaseException] = []

    def collect(exc: BaseException) -> None:
        if isinstance(exc, BaseExceptionGroup):
            for inner in exc.exceptions:
                collect(inner)
        else:
            leaves.append(exc)

    collect(group)
    for kind in (KeyboardInterrupt, FlowservError, click.ClickException):
        for leaf in leaves:
            if isinstance(leaf, kind):
                return leaf
    return leaves[0] if len(leaves) == 1 else group


class FlowservCLI(click.Group):
    """The root group: turns every failure into one line on stderr and an exit code.

    Exit codes: 0 success, 1 an error (``error: <message>``; a run that ends in ERROR or
    CANCELED), 2 bad usage, 128 + the signal when interrupted (130 SIGINT, 143
    SIGTERM, 129 SIGHUP).
    """

    def main(
        self,
        args: Sequence[str] | None = None,
        prog_name: str | None = None,
        complete_var: str | None = None,
        standalone_mode: bool = True,
        **extra: Any,
    ) -> Any:
        """Run the command; exit with its status (return it when not standalone)."""
        code = self._invoke_main(args, prog_name, complete_var, **extra)
        if standalone_mode:
            sys.exit(code)
        return code

    def _invoke_main(
        self,
        args: Sequence[str] | None,
        prog_name: str | None,
        complete_var: str | None,
        **extra: Any,
    ) -> int:
        try:
            try:
                result = super().main(
                    args, prog_name or PROG_NAME, complete_var, standalone_mode=False, **extra
                )
            except BaseExceptionGroup as group:
                raise _single(group) from None
        except click.UsageError as exc:
            hint = f" (see '{exc.ctx.command_path} --help')" if exc.ctx is not None else ""
            click.echo(f"error: {exc.format_message()}{hint}", err=True)
            return EXIT_USAGE
        except CLIError as exc:
            exc.show()
            return exc.exit_code
        except click.ClickException as exc:
            click.echo(f"error: {exc.format_message()}", err=True)
            return exc.exit_code
        except click.Abort as exc:
            if isinstance(exc.__cause__, KeyboardInterrupt):
                click.echo("error: interrupted", err=True)
                return EXIT_INTERRUPTED
            click.echo("error: aborted", err=True)
            return 1
        except KeyboardInterrupt:
            click.echo("error: interrupted", err=True)
            return EXIT_INTERRUPTED
        except FlowservError as exc:
            click.echo(f"error: {exc.message}", err=True)
            return 1
        return result if isinstance(result, int) else 0


@click.group(cls=FlowservCLI, context_settings={"help_option_names": ["-h", "--help"]})
@click.option(
    "--basedir",
    type=click.Path(file_okay=False, path_type=Path),
    envvar="FLOWSERV_API_DIR",
    show_envvar=True,
    help="Base folder of the database and the file store"
    " [default: FLOWSERV_API_DIR, else the user's cache folder for flowserv_async].",
)
@click.option(
    "--json",
    "json_output",
    is_flag=True,
    help="Print results as one JSON document (also accepted after a command).",
)
@click.version_option(__version__, "--version", prog_name=PROG_NAME)
@click.pass_context
def cli(ctx: click.Context, basedir: Path | None, json_output: bool) -> None:
    """Run reproducible workflows locally with flowserv-async.

    Everything lives in one base folder: an SQLite database (unless FLOWSERV_DATABASE
    names another) and the file store. The CLI is a local single-user tool, so it uses
    the open access policy (FLOWSERV_AUTH=open) unless the environment sets
    FLOWSERV_AUTH. 'users login' keeps a token in <basedir>/cli.json (mode 0600) that
    later commands use; FLOWSERV_ACCESS_TOKEN in the environment wins over it. Other
    FLOWSERV_* variables are read from the environment as by the library.

    Quick start: 'flowserv-async init', then
    'flowserv-async run <workflow folder> --file names=<file> --arg greeting=Hi'.

    Exit status: 0 success; 1 an error, or a run that ended in ERROR or CANCELED;
    2 bad usage; 130 interrupted (Ctrl-C cancels the active run first).
    """
    ctx.obj = CLIContext.from_option(basedir, json_output)


# -- init ------------------------------------------------------------------------------


def _shown(url: str) -> str:
    return DB(url).url.render_as_string(hide_password=True)


async def _has_schema(url: str) -> bool:
    db = DB(url)
    try:
        async with db.engine.connect() as conn:
            names = await conn.run_sync(lambda sync: inspect(sync).get_table_names())
    except (OSError, SQLAlchemyError) as exc:
        raise CLIError(f"cannot open database {_shown(url)}: {exc}") from exc
    finally:
        await db.dispose()
    return bool(set(names) & set(Base.metadata.tables))


async def _create_database(url: str, erase: bool) -> None:
    db = DB(url)
    try:
        if erase:
            await db.init()
        else:
            await db.create_schema()
    except (OSError, SQLAlchemyError) as exc:
        raise CLIError(f"cannot initialise database {_shown(url)}: {exc}") from exc
    finally:
        with anyio.CancelScope(shield=True):
            await db.dispose()


@cli.command()
@click.option("--force", is_flag=True, help="Erase an existing database without asking.")
@click.pass_obj
def init(obj: CLIContext, force: bool) -> None:
    """Create the base folder and the database.

    An existing database is erased only with --force, or after a confirmation when
    stdin is a terminal. Files of earlier workflows in the base folder are kept.
    """
    settings = obj.settings()
    try:
        obj.basedir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise CLIError(f"cannot create the base folder {obj.basedir}: {exc}") from exc
    url = settings.database or f"sqlite+aiosqlite:///{obj.basedir / 'flowserv.db'}"
    exists = obj.run(_has_schema, url)
    if exists and not force:
        if not sys.stdin.isatty():
            raise CLIError(f"database {_shown(url)} exists: use --force to erase it")
        click.confirm(f"Erase all data in {_shown(url)}?", abort=True)
    obj.run(_create_database, url, exists)
    out = Output(obj.json_output)
    doc = {"basedir": str(obj.basedir), "database": _shown(url), "erased": exists}
    if out.json_output:
        out.json(doc)
    else:
        verb = "erased and re-created" if exists else "created"
        out.line("database ", (_shown(url), "bold"), f" {verb} in ", str(obj.basedir))


# -- config ----------------------------------------------------------------------------


@cli.command()
@json_option
@click.pass_obj
def config(obj: CLIContext) -> None:
    """Show the effective settings (environment plus the CLI's defaults)."""
    settings = obj.settings()
    doc: dict[str, Any] = {}
    for field in dataclasses.fields(settings):
        value = getattr(settings, field.name)
        if field.name == "access_token" and value is not None:
            value = "(set)"
        doc[field.name] = str(value) if isinstance(value, Path) else value
    if doc["database"] is None:
        doc["database"] = f"sqlite+aiosqlite:///{settings.api_dir / 'flowserv.db'}"
    doc["token_file"] = str(obj.token_file)
    out = Output(obj.json_output)
    if out.json_output:
        out.json(doc)
    else:
        out.table(["setting", "value"], doc.items())


# -- examples --------------------------------------------------------------------------


@cli.command()
@json_option
@click.pass_obj
def examples(obj: CLIContext) -> None:
    """List the workflow templates bundled with the package (for 'run' and 'install')."""
    root = Path(bundled_examples.__file__).parent
    found = [
        {"name": path.name, "path": str(path)}
        for path in sorted(root.iterdir())
        if path.is_dir() and any((path / name).is_file() for name in MANIFEST_FILES)
    ]
    out = Output(obj.json_output)
    if out.json_output:
        out.json({"examples": found})
    else:
        out.table(["name", "path"], [(e["name"], e["path"]) for e in found])


cli.add_command(workflows)
cli.add_command(groups)
cli.add_command(files)
cli.add_command(run)
cli.add_command(runs)
cli.add_command(users)
cli.add_command(serve)


def main() -> None:
    """Entry point of the ``flowserv-async`` script."""
    cli.main(prog_name=PROG_NAME)
