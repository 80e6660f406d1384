"""Template parameter declarations, their argument conversion, and the parameter index.

A declaration is a mapping with ``name``, ``dtype``, ``index`` (default: list position),
``isRequired`` (default: true exactly when there is no ``defaultValue``), ``label``,
``help``, ``defaultValue``, ``group`` and the keys of its type:

=========  ==============================================================
dtype      extra keys
=========  ==============================================================
int        ``range`` (optional), e.g. ``"[0,10]"``, ``"(0,10]"``, ``"[0,)"``
float      ``range`` (optional)
bool
string
select     ``values``: ``[{name, value, isDefault?}]``
file       ``target`` (optional relative path in the run folder)
list       ``para``: the declaration of the elements
record     ``fields``: the declarations of the fields
actor      (the argument is a workflow step specification)
=========  ==============================================================
"""

from __future__ import annotations

import copy
import math
from abc import ABC, abstractmethod
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar, Self

from flowserv_async.errors import (
    InvalidArgumentError,
    InvalidParameterError,
    InvalidTemplateError,
)
from flowserv_async.template._checks import relative_path, sorted_keys
from flowserv_async.template._values import to_bool, to_float, to_int, to_string

BASE_KEYS = frozenset(
    {"name", "dtype", "index", "isRequired", "label", "help", "defaultValue", "group"}
)


@dataclass(frozen=True)
class InputFile:
    """An uploaded file given as argument, and where it goes in the run folder.

    ``str()`` is the target path, so a reference to a file parameter in a command
    becomes the path of the file in the run folder.
    """

    file_id: str
    target: str

    def __str__(self) -> str:
        return self.target


@dataclass(frozen=True, kw_only=True)
class Parameter(ABC):
    """Base of all parameter declarations."""

    dtype: ClassVar[str]
    extra_keys: ClassVar[frozenset[str]] = frozenset()

    name: str
    index: int = 0
    is_required: bool = True
    label: str | None = None
    help: str | None = None
    default: Any = None
    group: str | None = None

    def __post_init__(self) -> None:
        try:
            self.default_argument()
        except InvalidArgumentError as err:
            raise InvalidParameterError(
                f"parameter '{self.name}': invalid defaultValue {self.default!r} ({err.message})"
            ) from err

    @abstractmethod
    def cast(self, value: Any) -> Any:
        """Convert an argument value to the value used in the workflow.

        Raises:
            InvalidArgumentError: naming the parameter and the value.

        """

    def default_argument(self) -> Any:
        """The argument used when none is given: the converted default, or ``None``."""
        return None if self.default is None else self.cast(self.default)

    def to_dict(self) -> dict[str, Any]:
        """The normalised JSON-ready declaration (optional keys only when set)."""
        doc: dict[str, Any] = {
            "name": self.name,
            "dtype": self.dtype,
            "index": self.index,
            "isRequired": self.is_required,
        }
        optional = {
            "label": self.label,
            "help": self.help,
            "defaultValue": copy.deepcopy(self.default),
            "group": self.group,
        }
        doc.update({key: value for key, value in optional.items() if value is not None})
        doc.update(self._extra_dict())
        return doc

    def _extra_dict(self) -> dict[str, Any]:
        return {}

    def _invalid(self, value: Any, reason: str) -> InvalidArgumentError:
        return InvalidArgumentError(
            f"invalid value {value!r} for parameter '{self.name}': {reason}"
        )

    @classmethod
    def _from_doc(cls, doc: Mapping[str, Any], base: dict[str, Any]) -> Self:
        return cls(**base)


