"""Configuration: every setting's name, default and parser, in one place.

Settings are read from the process environment and from an optional mapping; values in
the mapping win. Every value is parsed when the settings are read, and a malformed value
raises :class:`~flowserv_async.errors.InvalidConfigurationError` naming the variable.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import platformdirs

from flowserv_async.errors import InvalidConfigurationError

# Names of the variables (flowserv's names, so existing set-ups keep working).
FLOWSERV_API_DIR = "FLOWSERV_API_DIR"
FLOWSERV_DATABASE = "FLOWSERV_DATABASE"
FLOWSERV_FILESTORE = "FLOWSERV_FILESTORE"
FLOWSERV_AUTH = "FLOWSERV_AUTH"
FLOWSERV_AUTH_TTL = "FLOWSERV_AUTH_TTL"
FLOWSERV_ACCESS_TOKEN = "FLOWSERV_ACCESS_TOKEN"
FLOWSERV_BACKEND_MODULE = "FLOWSERV_BACKEND_MODULE"
FLOWSERV_BACKEND_CLASS = "FLOWSERV_BACKEND_CLASS"
FLOWSERV_ASYNCENGINE = "FLOWSERV_ASYNCENGINE"
FLOWSERV_MAX_CONCURRENT_RUNS = "FLOWSERV_MAX_CONCURRENT_RUNS"
FLOWSERV_STEP_TIMEOUT = "FLOWSERV_STEP_TIMEOUT"
FLOWSERV_CANCEL_GRACE = "FLOWSERV_CANCEL_GRACE"
FLOWSERV_SERIAL_ENGINECONFIG = "FLOWSERV_SERIAL_ENGINECONFIG"
FLOWSERV_MAX_UPLOAD_SIZE = "FLOWSERV_MAX_UPLOAD_SIZE"
FLOWSERV_HEARTBEAT = "FLOWSERV_HEARTBEAT"
FLOWSERV_RUN_LEASE = "FLOWSERV_RUN_LEASE"
FLOWSERV_REPOSITORY = "FLOWSERV_REPOSITORY"
FLOWSERV_EVENTS_KEEP = "FLOWSERV_EVENTS_KEEP"
FLOWSERV_EVENTS_POLL = "FLOWSERV_EVENTS_POLL"
FLOWSERV_EVENTS_BUFFER = "FLOWSERV_EVENTS_BUFFER"
FLOWSERV_WEBHOOKS = "FLOWSERV_WEBHOOKS"
FLOWSERV_API_NAME = "FLOWSERV_API_NAME"
FLOWSERV_API_HOST = "FLOWSERV_API_HOST"
FLOWSERV_API_PORT = "FLOWSERV_API_PORT"
FLOWSERV_API_PATH = "FLOWSERV_API_PATH"
FLOWSERV_API_PROTOCOL = "FLOWSERV_API_PROTOCOL"

AUTH_DEFAULT = "default"
AUTH_OPEN = "open"
DEFAULT_USER = "0" * 8
DEFAULT_API_NAME = "Reproducible and Reusable Data Analysis Workflow Server (API)"

_TRUE = frozenset({"true", "1", "yes"})
_FALSE = frozenset({"false", "0", "no"})


def _text(name: str, value: Any) -> str:
    return str(value)


def _optional_text(name: str, value: Any) -> str | None:
    text = str(value).strip()
    return text or None


def _bool(name: str, value: Any) -> bool:
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in _TRUE:
        return True
    if text in _FALSE:
        return False
    raise InvalidConfigurationError(
        f"invalid value {value!r} for {name}: expected one of true/false/1/0/yes/no"
    )


def _count(name: str, value: Any) -> int:
    try:
        number = int(str(value).strip()) if not isinstance(value, int) else value
    except ValueError:
        number = -1
    if isinstance(number, bool) or number < 0:
        raise InvalidConfigurationError(
            f"invalid value {value!r} for {name}: expected a non-negative integer"
        )
    return number


def _seconds(name: str, value: Any) -> float:
    try:
        number = float(str(value).strip())
    except ValueError:
        number = -1.0
    if not number >= 0 or number == float("inf"):
        raise InvalidConfigurationError(
            f"invalid value {value!r} for {name}: expected a non-negative number of seconds"
        )
    return number


def _port(name: str, value: Any) -> int:
    port = _count(name, value)
    if not 0 < port < 65536:
        raise InvalidConfigurationError(f"invalid value {value!r} for {name}: not a TCP port")
    return port


def _auth(name: str, value: Any) -> str:
    # flowserv: 'open' selects open access, anything else the default policy.
    return AUTH_OPEN if str(value).strip().lower() == AUTH_OPEN else AUTH_DEFAULT


def default_api_dir() -> str:
    """The default base folder: the user's cache folder for ``flowserv_async``."""
    return platformdirs.user_cache_dir("flowserv_async")


