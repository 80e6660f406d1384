"""The service descriptor: name, version, base URL and flowserv's REST route table."""

from __future__ import annotations

from typing import Any

from flowserv_async.config import Settings
from flowserv_async.version import __version__

FILES_DELETE = "files:delete"
FILES_DOWNLOAD = "files:download"
FILES_LIST = "files:list"
FILES_UPLOAD = "files:upload"
GROUPS_CREATE = "groups:create"
GROUPS_DELETE = "groups:delete"
GROUPS_GET = "groups:get"
GROUPS_LIST = "groups:list"
GROUPS_RUNS = "groups:runs"
GROUPS_UPDATE = "groups:update"
LEADERBOARD_GET = "leaderboard"
RUNS_CANCEL = "runs:cancel"
RUNS_DELETE = "runs:delete"
RUNS_DOWNLOAD_ARCHIVE = "runs:download:archive"
RUNS_DOWNLOAD_FILE = "runs:download:file"
RUNS_GET = "runs:get"
RUNS_START = "runs:start"
SERVICE_DESCRIPTOR = "service"
USERS_ACTIVATE = "users:activate"
USERS_LIST = "users:list"
USERS_LOGIN = "users:login"
USERS_LOGOUT = "users:logout"
USERS_PASSWORD_REQUEST = "users:pwd:request"
USERS_PASSWORD_RESET = "users:pwd:reset"
USERS_REGISTER = "users:register"
USERS_WHOAMI = "users:whoami"
WORKFLOWS_DOWNLOAD_ARCHIVE = "workflows:download:archive"
WORKFLOWS_DOWNLOAD_FILE = "workflows:download:file"
WORKFLOWS_GET = "workflows:get"
WORKFLOWS_GROUPS = "workflows:groups"
WORKFLOWS_LIST = "workflows:list"

ROUTES: dict[str, str] = {
    FILES_DELETE: "uploads/{userGroupId}/files/{fileId}",
    FILES_DOWNLOAD: "uploads/{userGroupId}/files/{fileId}",
    FILES_LIST: "uploads/{userGroupId}/files",
    FILES_UPLOAD: "uploads/{userGroupId}/files",
    GROUPS_CREATE: "workflows/{workflowId}/groups",
    GROUPS_DELETE: "groups/{userGroupId}",
    GROUPS_GET: "groups/{userGroupId}",
    GROUPS_LIST: "groups",
    GROUPS_RUNS: "groups/{userGroupId}/runs?state={state}",
    GROUPS_UPDATE: "groups/{userGroupId}",
    LEADERBOARD_GET: "workflows/{workflowId}/leaderboard?orderBy={orderBy}&includeAll={includeAll}",
    RUNS_CANCEL: "runs/{runId}",
    RUNS_DELETE: "runs/{runId}",
    RUNS_DOWNLOAD_ARCHIVE: "runs/{runId}/downloads/archive",
    RUNS_DOWNLOAD_FILE: "runs/{runId}/downloads/files/{fileId}",
    RUNS_GET: "runs/{runId}",
    RUNS_START: "groups/{userGroupId}/runs",
    SERVICE_DESCRIPTOR: "",
    USERS_ACTIVATE: "users/activate",
    USERS_LIST: "users",
    USERS_LOGIN: "users/login",
    USERS_LOGOUT: "users/logout",
    USERS_PASSWORD_REQUEST: "users/password/request",
    USERS_PASSWORD_RESET: "users/password/reset",
    USERS_REGISTER: "users/register",
    USERS_WHOAMI: "users/whoami",
    WORKFLOWS_DOWNLOAD_ARCHIVE: "workflows/{workflowId}/downloads/archive",
    WORKFLOWS_DOWNLOAD_FILE: "workflows/{workflowId}/downloads/files/{fileId}",
    WORKFLOWS_GET: "workflows/{workflowId}",
    WORKFLOWS_GROUPS: "workflows/{workflowId}/groups",
    WORKFLOWS_LIST: "workflows",
}


class ServiceDescriptor:
    """Basic information about the service and the URL patterns of its routes."""

    def __init__(self, settings: Settings, username: str | None = None) -> None:
        self.name = settings.api_name
        self.version = __version__
        self.url = settings.api_url
        self.username = username
        self._routes = dict(ROUTES)

    def routes(self) -> dict[str, str]:
        """Map each route key to its URL pattern."""
        return dict(self._routes)

    def to_dict(self) -> dict[str, Any]:
        """Return ``{name, version, url, routes: [{id, pattern}], username?}``."""
        doc: dict[str, Any] = {
            "name": self.name,
            "version": self.version,
            "url": self.url,
            "routes": [{"id": k, "pattern": v} for k, v in self._routes.items()],
        }
        if self.username is not None:
            doc["username"] = self.username
        return doc

    def urls(self, key: str, **kwargs: Any) -> str:
        """Return the full URL of route ``key`` with its placeholders filled from kwargs.

        Raises:
            KeyError: ``key`` names no route.

        """
        return f"{self.url}/{self._routes[key].format(**kwargs)}"