@dataclass(frozen=True)
class NumberRange:
    """An interval like ``[0,10]``, ``(0,10]`` or ``[0,)``; an empty side is infinite."""

    low: float
    high: float
    low_open: bool
    high_open: bool
    text: str

    @classmethod
    def parse(cls, text: object) -> NumberRange:
        """Parse interval notation.

        Raises:
            TypeError: when the text is no string.
            ValueError: with the reason when the text is no valid interval.

        """
        if not isinstance(text, str):
            raise TypeError(f"range must be a string, got {text!r}")
        spec = text.strip()
        if len(spec) < 3 or spec[0] not in "[(" or spec[-1] not in "])":
            raise ValueError(f"invalid range {text!r}")
        sides = spec[1:-1].split(",")
        if len(sides) != 2:
            raise ValueError(f"invalid range {text!r}")
        try:
            low = float(sides[0]) if sides[0].strip() else -math.inf
            high = float(sides[1]) if sides[1].strip() else math.inf
        except ValueError:
            raise ValueError(f"invalid range {text!r}") from None
        if math.isnan(low) or math.isnan(high) or low > high:
            raise ValueError(f"invalid range {text!r}")
        return cls(low, high, spec[0] == "(", spec[-1] == ")", spec)

    def __contains__(self, value: float) -> bool:
        above = value > self.low if self.low_open else value >= self.low
        below = value < self.high if self.high_open else value <= self.high
        return above and below

    def __str__(self) -> str:
        return self.text


@dataclass(frozen=True, kw_only=True)
class NumericParameter(Parameter):
    """Base of the int and float parameters: an optional range."""

    extra_keys: ClassVar[frozenset[str]] = frozenset({"range"})

    value_range: NumberRange | None = None

    def cast(self, value: Any) -> Any:
        """Convert to the number type and check the range."""
        try:
            number = self._convert(value)
        except (TypeError, ValueError) as err:
            raise self._invalid(value, str(err)) from None
        if self.value_range is not None and number not in self.value_range:
            raise self._invalid(value, f"not in range {self.value_range}")
        return number

    @abstractmethod
    def _convert(self, value: Any) -> int | float: ...

    def _extra_dict(self) -> dict[str, Any]:
        return {} if self.value_range is None else {"range": str(self.value_range)}

    @classmethod
    def _from_doc(cls, doc: Mapping[str, Any], base: dict[str, Any]) -> Self:
        value_range = None
        if "range" in doc:
            try:
                value_range = NumberRange.parse(doc["range"])
            except (TypeError, ValueError) as err:
                raise InvalidParameterError(f"parameter '{base['name']}': {err}") from None
        return cls(**base, value_range=value_range)


@dataclass(frozen=True, kw_only=True)
class IntParameter(NumericParameter):
    """Integer parameter.

    As in flowserv, ``'inf'``/``'-inf'`` (and infinite floats) are accepted and become
    infinite floats (templates use them for "no limit").
    """

    dtype: ClassVar[str] = "int"

    def _convert(self, value: Any) -> int | float:
        if value in ("inf", "-inf") or (isinstance(value, float) and math.isinf(value)):
            return float(value)
        return to_int(value)


@dataclass(frozen=True, kw_only=True)
class FloatParameter(NumericParameter):
    """Float parameter."""

    dtype: ClassVar[str] = "float"

    def _convert(self, value: Any) -> float:
        return to_float(value)


@dataclass(frozen=True, kw_only=True)
class BoolParameter(Parameter):
    """Boolean parameter: ``1/t/true/yes`` and ``0/f/false/no/''``; ``None`` is false."""

    dtype: ClassVar[str] = "bool"

    def cast(self, value: Any) -> bool:
        """Convert to a Boolean."""
        try:
            return to_bool(value)
        except (TypeError, ValueError) as err:
            raise self._invalid(value, str(err)) from None


@dataclass(frozen=True, kw_only=True)
class StringParameter(Parameter):
    """String parameter."""

    dtype: ClassVar[str] = "string"

    def cast(self, value: Any) -> str:
        """Convert a scalar to its string form."""
        try:
            return to_string(value)
        except (TypeError, ValueError) as err:
            raise self._invalid(value, str(err)) from None


