"""Configuration: every setting's name, default and parser, in one place.

Settings are read from the process environment and from an optional mapping; values in
the mapping win. Every value is parsed when the settings are read, and a malformed value
raises :class:`~flowserv_async.errors.InvalidConfigurationError` naming the variable.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import platformdirs

from flowserv_async.engine.containment import CONTAINMENTS
from flowserv_async.engine.log import DEFAULT_MAX_BYTES
from flowserv_async.errors import InvalidConfigurationError

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


def _positive(name: str, value: Any) -> int:
    number = _count(name, value)
    if number == 0:
        raise InvalidConfigurationError(
            f"invalid value {value!r} for {name}: expected a positive integer"
        )
    return number


def _port(name: str, value: Any) -> int:
    port = _count(name, value)
    if not 0 < port < 65536:
        raise InvalidConfigurationError(f"invalid value {value!r} for {name}: not a TCP port")
    return port


def _origins(name: str, value: Any) -> tuple[str, ...]:
    # A comma list of origins, or "*" for any origin.
    return tuple(o.strip() for o in str(value).split(",") if o.strip())


def _auth(name: str, value: Any) -> str:
    # flowserv: 'open' selects open access, anything else the default policy.
    return AUTH_OPEN if str(value).strip().lower() == AUTH_OPEN else AUTH_DEFAULT


def _one_of(choices: tuple[str, ...]) -> Callable[[str, Any], str]:
    """A parser that accepts one of ``choices`` (case-insensitive)."""

    def parse(name: str, value: Any) -> str:
        text = str(value).strip().lower()
        if text not in choices:
            raise InvalidConfigurationError(
                f"invalid value {value!r} for {name}: expected one of {', '.join(choices)}"
            )
        return text

    return parse


MEMORY_QUEUE = "memory"
DATABASE_QUEUE = "database"
RUN_QUEUES = (MEMORY_QUEUE, DATABASE_QUEUE)
"""``FLOWSERV_RUN_QUEUE``: runs start in the process that created them (``memory``), or
any process claims them from a queue in the database (``database``, PostgreSQL)."""


def default_api_dir() -> Path:
    """The default base folder: the user's cache folder for ``flowserv_async``."""
    return Path(platformdirs.user_cache_dir("flowserv_async")).absolute()


def _path(name: str, value: Any) -> Path | None:
    text = str(value).strip()
    return Path(text).expanduser().absolute() if text else None


