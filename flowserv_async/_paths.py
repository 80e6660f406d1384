"""The one rule for relative paths: file keys, template paths, targets and outputs.

A relative path names a file (or folder) below some root: a run folder, a volume, a
download folder. Its normal form has ``/`` separators and no empty or ``.`` parts.
Refused: non-strings, paths that are empty once normalised, absolute paths (``/x``,
``C:x``), ``..`` parts, backslashes, NUL and other control characters. Callers wrap
the :class:`ValueError` in the error of their layer, prefixed with what the path is.
"""

from __future__ import annotations

import unicodedata


def relative_path(value: object) -> str:
    """Return the normal form of a relative POSIX path.

    Raises:
        TypeError: the value is not a string.
        ValueError: naming the path and what is wrong with it.

    """
    if not isinstance(value, str):
        raise TypeError(f"path must be a string, got {value!r}")
    for char in value:
        if unicodedata.category(char) == "Cc":
            raise ValueError(f"path {value!r} contains a NUL or control character ({char!r})")
    if "\\" in value:
        raise ValueError(f"path {value!r}: backslash is not allowed")
    if value.startswith("/") or (len(value) > 1 and value[1] == ":" and value[0].isalpha()):
        raise ValueError(f"path {value!r} is absolute")
    parts = [part for part in value.split("/") if part not in ("", ".")]
    if ".." in parts:
        raise ValueError(f"path {value!r} leaves its folder ('..' is not allowed)")
    if not parts:
        raise ValueError(f"path {value!r} names no file")
    return "/".join(parts)