@dataclass(frozen=True)
class SelectOption:
    """One option of a select parameter."""

    name: str
    value: Any
    is_default: bool | None = None

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready option ``{name, value, isDefault?}``."""
        doc = {"name": self.name, "value": self.value}
        if self.is_default is not None:
            doc["isDefault"] = self.is_default
        return doc


@dataclass(frozen=True, kw_only=True)
class SelectParameter(Parameter):
    """Parameter whose value must equal the value of one of its options."""

    dtype: ClassVar[str] = "select"
    extra_keys: ClassVar[frozenset[str]] = frozenset({"values"})

    values: tuple[SelectOption, ...] = ()

    def cast(self, value: Any) -> Any:
        """Return the value when it equals an option's value."""
        for option in self.values:
            # 1 == True in Python; an option 1 must not accept the argument True.
            same_kind = isinstance(option.value, bool) == isinstance(value, bool)
            if same_kind and option.value == value:
                return option.value
        raise self._invalid(value, "not one of the options")

    def _extra_dict(self) -> dict[str, Any]:
        return {"values": [option.to_dict() for option in self.values]}

    @classmethod
    def _from_doc(cls, doc: Mapping[str, Any], base: dict[str, Any]) -> Self:
        name = base["name"]
        values = doc.get("values")
        if not isinstance(values, list) or not values:
            raise InvalidParameterError(
                f"parameter '{name}': values must be a non-empty list, got {values!r}"
            )
        options: list[SelectOption] = []
        for item in values:
            if not isinstance(item, Mapping) or not {"name", "value"} <= set(item):
                raise InvalidParameterError(
                    f"parameter '{name}': option {item!r} needs 'name' and 'value'"
                )
            unknown = set(item) - {"name", "value", "isDefault"}
            if unknown:
                raise InvalidParameterError(
                    f"parameter '{name}': unknown option key(s) {sorted_keys(unknown)}"
                )
            option_value = item["value"]
            if not isinstance(option_value, (str, int, float)):
                raise InvalidParameterError(
                    f"parameter '{name}': option value {option_value!r} is not a scalar"
                )
            is_default = item.get("isDefault")
            if not isinstance(item["name"], str) or not isinstance(is_default, bool | None):
                raise InvalidParameterError(f"parameter '{name}': malformed option {item!r}")
            if any(option.value == option_value for option in options):
                raise InvalidParameterError(
                    f"parameter '{name}': duplicate option value {option_value!r}"
                )
            options.append(SelectOption(item["name"], option_value, is_default))
        return cls(**base, values=tuple(options))


@dataclass(frozen=True, kw_only=True)
class FileParameter(Parameter):
    """File parameter: the argument names an uploaded file and where it goes.

    The argument value is ``{"type": "$file", "value": {"fileId": ..., "targetPath"?:
    ...}}``. The target path is the argument's ``targetPath``, else the declared
    ``target``, else the ``defaultValue``. The default value is a path: without an
    argument a reference to the parameter yields that path.
    """

    dtype: ClassVar[str] = "file"
    extra_keys: ClassVar[frozenset[str]] = frozenset({"target"})

    target: str | None = None

    def __post_init__(self) -> None:
        if self.target is not None:
            try:
                relative_path(self.target)
            except (TypeError, ValueError) as err:
                raise InvalidParameterError(
                    f"parameter '{self.name}': invalid target: {err}"
                ) from None
        super().__post_init__()

    def cast(self, value: Any) -> InputFile:
        """Convert a ``$file`` argument value to an :class:`InputFile`."""
        if (
            not isinstance(value, Mapping)
            or set(value) != {"type", "value"}
            or value["type"] != "$file"
            or not isinstance(value["value"], Mapping)
        ):
            raise self._invalid(value, "expected {'type': '$file', 'value': {'fileId': ...}}")
        ref = value["value"]
        file_id = ref.get("fileId")
        if not isinstance(file_id, str) or not file_id or set(ref) - {"fileId", "targetPath"}:
            raise self._invalid(value, "expected {'fileId': ..., 'targetPath'?: ...}")
        target = ref.get("targetPath", self.target if self.target is not None else self.default)
        if target is None:
            raise self._invalid(value, "no target path (give 'targetPath')")
        try:
            return InputFile(file_id=file_id, target=relative_path(target))
        except (TypeError, ValueError) as err:
            raise self._invalid(value, str(err)) from None

    def default_argument(self) -> str | None:
        """The default target path, or ``None``."""
        if self.default is None:
            return None
        try:
            return relative_path(self.default)
        except (TypeError, ValueError) as err:
            raise self._invalid(self.default, str(err)) from None

    def _extra_dict(self) -> dict[str, Any]:
        # flowserv always shows the key, ``null`` without a target.
        return {"target": self.target}

    @classmethod
    def _from_doc(cls, doc: Mapping[str, Any], base: dict[str, Any]) -> Self:
        return cls(**base, target=doc.get("target"))