# name -> (parser, default); a default of None means "not set".
_VARIABLES: dict[str, tuple[Callable[[str, Any], Any], Any]] = {
    FLOWSERV_API_DIR: (_text, None),
    FLOWSERV_DATABASE: (_optional_text, None),
    FLOWSERV_FILESTORE: (_optional_text, None),
    FLOWSERV_AUTH: (_auth, AUTH_DEFAULT),
    FLOWSERV_AUTH_TTL: (_count, 86400),
    FLOWSERV_ACCESS_TOKEN: (_optional_text, None),
    FLOWSERV_BACKEND_MODULE: (_optional_text, None),
    FLOWSERV_BACKEND_CLASS: (_optional_text, None),
    FLOWSERV_ASYNCENGINE: (_bool, True),
    FLOWSERV_MAX_CONCURRENT_RUNS: (_count, 0),
    FLOWSERV_STEP_TIMEOUT: (_seconds, 0.0),
    FLOWSERV_CANCEL_GRACE: (_seconds, 5.0),
    FLOWSERV_SERIAL_ENGINECONFIG: (_optional_text, None),
    FLOWSERV_MAX_UPLOAD_SIZE: (_count, 0),
    FLOWSERV_HEARTBEAT: (_seconds, 5.0),
    FLOWSERV_RUN_LEASE: (_seconds, 30.0),
    FLOWSERV_REPOSITORY: (_optional_text, None),
    FLOWSERV_EVENTS_KEEP: (_count, 100_000),
    FLOWSERV_EVENTS_POLL: (_seconds, 0.25),
    FLOWSERV_EVENTS_BUFFER: (_count, 1000),
    FLOWSERV_WEBHOOKS: (_optional_text, None),
    FLOWSERV_API_NAME: (_text, DEFAULT_API_NAME),
    FLOWSERV_API_HOST: (_text, "localhost"),
    FLOWSERV_API_PORT: (_port, 5000),
    FLOWSERV_API_PATH: (_text, "/flowserv/api/v1"),
    FLOWSERV_API_PROTOCOL: (_text, "http"),
}

VARIABLES: tuple[str, ...] = tuple(sorted(_VARIABLES))
"""The names of all settings."""


def merge_env(env: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """Return the raw configuration: the process's ``FLOWSERV_*`` variables, then ``env``."""
    merged: dict[str, Any] = {k: v for k, v in os.environ.items() if k.startswith("FLOWSERV_")}
    if env is not None:
        merged.update(env)
    return merged


@dataclass(frozen=True, slots=True)
class Settings:
    """Parsed, validated settings (see SPEC 1.4 for each variable's meaning)."""

    api_dir: Path
    database: str | None
    filestore: str | None
    auth: str
    auth_ttl: int
    access_token: str | None
    backend_module: str | None
    backend_class: str | None
    async_engine: bool
    max_concurrent_runs: int
    step_timeout: float
    cancel_grace: float
    engine_config: str | None
    max_upload_size: int
    heartbeat: float
    run_lease: float
    repository: str | None
    events_keep: int
    events_poll: float
    events_buffer: int
    webhooks: str | None
    api_name: str
    api_host: str
    api_port: int
    api_path: str
    api_protocol: str

    @classmethod
    def from_env(cls, env: Mapping[str, Any]) -> Settings:
        """Parse every variable in ``env`` (a merged mapping, see :func:`merge_env`)."""
        values: dict[str, Any] = {}
        for name, (parse, default) in _VARIABLES.items():
            raw = env.get(name)
            values[name] = default if raw is None else parse(name, raw)
        api_dir = values[FLOWSERV_API_DIR] or default_api_dir()
        if (
            values[FLOWSERV_HEARTBEAT] <= 0
            or values[FLOWSERV_RUN_LEASE] <= values[FLOWSERV_HEARTBEAT]
        ):
            raise InvalidConfigurationError(
                f"{FLOWSERV_RUN_LEASE} ({values[FLOWSERV_RUN_LEASE]}) must be longer than"
                f" {FLOWSERV_HEARTBEAT} ({values[FLOWSERV_HEARTBEAT]}), which must be positive"
            )
        if values[FLOWSERV_EVENTS_POLL] <= 0 or values[FLOWSERV_EVENTS_BUFFER] <= 0:
            raise InvalidConfigurationError(
                f"{FLOWSERV_EVENTS_POLL} and {FLOWSERV_EVENTS_BUFFER} must be positive"
            )
        return cls(
            api_dir=Path(api_dir).expanduser().absolute(),
            database=values[FLOWSERV_DATABASE],
            filestore=values[FLOWSERV_FILESTORE],
            auth=values[FLOWSERV_AUTH],
            auth_ttl=values[FLOWSERV_AUTH_TTL],
            access_token=values[FLOWSERV_ACCESS_TOKEN],
            backend_module=values[FLOWSERV_BACKEND_MODULE],
            backend_class=values[FLOWSERV_BACKEND_CLASS],
            async_engine=values[FLOWSERV_ASYNCENGINE],
            max_concurrent_runs=values[FLOWSERV_MAX_CONCURRENT_RUNS],
            step_timeout=values[FLOWSERV_STEP_TIMEOUT],
            cancel_grace=values[FLOWSERV_CANCEL_GRACE],
            engine_config=values[FLOWSERV_SERIAL_ENGINECONFIG],
            max_upload_size=values[FLOWSERV_MAX_UPLOAD_SIZE],
            heartbeat=values[FLOWSERV_HEARTBEAT],
            run_lease=values[FLOWSERV_RUN_LEASE],
            repository=values[FLOWSERV_REPOSITORY],
            events_keep=values[FLOWSERV_EVENTS_KEEP],
            events_poll=values[FLOWSERV_EVENTS_POLL],
            events_buffer=values[FLOWSERV_EVENTS_BUFFER],
            webhooks=values[FLOWSERV_WEBHOOKS],
            api_name=values[FLOWSERV_API_NAME],
            api_host=values[FLOWSERV_API_HOST],
            api_port=values[FLOWSERV_API_PORT],
            api_path=values[FLOWSERV_API_PATH],
            api_protocol=values[FLOWSERV_API_PROTOCOL],
        )

    @property
    def open_access(self) -> bool:
        """True under the open access policy."""
        return self.auth == AUTH_OPEN

    @property
    def api_url(self) -> str:
        """Base URL of the REST API: ``proto://host[:port]path`` (port 80 omitted)."""
        host = self.api_host if self.api_port == 80 else f"{self.api_host}:{self.api_port}"
        path = self.api_path if self.api_path.startswith("/") else "/" + self.api_path
        return f"{self.api_protocol}://{host}{path.rstrip('/')}"
