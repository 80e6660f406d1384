"""File keys: relative POSIX paths inside a storage volume.

A key names a file (or, as a prefix, a folder) relative to the volume root. Keys are
normalised (``a//./b/`` becomes ``a/b``); a key that could point outside the root is
refused with :class:`~flowserv_async.errors.ConstraintViolationError`.
"""

from __future__ import annotations

from flowserv_async._paths import relative_path
from flowserv_async.errors import ConstraintViolationError


def validate_key(key: str) -> str:
    """Return the normalised form of a file key, or refuse it.

    Refused: what :func:`flowserv_async._paths.relative_path` refuses (empty keys,
    absolute paths, ``..`` components, backslashes, NUL and other control characters).

    Raises:
        ConstraintViolationError: naming the key and what is wrong with it.

    """
    try:
        return relative_path(key)
    except (TypeError, ValueError) as exc:
        raise ConstraintViolationError(f"invalid file key: {exc}") from None


def validate_prefix(prefix: str) -> str:
    """Return the normalised form of a folder prefix; ``''`` stands for the volume root.

    Raises:
        ConstraintViolationError: for a non-empty prefix that is not a valid key.

    """
    return validate_key(prefix) if prefix else ""


def join_key(*parts: str) -> str:
    """Join key parts with ``/``, validating each non-empty part on its own.

    Validating the parts separately refuses ``join_key("a", "/etc")``, which a plain
    string join followed by normalisation would turn into ``a/etc``.

    Raises:
        ConstraintViolationError: when a part is not a valid key or all parts are empty.

    """
    keys = [validate_key(part) for part in parts if part]
    if not keys:
        raise ConstraintViolationError(f"invalid file key from parts {parts!r}: empty")
    return "/".join(keys)


def relative_key(key: str, prefix: str) -> str:
    """Return ``key`` relative to the folder ``prefix`` (``''`` when they are equal).

    Both arguments must be normalised keys (or ``''`` for the prefix).

    Raises:
        ConstraintViolationError: when ``key`` does not lie in ``prefix``.

    """
    if not prefix:
        return key
    if key == prefix:
        return ""
    if key.startswith(prefix + "/"):
        return key[len(prefix) + 1 :]
    raise ConstraintViolationError(f"file key '{key}' is not inside '{prefix}'")
