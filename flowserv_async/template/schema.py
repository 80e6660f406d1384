"""The result schema of a benchmark: which values a run's result file holds, and the order.

``results: {file, schema: [{name, label, dtype, path?, required?}], orderBy?: [{name,
sortDesc?}]}``. Column types are ``int``, ``float`` and ``string``; columns are required
unless ``required: false``; a column's value is found at ``path`` (split on ``/``,
default: the column name). The default ranking order is the first column, descending.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from flowserv_async.errors import ConstraintViolationError, InvalidTemplateError
from flowserv_async.template._checks import checked_mapping, relative_path
from flowserv_async.template._values import to_float, to_int, to_string

ResultValue = int | float | str

_CONVERTERS: dict[str, Callable[[Any], ResultValue]] = {
    "int": to_int,
    "float": to_float,
    "string": to_string,
}


@dataclass(frozen=True)
class ResultColumn:
    """A column of the result schema."""

    name: str
    label: str
    dtype: str
    path: str | None = None
    required: bool = True

    @classmethod
    def from_dict(cls, doc: Any) -> ResultColumn:
        """Validate a column declaration.

        Raises:
            InvalidTemplateError: for a malformed declaration.

        """
        doc = checked_mapping(
            doc, "result column", {"name", "label", "dtype"}, {"path", "required"}
        )
        name, label, dtype = doc["name"], doc["label"], doc["dtype"]
        if not isinstance(name, str) or not name or not isinstance(label, str):
            raise InvalidTemplateError(f"result column {dict(doc)!r}: name and label are strings")
        if dtype not in _CONVERTERS:
            raise InvalidTemplateError(
                f"result column '{name}': dtype {dtype!r} is not one of int, float, string"
            )
        path = doc.get("path")
        if path is not None and (not isinstance(path, str) or not all(path.split("/"))):
            raise InvalidTemplateError(f"result column '{name}': invalid path {path!r}")
        required = doc.get("required", True)
        if not isinstance(required, bool):
            raise InvalidTemplateError(f"result column '{name}': required {required!r} is no bool")
        return cls(name, label, dtype, path, required)

    def cast(self, value: Any) -> ResultValue:
        """Convert a value to the column type.

        Raises:
            TypeError: when the value is of a type that does not convert.
            ValueError: with the reason when the value does not convert.

        """
        result = _CONVERTERS[self.dtype](value)
        # JSON has no infinity: a stored ranking must stay readable on every backend.
        if isinstance(result, float) and not math.isfinite(result):
            raise ValueError("not a finite number")
        return result

    def json_path(self) -> list[str]:
        """The keys that lead to the column value in a result document."""
        return (self.path or self.name).split("/")

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready declaration."""
        doc: dict[str, Any] = {
            "name": self.name,
            "label": self.label,
            "dtype": self.dtype,
            "required": self.required,
        }
        if self.path is not None:
            doc["path"] = self.path
        return doc


@dataclass(frozen=True)
class SortColumn:
    """A column of the ranking order."""

    name: str
    sort_desc: bool = True

    @classmethod
    def from_dict(cls, doc: Any) -> SortColumn:
        """Validate ``{name, sortDesc?}``.

        Raises:
            InvalidTemplateError: for a malformed entry.

        """
        doc = checked_mapping(doc, "orderBy entry", {"name"}, {"sortDesc"})
        sort_desc = doc.get("sortDesc", True)
        if not isinstance(doc["name"], str) or not isinstance(sort_desc, bool):
            raise InvalidTemplateError(f"orderBy entry {dict(doc)!r}: malformed")
        return cls(doc["name"], sort_desc)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready ``{name, sortDesc}``."""
        return {"name": self.name, "sortDesc": self.sort_desc}


@dataclass(frozen=True)
class ResultSchema:
    """The result file of a run, its columns, and the declared ranking order."""

    result_file: str
    columns: tuple[ResultColumn, ...]
    order_by: tuple[SortColumn, ...] = ()

    @classmethod
    def from_dict(cls, doc: Any) -> ResultSchema:
        """Validate the ``results`` section.

        Raises:
            InvalidTemplateError: for a malformed section, a repeated column name, or an
                ``orderBy`` name that is no column.

        """
        doc = checked_mapping(doc, "results", {"file", "schema"}, {"orderBy"})
        try:
            result_file = relative_path(doc["file"])
        except (TypeError, ValueError) as err:
            raise InvalidTemplateError(f"results: invalid file: {err}") from None
        if not isinstance(doc["schema"], list) or not doc["schema"]:
            raise InvalidTemplateError("results: schema must be a non-empty list of columns")
        columns = tuple(ResultColumn.from_dict(item) for item in doc["schema"])
        names = [column.name for column in columns]
        for name in names:
            if names.count(name) > 1:
                raise InvalidTemplateError(f"results: duplicate column '{name}'")
        order = doc.get("orderBy", [])
        if not isinstance(order, list):
            raise InvalidTemplateError(f"results: orderBy must be a list, got {order!r}")
        order_by = tuple(SortColumn.from_dict(item) for item in order)
        for sort in order_by:
            if sort.name not in names:
                raise InvalidTemplateError(f"results: orderBy names unknown column '{sort.name}'")
        return cls(result_file, columns, order_by)

    def column(self, name: str) -> ResultColumn:
        """The column with the given name.

        Raises:
            KeyError: when there is no such column.

        """
        for column in self.columns:
            if column.name == name:
                return column
        raise KeyError(name)

    def default_order(self) -> list[SortColumn]:
        """The declared order, or the first column descending."""
        return list(self.order_by) or [SortColumn(self.columns[0].name, True)]

    def extract(self, doc: Any) -> dict[str, ResultValue | None]:
        """Take one typed value per column from a loaded result document.

        Optional columns without a value are ``None``.

        Raises:
            ConstraintViolationError: naming the column, when a required value is
                missing or a value does not convert to the column type.

        """
        row: dict[str, ResultValue | None] = {}
        for column in self.columns:
            value: Any = doc
            for key in column.json_path():
                value = value.get(key) if isinstance(value, Mapping) else None
            if value is None:
                if column.required:
                    raise ConstraintViolationError(
                        f"result file {self.result_file}: missing value for column "
                        f"'{column.name}' (path {'/'.join(column.json_path())})"
                    )
                row[column.name] = None
                continue
            try:
                row[column.name] = column.cast(value)
            except (TypeError, ValueError) as err:
                raise ConstraintViolationError(
                    f"result file {self.result_file}: value {value!r} of column "
                    f"'{column.name}' is {err} ({column.dtype})"
                ) from None
        return row

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready ``results`` section."""
        doc: dict[str, Any] = {
            "file": self.result_file,
            "schema": [column.to_dict() for column in self.columns],
        }
        if self.order_by:
            doc["orderBy"] = [sort.to_dict() for sort in self.order_by]
        return doc
