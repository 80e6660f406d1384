"""Read template and manifest documents: JSON, or YAML with ``!include``.

``!include relative/path.yaml`` is replaced by the document in that file, resolved
relative to the including file. Included files must stay inside the base folder of
the template; ``..``, absolute paths and symlinks that lead out are refused, and so
are include cycles.

Templates are small hand-written documents, and these limits keep a hostile one cheap
to refuse: YAML aliases are refused (none of flowserv's or ROB's public templates uses
anchors, and nested aliases expand exponentially), nesting is at most
:data:`MAX_NESTING` levels deep (counted across includes), and a document with its
includes has at most :data:`MAX_NODES` values and each file at most
:data:`MAX_FILE_SIZE` bytes.

Loading reads files, so the services call these functions in a worker thread.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import IO, Any

import yaml

from flowserv_async.errors import InvalidTemplateError

#: Deepest nesting of lists and mappings in a document, includes counted in.
MAX_NESTING = 64
#: Most values (scalars, lists, mappings) in a document and its includes together.
MAX_NODES = 10_000
#: Largest template, manifest or included file, in bytes.
MAX_FILE_SIZE = 1 << 20


class _Budget:
    """The values a document and its includes may still create; shared by all files."""

    def __init__(self) -> None:
        self.nodes = MAX_NODES

    def spend(self, file: Path, depth: int) -> None:
        self.nodes -= 1
        if self.nodes < 0:
            raise InvalidTemplateError(
                f"{file.name}: the template has more than {MAX_NODES} values"
            )
        if depth > MAX_NESTING:
            raise InvalidTemplateError(
                f"{file.name}: the template is nested more than {MAX_NESTING} levels deep"
            )


class _IncludeLoader(yaml.SafeLoader):
    """Safe YAML loader for templates: ``!include``, no aliases, bounded size."""

    def __init__(self, stream: IO[str], path: Path, base: Path, load: _LoadState) -> None:
        super().__init__(stream)
        self.path = path
        self.base = base
        self.load_state = load
        self.depth = load.depth
        # Includes are loaded when the document is constructed, after it is composed:
        # the depth of each include node is kept for then.
        self.include_depth: dict[int, int] = {}

    def compose_node(self, parent: yaml.Node | None, index: int) -> yaml.Node | None:
        # The composer is where aliases are resolved and where PyYAML recurses, so
        # both limits are enforced before it goes one level further.
        if self.check_event(yaml.AliasEvent):
            mark = self.peek_event().start_mark  # type: ignore[no-untyped-call]
            raise InvalidTemplateError(
                f"{self.path.name}, line {mark.line + 1}: YAML aliases (*name) are not"
                " allowed in templates"
            )
        self.depth += 1
        try:
            self.load_state.budget.spend(self.path, self.depth)
            node: yaml.Node | None = super().compose_node(parent, index)
            if node is not None and node.tag == "!include":
                self.include_depth[id(node)] = self.depth
            return node
        finally:
            self.depth -= 1


class _LoadState:
    """What loading one file needs to know about the files that include it."""

    def __init__(self, stack: tuple[Path, ...], depth: int, budget: _Budget) -> None:
        self.stack = stack
        self.depth = depth
        self.budget = budget


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
    state = loader.load_state
    depth = loader.include_depth[id(node)]
    return _load(target, loader.base, _LoadState(state.stack, depth, state.budget))


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
    doc = _load(file, base, _LoadState((), 0, _Budget()))
    if not isinstance(doc, dict):
        raise InvalidTemplateError(f"{file}: the document must be a mapping, got {doc!r}")
    return doc


def _load(file: Path, base: Path, state: _LoadState) -> Any:
    if file in state.stack:
        raise InvalidTemplateError(f"{state.stack[-1]}: include cycle through {file}")
    nested = _LoadState((*state.stack, file), state.depth, state.budget)
    try:
        text = _read(file)
        if file.suffix.lower() == ".json":
            doc = json.loads(text)
            _check_shape(doc, file, nested)
            return doc
        loader = _IncludeLoader(text, file, base, nested)  # type: ignore[arg-type]
        try:
            return loader.get_single_data()
        finally:
            loader.dispose()
    except InvalidTemplateError:
        raise
    except RecursionError as err:
        # Only the JSON decoder gets here: its C scanner stops at the recursion limit.
        raise InvalidTemplateError(
            f"{file.name}: the template is nested more than {MAX_NESTING} levels deep"
        ) from err
    except (OSError, UnicodeDecodeError, ValueError, yaml.YAMLError) as err:
        # json.JSONDecodeError is a ValueError.
        raise InvalidTemplateError(f"cannot read template file {file}: {err}") from err


def _read(file: Path) -> str:
    with file.open("rb") as stream:
        data = stream.read(MAX_FILE_SIZE + 1)
    if len(data) > MAX_FILE_SIZE:
        raise InvalidTemplateError(f"{file.name} is larger than {MAX_FILE_SIZE} bytes")
    return data.decode("utf-8")


def _check_shape(doc: Any, file: Path, state: _LoadState) -> None:
    """Spend the budget on a parsed JSON document."""
    for depth in value_depths(doc, state.depth + 1):
        state.budget.spend(file, depth)


def value_depths(value: Any, depth: int = 1) -> Iterator[int]:
    """The nesting depth of every value in a JSON-like value, without recursion.

    Code that walks documents recursively (``repr`` among it) fails on values nested
    thousands of levels deep, so input from outside is measured with this first.
    """
    pending: list[tuple[Any, int]] = [(value, depth)]
    while pending:
        item, level = pending.pop()
        yield level
        if isinstance(item, Mapping):
            pending.extend((child, level + 1) for child in item.values())
        elif isinstance(item, list | tuple):
            pending.extend((child, level + 1) for child in item)
