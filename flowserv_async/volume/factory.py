"""Create storage volumes from volume specs (``FLOWSERV_FILESTORE``)."""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import anyio
import yaml

from flowserv_async.errors import ConstraintViolationError, InvalidConfigurationError
from flowserv_async.volume.base import S3_VOLUME, StorageVolume, StrPath
from flowserv_async.volume.fs import FS_VOLUME, FileSystemVolume

_SPEC_KEYS = frozenset({"type", "id", "args"})

_ARGS: dict[str, tuple[str, tuple[str, ...]]] = {
    FS_VOLUME: ("basedir", ()),
    S3_VOLUME: ("bucket", ("prefix", "endpoint_url", "region")),
}
"""Per volume type: the required argument and the optional ones (all strings)."""
_SPEC_SUFFIXES = frozenset({".json", ".yaml", ".yml"})


async def volume_from_spec(spec: Mapping[str, Any] | StrPath) -> StorageVolume:
    """Return the storage volume that ``spec`` describes.

    ``spec`` is one of:

    - a volume spec ``{"type": "fs", "id": "...", "args": {"basedir": "..."}}`` or
      ``{"type": "s3", "args": {"bucket": "...", "prefix"?, "endpoint_url"?, "region"?}}``
      (``id`` is optional);
    - the path of a JSON (``.json``) or YAML (any other name) file holding such a spec;
      a relative ``basedir`` in the file is relative to the file's folder;
    - any other path: the base folder of an ``fs`` volume.

    The ``s3`` type needs the optional ``s3`` extra (aiobotocore).

    Raises:
        InvalidConfigurationError: naming what is wrong with the spec.

    """
    if isinstance(spec, Mapping):
        return _volume_from_dict(spec, None)
    if not str(spec):
        raise InvalidConfigurationError("invalid volume spec '': empty path")
    path = Path(spec)
    if await anyio.Path(path).is_file():
        return _volume_from_dict(await _read_spec_file(path), path)
    if path.suffix.lower() in _SPEC_SUFFIXES:
        raise InvalidConfigurationError(f"volume spec file '{path}' does not exist")
    return FileSystemVolume(path)


async def _read_spec_file(path: Path) -> Any:
    """Return the parsed content of a JSON or YAML volume spec file."""
    try:
        text = await anyio.Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as err:
        raise InvalidConfigurationError(f"cannot read volume spec file '{path}': {err}") from err
    if path.suffix.lower() == ".json":
        try:
            return json.loads(text)
        except json.JSONDecodeError as err:
            raise InvalidConfigurationError(
                f"invalid JSON in volume spec file '{path}': {err}"
            ) from err
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as err:
        raise InvalidConfigurationError(
            f"invalid YAML in volume spec file '{path}': {err}"
        ) from err


def _volume_from_dict(spec: Any, source: Path | None) -> StorageVolume:
    """Return the volume for a parsed spec; ``source`` is the file it came from, if any."""
    where = f" in '{source}'" if source is not None else ""
    if not isinstance(spec, Mapping):
        raise InvalidConfigurationError(
            f"invalid volume spec{where}: expected an object, got {type(spec).__name__}"
        )
    unknown = sorted(str(key) for key in spec if key not in _SPEC_KEYS)
    if unknown:
        raise InvalidConfigurationError(
            f"invalid volume spec{where}: unknown keys {', '.join(unknown)}"
        )
    if "type" not in spec:
        raise InvalidConfigurationError(f"invalid volume spec{where}: missing 'type'")
    volume_type = spec["type"]
    if volume_type not in (FS_VOLUME, S3_VOLUME):
        raise InvalidConfigurationError(f"unknown volume type {volume_type!r}{where}")
    identifier = spec.get("id")
    if identifier is not None and (not isinstance(identifier, str) or not identifier):
        raise InvalidConfigurationError(f"invalid volume id {identifier!r}{where}")
    required, optional = _ARGS[volume_type]
    args = spec.get("args")
    if not isinstance(args, Mapping):
        raise InvalidConfigurationError(
            f"invalid volume spec{where}: 'args' must be an object with '{required}'"
        )
    unknown = sorted(str(key) for key in args if key != required and key not in optional)
    if unknown:
        raise InvalidConfigurationError(
            f"invalid volume spec{where}: unknown args {', '.join(unknown)}"
        )
    value = args.get(required)
    if not isinstance(value, str) or not value:
        raise InvalidConfigurationError(f"invalid volume {required} {value!r}{where}")
    for name in optional:
        if name in args and not isinstance(args[name], str):
            raise InvalidConfigurationError(f"invalid volume {name} {args[name]!r}{where}")
    if volume_type == S3_VOLUME:
        return _s3_volume(value, args, identifier, where)
    path = Path(value)
    if source is not None and not path.is_absolute():
        path = source.parent / path
    return FileSystemVolume(path, identifier=identifier)


def _s3_volume(
    bucket: str, args: Mapping[str, Any], identifier: str | None, where: str
) -> StorageVolume:
    """Return the S3 volume of checked spec args (aiobotocore is the optional ``s3`` extra)."""
    try:
        from flowserv_async.volume.s3 import S3Volume
    except ImportError as err:
        raise InvalidConfigurationError(
            f"volume type 's3'{where} needs aiobotocore: pip install 'flowserv-async[s3]'"
        ) from err
    try:
        return S3Volume(
            bucket,
            args.get("prefix", ""),
            endpoint_url=args.get("endpoint_url"),
            region=args.get("region"),
            identifier=identifier,
        )
    except ConstraintViolationError as err:
        raise InvalidConfigurationError(f"invalid volume prefix{where}: {err.message}") from err