@dataclass(frozen=True, kw_only=True)
class ListParameter(Parameter):
    """List parameter: each element is converted by the ``para`` declaration."""

    dtype: ClassVar[str] = "list"
    extra_keys: ClassVar[frozenset[str]] = frozenset({"para"})

    para: Parameter

    def cast(self, value: Any) -> list[Any]:
        """Convert each element of a list."""
        if not isinstance(value, list):
            raise self._invalid(value, "not a list")
        result = []
        for pos, element in enumerate(value):
            try:
                result.append(self.para.cast(element))
            except InvalidArgumentError as err:
                raise InvalidArgumentError(
                    f"list parameter '{self.name}', element {pos}: {err.message}"
                ) from err
        return result

    def _extra_dict(self) -> dict[str, Any]:
        return {"para": self.para.to_dict()}

    @classmethod
    def _from_doc(cls, doc: Mapping[str, Any], base: dict[str, Any]) -> Self:
        if "para" not in doc:
            raise InvalidParameterError(f"parameter '{base['name']}': missing 'para'")
        return cls(**base, para=parameter_from_dict(doc["para"], 0))


@dataclass(frozen=True, kw_only=True)
class RecordParameter(Parameter):
    """Record parameter: the value ``[{name, value}]`` becomes a dict by field name."""

    dtype: ClassVar[str] = "record"
    extra_keys: ClassVar[frozenset[str]] = frozenset({"fields"})

    fields: tuple[Parameter, ...]

    def cast(self, value: Any) -> dict[str, Any]:
        """Convert the given fields, fill defaults, and check required fields."""
        if not isinstance(value, list):
            raise self._invalid(value, "expected a list of {name, value}")
        declared = {para.name: para for para in self.fields}
        result: dict[str, Any] = {}
        for item in value:
            if not isinstance(item, Mapping) or set(item) != {"name", "value"}:
                raise self._invalid(value, f"malformed field {item!r}")
            para = declared.get(item["name"])
            if para is None:
                raise self._invalid(value, f"unknown field {item['name']!r}")
            if para.name in result:
                raise self._invalid(value, f"duplicate field {para.name!r}")
            try:
                result[para.name] = para.cast(item["value"])
            except InvalidArgumentError as err:
                raise InvalidArgumentError(
                    f"record parameter '{self.name}', field '{para.name}': {err.message}"
                ) from err
        for para in self.fields:
            if para.name in result:
                continue
            default = para.default_argument()
            if default is not None:
                result[para.name] = default
            elif para.is_required:
                raise self._invalid(value, f"missing field {para.name!r}")
        return result

    def _extra_dict(self) -> dict[str, Any]:
        return {"fields": [para.to_dict() for para in self.fields]}

    @classmethod
    def _from_doc(cls, doc: Mapping[str, Any], base: dict[str, Any]) -> Self:
        name = base["name"]
        docs = doc.get("fields")
        if not isinstance(docs, list) or not docs:
            raise InvalidParameterError(
                f"parameter '{name}': fields must be a non-empty list, got {docs!r}"
            )
        fields = [parameter_from_dict(item, pos) for pos, item in enumerate(docs)]
        names = [para.name for para in fields]
        for field_name in names:
            if names.count(field_name) > 1:
                raise InvalidParameterError(f"parameter '{name}': duplicate field '{field_name}'")
        return cls(**base, fields=tuple(fields))


@dataclass(frozen=True, kw_only=True)
class ActorParameter(Parameter):
    """Actor parameter: the value is a workflow step specification (a dict).

    The ``defaultValue`` is not checked at install time (flowserv never checks it); a
    default in the ROB form ``[actor type, step specification]`` means that step.
    """

    dtype: ClassVar[str] = "actor"

    def __post_init__(self) -> None:
        # No check of the default: a malformed one fails the run that uses it.
        return

    def default_argument(self) -> Any:
        """The default step specification (of the ROB ``[type, spec]`` form too), or ``None``."""
        default = self.default
        if (
            isinstance(default, list)
            and len(default) == 2
            and isinstance(default[0], str)
            and isinstance(default[1], dict)
        ):
            default = default[1]
        return None if default is None else self.cast(default)

    def cast(self, value: Any) -> dict[str, Any]:
        """Return the step specification."""
        if not isinstance(value, dict):
            raise self._invalid(value, "not a workflow step specification (dict)")
        return value


