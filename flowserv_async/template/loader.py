"""Read template and manifest documents: JSON, or YAML with ``!include``.

``!include relative/path.yaml`` is replaced by the document in that file, resolved
relative to the including file. Included files must stay inside the base folder of
the template; ``..``, absolute paths and symlinks that lead out are refused, and so
are include cycles.

Loading reads files, so the services call these functions in a worker thread.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import IO, Any

import yaml

from flowserv_async.errors import InvalidTemplateError


class _IncludeLoader(yaml.SafeLoader):
    """Safe YAML loader that knows the file it reads, for ``!include``."""

    def __init__(self, stream: IO[str], path: Path, base: Path, stack: tuple[Path, ...]) -> None:
        super().__init__(stream)
        self.path = path
        self.base = base
        self.stack = stack


def _include(loader: _IncludeLoader, node: yaml.Node) -> Any:
    if not isinstance(node, yaml.ScalarNode):
        raise InvalidTemplateError(f"{loader.path}: !include needs a file name")
    name = loader.construct_scalar(node)
    if not name or Path(name).is_absolute():
        raise InvalidTemplateError(f"{loader.path}: include {name!r} must be a relative path")
    target = (loader.path.parent / name).resolve()
    if not target.is_relative_to(loader.base):
        raise InvalidTemplateError(
            f"{loader.path}: include {name!r} leads out of the template folder {loader.base}"
        )
    return _load(target, loader.base, loader.stack)


_IncludeLoader.add_constructor("!include", _include)


def load_document(
    path: str | os.PathLike[str], base_dir: str | os.PathLike[str] | None = None
) -> dict[str, Any]:
    """Load a template (or manifest) document.

    Args:
        path: the file; ``.json`` is read as JSON, anything else as YAML.
        base_dir: the folder that the file and its includes must stay in (default:
            the file's folder).

    Raises:
        InvalidTemplateError: naming the file, when it cannot be read or parsed, is
            not a mapping, or an include is refused.

    """
    file = Path(path).resolve()
    base = Path(base_dir).resolve() if base_dir is not None else file.parent
    if not file.is_relative_to(base):
        raise InvalidTemplateError(f"template file {path} is outside the folder {base}")
    doc = _load(file, base, ())
    if not isinstance(doc, dict):
        raise InvalidTemplateError(f"{file}: the document must be a mapping, got {doc!r}")
    return doc


def _load(file: Path, base: Path, stack: tuple[Path, ...]) -> Any:
    if file in stack:
        raise InvalidTemplateError(f"{stack[-1]}: include cycle through {file}")
    try:
        with file.open(encoding="utf-8") as stream:
            if file.suffix.lower() == ".json":
                return json.load(stream)
            loader = _IncludeLoader(stream, file, base, (*stack, file))
            try:
                return loader.get_single_data()
            finally:
                loader.dispose()
    except InvalidTemplateError:
        raise
    except (OSError, UnicodeDecodeError, ValueError, yaml.YAMLError) as err:
        # json.JSONDecodeError is a ValueError.
        raise InvalidTemplateError(f"cannot read template file {file}: {err}") from err
