"""The API facade of one session: ``api.users()``, ``api.server()``, ..."""

from __future__ import annotations

from flowserv_async.services.base import ServiceContext
from flowserv_async.services.groups import GroupService
from flowserv_async.services.runs import RunService
from flowserv_async.services.server import ServiceDescriptor
from flowserv_async.services.uploads import UploadService
from flowserv_async.services.users import UserService
from flowserv_async.services.workflows import WorkflowService


class API:
    """The service components of one session; they all share the session's transaction.

    Obtain one with ``async with factory() as api:``; do not create it directly.
    """

    def __init__(self, ctx: ServiceContext, username: str | None = None) -> None:
        self._ctx = ctx
        self._username = username
        self._users = UserService(ctx)
        self._workflows = WorkflowService(ctx)
        self._groups = GroupService(ctx)
        self._uploads = UploadService(ctx)
        self._runs = RunService(ctx)

    @property
    def user_id(self) -> str | None:
        """The identifier of the session's user, or None for an anonymous session."""
        return self._ctx.user_id

    def server(self) -> ServiceDescriptor:
        """The service descriptor (name, version, URL, routes, user name)."""
        return ServiceDescriptor(self._ctx.settings, username=self._username)

    def users(self) -> UserService:
        """The users service."""
        return self._users

    def workflows(self) -> WorkflowService:
        """The workflows service."""
        return self._workflows

    def groups(self) -> GroupService:
        """The groups service."""
        return self._groups

    def uploads(self) -> UploadService:
        """The uploads service."""
        return self._uploads

    def runs(self) -> RunService:
        """The runs service."""
        return self._runs