PARAMETER_TYPES: Mapping[str, type[Parameter]] = {
    cls.dtype: cls
    for cls in (
        IntParameter,
        FloatParameter,
        BoolParameter,
        StringParameter,
        SelectParameter,
        FileParameter,
        ListParameter,
        RecordParameter,
        ActorParameter,
    )
}


def parameter_from_dict(doc: Any, index: int) -> Parameter:
    """Validate a declaration and create its parameter.

    Args:
        doc: the declaration.
        index: the index used when the declaration has none (its list position).

    Raises:
        InvalidParameterError: for a malformed declaration.

    """
    if not isinstance(doc, Mapping):
        raise InvalidParameterError(f"parameter declaration must be a mapping, got {doc!r}")
    name = doc.get("name")
    if not isinstance(name, str) or not name.strip():
        raise InvalidParameterError(f"parameter declaration without a valid name: {dict(doc)!r}")
    dtype = doc.get("dtype")
    cls = PARAMETER_TYPES.get(dtype) if isinstance(dtype, str) else None
    if cls is None:
        raise InvalidParameterError(f"parameter '{name}': unknown dtype {dtype!r}")
    unknown = set(doc) - BASE_KEYS - cls.extra_keys
    if unknown:
        raise InvalidParameterError(f"parameter '{name}': unknown key(s) {sorted_keys(unknown)}")
    position = doc.get("index", index)
    if not isinstance(position, int) or isinstance(position, bool):
        raise InvalidParameterError(f"parameter '{name}': index {position!r} is not an integer")
    default = doc.get("defaultValue")
    required = doc.get("isRequired", default is None)
    if not isinstance(required, bool):
        raise InvalidParameterError(f"parameter '{name}': isRequired {required!r} is not a bool")
    base: dict[str, Any] = {
        "name": name,
        "index": position,
        "is_required": required,
        "default": copy.deepcopy(default),
    }
    for key in ("label", "help", "group"):
        value = doc.get(key)
        if value is not None and not isinstance(value, str):
            raise InvalidParameterError(f"parameter '{name}': {key} {value!r} is not a string")
        base[key] = value
    return cls._from_doc(doc, base)


class ParameterIndex(Mapping[str, Parameter]):
    """Parameters by name, iterated in display order (index, then name)."""

    def __init__(self, parameters: Iterable[Parameter] = ()) -> None:
        by_name: dict[str, Parameter] = {}
        for para in parameters:
            if para.name in by_name:
                raise InvalidTemplateError(f"duplicate parameter '{para.name}'")
            by_name[para.name] = para
        ordered = sorted(by_name.values(), key=lambda para: (para.index, para.name))
        self._parameters = {para.name: para for para in ordered}

    @classmethod
    def from_list(cls, docs: Any) -> ParameterIndex:
        """Create the index from a list of declarations (``None`` is an empty list).

        Raises:
            InvalidTemplateError: when ``docs`` is no list or names repeat.
            InvalidParameterError: for a malformed declaration.

        """
        if docs is None:
            return cls()
        if not isinstance(docs, Sequence) or isinstance(docs, str):
            raise InvalidTemplateError(f"parameters must be a list, got {docs!r}")
        return cls(parameter_from_dict(doc, pos) for pos, doc in enumerate(docs))

    def merge(self, overrides: Any) -> ParameterIndex:
        """Return a new index where the declarations in ``overrides`` add or replace by name."""
        replacements = ParameterIndex.from_list(overrides)
        kept = [para for name, para in self._parameters.items() if name not in replacements]
        return ParameterIndex([*kept, *replacements.values()])

    def to_list(self) -> list[dict[str, Any]]:
        """The normalised declarations in display order."""
        return [para.to_dict() for para in self._parameters.values()]

    def __getitem__(self, name: str) -> Parameter:
        return self._parameters[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._parameters)

    def __len__(self) -> int:
        return len(self._parameters)

    def __repr__(self) -> str:
        return f"ParameterIndex({list(self._parameters)!r})"
