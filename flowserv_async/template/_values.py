"""Conversions of argument and result values shared by parameters and result columns."""

from __future__ import annotations

import math
from typing import Any

TRUE_VALUES = frozenset({"1", "t", "true", "yes"})
FALSE_VALUES = frozenset({"0", "f", "false", "no", ""})


def to_bool(value: Any) -> bool:
    """Convert ``value`` by flowserv's Boolean rule (``None`` is false).

    Raises:
        TypeError: when the value is no string, integer or Boolean.
        ValueError: when the value is no Boolean representation.

    """
    if value is None:
        return False
    if isinstance(value, bool):
        return value
    if not isinstance(value, (str, int)):
        raise TypeError("not a Boolean value")
    text = str(value).strip().lower()
    if text in TRUE_VALUES:
        return True
    if text in FALSE_VALUES:
        return False
    raise ValueError("not a Boolean value")


def to_int(value: Any) -> int:
    """Convert ``value`` to an integer without dropping a fraction.

    Raises:
        TypeError: for Booleans and values that are no number or string.
        ValueError: when the value is no integer (``3.5`` and ``"x"`` are not).

    """
    if isinstance(value, bool):
        raise TypeError("not an integer")
    if isinstance(value, int):
        return value
    if isinstance(value, float):
        if value.is_integer():
            return int(value)
        raise ValueError("not an integer")
    if isinstance(value, str):
        try:
            return int(value.strip())
        except ValueError:
            raise ValueError("not an integer") from None
    raise TypeError("not an integer")


def to_float(value: Any) -> float:
    """Convert ``value`` to a float (``inf`` is allowed, ``nan`` is not).

    Raises:
        TypeError: for Booleans and values that are no number or string.
        ValueError: when the value is no number.

    """
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        raise TypeError("not a number")
    try:
        result = float(value)
    except ValueError:
        raise ValueError("not a number") from None
    if math.isnan(result):
        raise ValueError("not a number")
    return result


def to_string(value: Any) -> str:
    """Convert a scalar ``value`` to a string.

    Raises:
        TypeError: for ``None`` and containers, which have no string form.

    """
    if value is None or isinstance(value, (dict, list, tuple, set)):
        raise TypeError("not a string")
    return str(value)
