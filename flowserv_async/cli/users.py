"""``users``: register, log in and out, and show who is logged in.

``login`` keeps the access token in ``<basedir>/cli.json`` (mode 0600); later commands
use it. Passwords come from ``--password``, else from a hidden prompt on a terminal,
else from the first line of stdin (``echo secret | flowserv-async users login alice``).
"""

from __future__ import annotations

import contextlib
import sys
from typing import Any

import click

from flowserv_async.cli._context import CLIContext, json_option
from flowserv_async.cli.render import Output
from flowserv_async.errors import UnauthenticatedAccessError


def read_password(value: str | None, confirm: bool) -> str:
    """The password: the option, a prompt on a terminal, or a line of stdin."""
    if value is not None:
        return value
    if sys.stdin.isatty():
        return click.prompt("Password", hide_input=True, confirmation_prompt=confirm)
    line = sys.stdin.readline().rstrip("\r\n")
    if not line:
        raise click.UsageError("no password: give --password or one line on stdin")
    return line


@click.group()
def users() -> None:
    """Register users and log in (needed when FLOWSERV_AUTH is not 'open')."""


@users.command("register")
@click.argument("username")
@click.option("--password", help="The password (default: prompt, or a line of stdin).")
@json_option
@click.pass_obj
def register(obj: CLIContext, username: str, password: str | None) -> None:
    """Register a new user."""
    secret = read_password(password, confirm=True)

    async def create() -> dict[str, Any]:
        async with obj.factory()() as api:
            return await api.users().register_user(username, secret)

    user = obj.run(create)
    out = Output(obj.json_output)
    if out.json_output:
        out.json(user)
    else:
        out.line("registered user ", (user["username"], "bold"), " with id ", user["id"])


@users.command("login")
@click.argument("username")
@click.option("--password", help="The password (default: prompt, or a line of stdin).")
@json_option
@click.pass_obj
def login(obj: CLIContext, username: str, password: str | None) -> None:
    """Log in; later commands act as this user."""
    secret = read_password(password, confirm=False)

    async def log_in() -> dict[str, Any]:
        async with obj.factory() as factory:
            return await factory.login(username, secret)

    user = obj.run(log_in)
    obj.store_login(user)
    out = Output(obj.json_output)
    if out.json_output:
        out.json({"id": user["id"], "username": user["username"]})
    else:
        out.line("logged in as ", (user["username"], "bold"), f" (token in {obj.token_file})")


@users.command("logout")
@click.pass_obj
def logout(obj: CLIContext) -> None:
    """Log out: invalidate the stored token and remove it."""
    try:
        token = obj.stored_login().get("token")
    except click.ClickException:
        token = None  # an unreadable login file: just remove it

    async def log_out() -> None:
        async with obj.factory()() as api:
            await api.users().logout_user(str(token))

    if isinstance(token, str) and token:
        # An expired or invalid token: forgetting it is all there is to do.
        with contextlib.suppress(UnauthenticatedAccessError):
            obj.run(log_out)
    removed = obj.remove_login()
    Output().line("logged out" if removed else "not logged in")


@users.command("whoami")
@json_option
@click.pass_obj
def whoami(obj: CLIContext) -> None:
    """Show the logged-in user."""
    token = obj.settings().access_token
    if not token:
        raise UnauthenticatedAccessError("not logged in")

    async def who() -> dict[str, Any]:
        async with obj.factory()() as api:
            return await api.users().whoami_user(token)

    user = obj.run(who)
    out = Output(obj.json_output)
    if out.json_output:
        out.json(user)
    else:
        out.line((user["username"], "bold"), f" ({user['id']})")
