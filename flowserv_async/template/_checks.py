"""Shared checks of template parts: mappings with known keys, relative paths."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from flowserv_async._paths import relative_path
from flowserv_async.errors import InvalidTemplateError

__all__ = ["checked_mapping", "relative_path", "sorted_keys"]


def sorted_keys(keys: set[Any]) -> list[Any]:
    """Keys in a stable order for a message; YAML keys may mix types (null, 0, text)."""
    return sorted(keys, key=repr)


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
        raise InvalidTemplateError(f"{what} {dict(doc)!r}: unknown key(s) {sorted_keys(unknown)}")
    return doc
