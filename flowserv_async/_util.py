"""Small helpers shared by the package: identifiers, names, UTC timestamps, heap freezing."""

from __future__ import annotations

import gc
import re
import uuid
from datetime import UTC, datetime

from flowserv_async.errors import ConstraintViolationError


def new_id() -> str:
    """Return a new identifier: 32 lowercase hex characters (UUID4)."""
    return uuid.uuid4().hex


def freeze_startup_heap() -> None:
    """Collect, then exempt everything the process holds now from later collections.

    For applications (``flowserv-async serve``, the benchmark driver), never called by
    the library: with many sessions in flight, full (generation 2) collections ran every
    few hundred calls and each stopped the event loop for 50-60 ms of CPU traversing
    modules, classes and mapped classes that live as long as the process. After
    ``gc.freeze`` they are no longer traversed; what is allocated later is collected as
    before. Call it once, after start-up: objects alive at that moment are never freed
    even if they become garbage later, which is why a library must not decide it.
    """
    from sqlalchemy.orm import configure_mappers

    configure_mappers()
    gc.collect()
    gc.freeze()


def utc_now() -> datetime:
    """Return the current time as a timezone-aware UTC datetime."""
    return datetime.now(UTC)


def isoformat(value: datetime | str | None) -> str | None:
    """Format a timestamp as ISO 8601 in UTC with an explicit offset.

    Text is that already: a timestamp read as
    :class:`~flowserv_async.db.timestamps.TimestampText`.
    """
    if value is None or isinstance(value, str):
        return value
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    return value.astimezone(UTC).isoformat()


_IDENTIFIER = re.compile(r"[A-Za-z0-9_]{1,32}")


def validate_identifier(value: object) -> str:
    """Check a caller-chosen identifier: 1 to 32 characters of ``[A-Za-z0-9_]``.

    Raises:
        ConstraintViolationError: naming the value.

    """
    if not isinstance(value, str) or not _IDENTIFIER.fullmatch(value):
        raise ConstraintViolationError(
            f"invalid identifier {value!r}: use 1 to 32 characters of [A-Za-z0-9_]"
        )
    return value


def validate_name(value: object, what: str, max_length: int = 512) -> str:
    """Check a name: a non-blank string of at most ``max_length`` characters, trimmed.

    Raises:
        ConstraintViolationError: naming the value.

    """
    if not isinstance(value, str) or not value.strip():
        raise ConstraintViolationError(f"{what} name must not be blank, got {value!r}")
    name = value.strip()
    if len(name) > max_length:
        raise ConstraintViolationError(
            f"{what} name is longer than {max_length} characters ({len(name)})"
        )
    return name
