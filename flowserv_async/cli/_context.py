"""What every command needs: the base folder, the output mode, the stored login.

The CLI is a local, single-user tool: unless the environment sets ``FLOWSERV_AUTH``, it
runs under the open access policy. ``users login`` keeps the access token in
``<basedir>/cli.json`` (mode 0600); later commands use it as ``FLOWSERV_ACCESS_TOKEN``
unless the environment sets that variable.
"""

from __future__ import annotations

import json
import os
import signal
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import anyio
import click

from flowserv_async.config import (
    AUTH_OPEN,
    FLOWSERV_ACCESS_TOKEN,
    FLOWSERV_API_DIR,
    FLOWSERV_AUTH,
    Settings,
    default_api_dir,
    merge_env,
)
from flowserv_async.errors import UnknownWorkflowError, UnknownWorkflowGroupError
from flowserv_async.local import LocalAPIFactory

if TYPE_CHECKING:
    from flowserv_async.api import API

T = TypeVar("T")
F = TypeVar("F", bound=Callable[..., Any])

#: Name of the file in the base folder that keeps the login of ``users login``.
TOKEN_FILE = "cli.json"

#: Exit status of a command that was interrupted by SIGINT (128 + 2).
EXIT_INTERRUPTED = 128 + signal.SIGINT


class CLIError(click.ClickException):
    """A failure reported as one line ``error: <message>`` on stderr."""

    def show(self, file: Any = None) -> None:
        """Print ``error: <message>`` to stderr."""
        click.echo(f"error: {self.format_message()}", err=True)


@dataclass
class CLIContext:
    """Options shared by all commands (the root group's ``ctx.obj``)."""

    basedir: Path
    json_output: bool = False
    _env: dict[str, Any] | None = field(default=None, repr=False)

    @classmethod
    def from_option(cls, basedir: Path | None, json_output: bool) -> CLIContext:
        """Resolve ``--basedir`` (default: ``FLOWSERV_API_DIR``, then the package default)."""
        path = basedir if basedir is not None else Path(default_api_dir())
        return cls(basedir=path.expanduser().absolute(), json_output=json_output)

    @property
    def token_file(self) -> Path:
        """Where ``users login`` keeps the access token."""
        return self.basedir / TOKEN_FILE

    def env(self) -> dict[str, Any]:
        """The configuration for the factory: base folder, auth policy, stored token.

        Read once (the login file is read outside the event loop, see :meth:`run`).
        """
        if self._env is None:
            self._env = self._read_env()
        return dict(self._env)

    def _read_env(self) -> dict[str, Any]:
        env: dict[str, Any] = {FLOWSERV_API_DIR: str(self.basedir)}
        if FLOWSERV_AUTH not in os.environ:
            env[FLOWSERV_AUTH] = AUTH_OPEN
        if FLOWSERV_ACCESS_TOKEN not in os.environ:
            token = self.stored_login().get("token")
            if isinstance(token, str) and token:
                env[FLOWSERV_ACCESS_TOKEN] = token
        return env

    def settings(self) -> Settings:
        """The effective settings (environment plus the CLI's choices)."""
        return Settings.from_env(merge_env(self.env()))

    def factory(self) -> LocalAPIFactory:
        """A new (unopened) factory on the base folder."""
        return LocalAPIFactory(env=self.env())

    def stored_login(self) -> dict[str, Any]:
        """The content of the login file, or an empty dict when there is none."""
        try:
            doc = json.loads(self.token_file.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return {}
        except (OSError, ValueError) as exc:
            raise CLIError(
                f"cannot read the login file {self.token_file}: {exc}"
                " (remove it, or run 'users logout')"
            ) from exc
        return doc if isinstance(doc, dict) else {}

    def store_login(self, user: dict[str, Any]) -> None:
        """Write the login file, readable by its owner only (mode 0600)."""
        self.basedir.mkdir(parents=True, exist_ok=True)
        self._env = None
        doc = {"userId": user["id"], "username": user["username"], "token": user["token"]}
        fd = os.open(self.token_file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as out:
            # os.open keeps the mode of an existing file: make sure it is private.
            os.fchmod(out.fileno(), 0o600)
            json.dump(doc, out)

    def remove_login(self) -> bool:
        """Delete the login file; True when there was one."""
        self._env = None
        try:
            self.token_file.unlink()
        except FileNotFoundError:
            return False
        return True

    def run(self, func: Callable[..., Awaitable[T]], *args: Any) -> T:
        """Run a coroutine function in a new event loop (``anyio.run``)."""
        self.env()  # reads the login file now, not in the event loop
        return anyio.run(func, *args)


def _set_json(ctx: click.Context, param: click.Parameter, value: bool) -> None:
    obj = ctx.find_object(CLIContext)
    if value and obj is not None:
        obj.json_output = True


def json_option(func: F) -> F:
    """Accept ``--json`` after a command too (``workflows list --json``)."""
    return click.option(
        "--json",
        "json_output",
        is_flag=True,
        expose_value=False,
        callback=_set_json,
        help="Print the result as one JSON document.",
    )(func)


async def find_workflow(api: API, ref: str) -> dict[str, Any]:
    """The workflow handle for an identifier or an exact workflow name.

    Raises:
        UnknownWorkflowError: neither matches.
        CLIError: the name matches several workflows.

    """
    try:
        return await api.workflows().get_workflow(ref)
    except UnknownWorkflowError:
        listing = (await api.workflows().list_workflows())["workflows"]
        found = [w for w in listing if w["name"] == ref]
        if len(found) > 1:
            raise CLIError(f"workflow name '{ref}' is ambiguous: use the identifier") from None
        if not found:
            raise
    return await api.workflows().get_workflow(found[0]["id"])


async def find_group(api: API, ref: str, workflow_id: str | None = None) -> dict[str, Any]:
    """The group handle for an identifier or the name of one of the caller's groups.

    Raises:
        UnknownWorkflowGroupError: neither matches.
        CLIError: the name matches several groups (of different workflows).

    """
    try:
        group = await api.groups().get_group(ref)
        if workflow_id is None or group["workflow"] == workflow_id:
            return group
    except UnknownWorkflowGroupError:
        pass
    listing = (await api.groups().list_groups(workflow_id=workflow_id))["groups"]
    found = [g for g in listing if g["name"] == ref]
    if len(found) > 1:
        raise CLIError(f"group name '{ref}' is ambiguous: use the identifier")
    if not found:
        raise UnknownWorkflowGroupError(ref)
    return await api.groups().get_group(found[0]["id"])