def merge_env(env: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """Return the raw configuration: the process's ``FLOWSERV_*`` variables, then ``env``."""
    merged: dict[str, Any] = {k: v for k, v in os.environ.items() if k.startswith("FLOWSERV_")}
    if env is not None:
        merged.update(env)
    return merged


@dataclass(frozen=True, slots=True)
class _Variable:
    """How a setting is read: its variable, parser and default."""

    name: str
    parse: Callable[[str, Any], Any]
    default: Any = None
    default_factory: Callable[[], Any] | None = None


_VARIABLE = "flowserv_variable"


def _setting(
    name: str,
    parse: Callable[[str, Any], Any],
    default: Any = None,
    default_factory: Callable[[], Any] | None = None,
) -> Any:
    """Declare a setting: its variable, parser and default (a parsed None means unset)."""
    return field(metadata={_VARIABLE: _Variable(name, parse, default, default_factory)})


@dataclass(frozen=True, slots=True)
class Settings:
    """Parsed, validated settings (see SPEC 1.4 for each variable's meaning).

    Each field is declared once, with its variable, parser and default.
    """

    api_dir: Path = _setting("FLOWSERV_API_DIR", _path, default_factory=default_api_dir)
    database: str | None = _setting("FLOWSERV_DATABASE", _optional_text)
    filestore: str | None = _setting("FLOWSERV_FILESTORE", _optional_text)
    auth: str = _setting("FLOWSERV_AUTH", _auth, AUTH_DEFAULT)
    auth_ttl: int = _setting("FLOWSERV_AUTH_TTL", _count, 86400)
    access_token: str | None = _setting("FLOWSERV_ACCESS_TOKEN", _optional_text)
    backend_module: str | None = _setting("FLOWSERV_BACKEND_MODULE", _optional_text)
    backend_class: str | None = _setting("FLOWSERV_BACKEND_CLASS", _optional_text)
    async_engine: bool = _setting("FLOWSERV_ASYNCENGINE", _bool, True)
    max_concurrent_runs: int = _setting("FLOWSERV_MAX_CONCURRENT_RUNS", _count, 0)
    step_timeout: float = _setting("FLOWSERV_STEP_TIMEOUT", _seconds, 0.0)
    cancel_grace: float = _setting("FLOWSERV_CANCEL_GRACE", _seconds, 5.0)
    engine_config: str | None = _setting("FLOWSERV_SERIAL_ENGINECONFIG", _optional_text)
    max_upload_size: int = _setting("FLOWSERV_MAX_UPLOAD_SIZE", _count, 0)
    max_log_size: int = _setting("FLOWSERV_MAX_LOG_SIZE", _count, DEFAULT_MAX_BYTES)
    containment: str = _setting("FLOWSERV_CONTAINMENT", _one_of(CONTAINMENTS), CONTAINMENTS[0])
    heartbeat: float = _setting("FLOWSERV_HEARTBEAT", _seconds, 5.0)
    run_lease: float = _setting("FLOWSERV_RUN_LEASE", _seconds, 30.0)
    run_queue: str = _setting("FLOWSERV_RUN_QUEUE", _one_of(RUN_QUEUES), MEMORY_QUEUE)
    repository: str | None = _setting("FLOWSERV_REPOSITORY", _optional_text)
    events_keep: int = _setting("FLOWSERV_EVENTS_KEEP", _count, 100_000)
    events_poll: float = _setting("FLOWSERV_EVENTS_POLL", _seconds, 0.25)
    events_buffer: int = _setting("FLOWSERV_EVENTS_BUFFER", _count, 1000)
    webhooks: str | None = _setting("FLOWSERV_WEBHOOKS", _optional_text)
    dask_scheduler: str | None = _setting("FLOWSERV_DASK_SCHEDULER", _optional_text)
    dask_workers: int = _setting("FLOWSERV_DASK_WORKERS", _positive, 2)
    dask_slots: int = _setting("FLOWSERV_DASK_SLOTS", _positive, 4)
    api_name: str = _setting("FLOWSERV_API_NAME", _text, DEFAULT_API_NAME)
    api_host: str = _setting("FLOWSERV_API_HOST", _text, "localhost")
    api_port: int = _setting("FLOWSERV_API_PORT", _port, 5000)
    api_path: str = _setting("FLOWSERV_API_PATH", _text, "/flowserv/api/v1")
    api_protocol: str = _setting("FLOWSERV_API_PROTOCOL", _text, "http")
    cors_origins: tuple[str, ...] = _setting("FLOWSERV_CORS_ORIGINS", _origins, ())
    anonymous_downloads: bool = _setting("FLOWSERV_ANONYMOUS_DOWNLOADS", _bool, False)
    events_ping: float = _setting("FLOWSERV_EVENTS_PING", _seconds, 15.0)

    def __post_init__(self) -> None:
        if self.max_log_size < 1:
            raise InvalidConfigurationError("FLOWSERV_MAX_LOG_SIZE must be at least 1 byte")
        if self.heartbeat <= 0 or self.run_lease <= self.heartbeat:
            raise InvalidConfigurationError(
                f"{FLOWSERV_RUN_LEASE} ({self.run_lease}) must be longer than"
                f" {FLOWSERV_HEARTBEAT} ({self.heartbeat}), which must be positive"
            )
        if self.events_poll <= 0 or self.events_buffer <= 0:
            raise InvalidConfigurationError(
                f"{FLOWSERV_EVENTS_POLL} ({self.events_poll}) and {FLOWSERV_EVENTS_BUFFER}"
                f" ({self.events_buffer}) must be positive"
            )

    @classmethod
    def variable(cls, field_name: str) -> str:
        """The name of the variable that sets a field."""
        for item in fields(cls):
            if item.name == field_name:
                var: _Variable = item.metadata[_VARIABLE]
                return var.name
        raise KeyError(field_name)

    @classmethod
    def from_env(cls, env: Mapping[str, Any]) -> Settings:
        """Parse every variable in ``env`` (a merged mapping, see :func:`merge_env`)."""
        values: dict[str, Any] = {}
        for item in fields(cls):
            var: _Variable = item.metadata[_VARIABLE]
            raw = env.get(var.name)
            value = None if raw is None else var.parse(var.name, raw)
            if value is None:
                value = var.default_factory() if var.default_factory else var.default
            values[item.name] = value
        return cls(**values)

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


# The variables' names, for code that sets or reads them in a mapping.
FLOWSERV_API_DIR = Settings.variable("api_dir")
FLOWSERV_DATABASE = Settings.variable("database")
FLOWSERV_AUTH = Settings.variable("auth")
FLOWSERV_ACCESS_TOKEN = Settings.variable("access_token")
FLOWSERV_ASYNCENGINE = Settings.variable("async_engine")
FLOWSERV_HEARTBEAT = Settings.variable("heartbeat")
FLOWSERV_RUN_LEASE = Settings.variable("run_lease")
FLOWSERV_RUN_QUEUE = Settings.variable("run_queue")
FLOWSERV_EVENTS_POLL = Settings.variable("events_poll")
FLOWSERV_EVENTS_BUFFER = Settings.variable("events_buffer")
FLOWSERV_WEBHOOKS = Settings.variable("webhooks")

VARIABLES: tuple[str, ...] = tuple(
    sorted(item.metadata[_VARIABLE].name for item in fields(Settings))
)
"""The names of all settings."""
FLOWSERV_API_HOST = Settings.variable("api_host")
FLOWSERV_API_PORT = Settings.variable("api_port")
