"""Shared checks of template parts: mappings with known keys, relative paths."""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import PurePosixPath
from typing import Any

from flowserv_async.errors import InvalidTemplateError

_ABSOLUTE = re.compile(r"^([\\/]|[A-Za-z]:)")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


def relative_path(value: object) -> str:
    """Return ``value`` as a normalised relative POSIX path.

    Raises:
        TypeError: when the value is not a string.
        ValueError: with the reason when the value is empty, is absolute, contains a
            ``..`` part or a NUL or control character.

    """
    if not isinstance(value, str):
        raise TypeError(f"path must be a string, got {value!r}")
    if _CONTROL.search(value):
        raise ValueError(f"path {value!r} contains a NUL or control character")
    if _ABSOLUTE.match(value):
        raise ValueError(f"path {value!r} is absolute")
    if ".." in re.split(r"[\\/]", value):
        raise ValueError(f"path {value!r} leaves its folder")
    path = PurePosixPath(value).as_posix()
    if path == ".":
        raise ValueError(f"path {value!r} names no file")
    return path


def checked_mapping(
    doc: Any, what: str, required: set[str], optional: set[str]
) -> Mapping[str, Any]:
    """Return ``doc`` when it is a mapping with all ``required`` and no unknown keys.

    Raises:
        InvalidTemplateError: naming ``what`` and the missing or unknown keys.

    """
    if not isinstance(doc, Mapping):
        raise InvalidTemplateError(f"{what} must be a mapping, got {doc!r}")
    missing = required - set(doc)
    if missing:
        raise InvalidTemplateError(f"{what} {dict(doc)!r}: missing key(s) {sorted(missing)}")
    unknown = set(doc) - required - optional
    if unknown:
        raise InvalidTemplateError(f"{what} {dict(doc)!r}: unknown key(s) {sorted(unknown)}")
    return doc
