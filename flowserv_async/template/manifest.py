"""Workflow manifests: where a template's name, instructions, spec and files come from.

A manifest is ``flowserv.json``, ``flowserv.yaml`` or ``flowserv.yml`` in the source
folder (or a file named by the caller), with the keys ``name``, ``description``,
``instructions`` (a file whose text is loaded, ``{{other.md}}`` includes expanded),
``files`` (``[{source, target?}]``, static files to copy) and ``specfile``. The caller's
arguments override the manifest's values; as in flowserv, the ``instructions`` argument
names a file too. Everything here reads files: async code calls :func:`read_manifest` in
a worker thread.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from flowserv_async.errors import InvalidManifestError, InvalidTemplateError
from flowserv_async.template._checks import sorted_keys
from flowserv_async.template.loader import load_document

MANIFEST_FILES = ("flowserv.json", "flowserv.yaml", "flowserv.yml")
MANIFEST_KEYS = frozenset({"name", "description", "instructions", "files", "specfile"})
_INCLUDE = re.compile(r"\{\{\s*([^{}]+?)\s*\}\}")
_MAX_INCLUDE_DEPTH = 10


@dataclass(frozen=True)
class Manifest:
    """What a workflow is installed from.

    Attributes:
        source: the (resolved) source folder.
        name: the workflow name (not yet made unique).
        description: optional description.
        instructions: the instructions text, includes expanded, or None.
        specfile: the template file.
        files: static files ``(source, target)`` relative to the source and the static
            folder, or None to copy the whole source folder.

    """

    source: Path
    name: str
    description: str | None
    instructions: str | None
    specfile: Path
    files: list[tuple[str, str | None]] | None


def _inside(base: Path, relative: str, what: str) -> Path:
    """Resolve ``relative`` under ``base``; refuse anything that leaves it."""
    if not isinstance(relative, str) or not relative or "\x00" in relative:
        raise InvalidManifestError(f"{what}: invalid path {relative!r}")
    path = (base / relative).resolve()
    if not path.is_relative_to(base):
        raise InvalidManifestError(f"{what}: path {relative!r} leaves the source folder")
    return path


def _text(value: Any, what: str) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str):
        raise InvalidManifestError(f"{what} must be a string, got {value!r}")
    return value


def _read_text(path: Path, what: str) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except (OSError, UnicodeError) as exc:
        raise InvalidManifestError(f"{what}: cannot read {path.name!r}: {exc}") from exc


def _files(value: Any, base: Path) -> list[tuple[str, str | None]] | None:
    if value is None:
        return None
    if not isinstance(value, list):
        raise InvalidManifestError(f"files must be a list of {{source, target?}}, got {value!r}")
    result: list[tuple[str, str | None]] = []
    for item in value:
        if not isinstance(item, dict) or "source" not in item or set(item) - {"source", "target"}:
            raise InvalidManifestError(f"files: malformed entry {item!r}")
        source, target = item["source"], item.get("target")
        for path in (source, target):
            if path is None:
                continue
            parts = path.split("/") if isinstance(path, str) else []
            if not parts or path.startswith("/") or ".." in parts or "\x00" in path:
                raise InvalidManifestError(f"files: invalid path {path!r}")
        # Resolved, so that a symbolic link out of the source is refused here too.
        if not _inside(base, source, "files").exists():
            raise InvalidManifestError(f"files: source {source!r} not found")
        result.append((source, target))
    return result


def _expand_includes(text: str, base: Path, depth: int = 0) -> str:
    if depth > _MAX_INCLUDE_DEPTH:
        raise InvalidManifestError("instructions: includes nested too deeply (a cycle?)")

    def include(match: re.Match[str]) -> str:
        path = _inside(base, match.group(1), "instructions include")
        if not path.is_file():
            raise InvalidManifestError(f"instructions include {match.group(1)!r} not found")
        return _expand_includes(_read_text(path, "instructions include").strip(), base, depth + 1)

    return _INCLUDE.sub(include, text)


def read_manifest(
    source: str | Path,
    manifestfile: str | Path | None = None,
    name: str | None = None,
    description: str | None = None,
    instructions: str | None = None,
    specfile: str | Path | None = None,
) -> Manifest:
    """Read the manifest of a source folder and apply the caller's overrides.

    ``manifestfile``, ``specfile`` and ``instructions`` (a file name, as in the manifest)
    given by the caller may be absolute; relative ones, and every path in a manifest, are
    resolved under ``source`` and must stay inside it.

    Raises:
        InvalidManifestError: the source is no folder, the manifest is malformed, a path
            leaves the source, or there is no name or no specfile.

    """
    base = Path(source).resolve()
    if not base.is_dir():
        raise InvalidManifestError(f"workflow source {str(source)!r} is not a folder")
    doc: dict[str, Any] = {}
    if manifestfile is not None:
        path = Path(manifestfile)
        manifest_path = path if path.is_absolute() else _inside(base, str(path), "manifest")
        if not manifest_path.is_file():
            raise InvalidManifestError(f"manifest file {str(manifestfile)!r} not found")
    else:
        found = [base / n for n in MANIFEST_FILES if (base / n).is_file()]
        manifest_path = found[0] if found else None  # type: ignore[assignment]
    if manifest_path is not None:
        try:
            doc = load_document(manifest_path, manifest_path.parent)
        except InvalidTemplateError as exc:
            raise InvalidManifestError(f"manifest {manifest_path.name}: {exc.message}") from exc
        unknown = set(doc) - MANIFEST_KEYS
        if unknown:
            raise InvalidManifestError(f"manifest: unknown key(s) {sorted_keys(unknown)}")
    wf_name = _text(name if name is not None else doc.get("name"), "name")
    if wf_name is None or not wf_name.strip():
        raise InvalidManifestError("the workflow has no name (manifest or argument)")
    spec: str | Path | None = specfile if specfile is not None else doc.get("specfile")
    if spec is None:
        raise InvalidManifestError("the workflow has no specfile (manifest or argument)")
    if specfile is not None and Path(specfile).is_absolute():
        spec_path = Path(specfile)
    else:
        spec_path = _inside(base, str(spec), "specfile")
    if not spec_path.is_file():
        raise InvalidManifestError(f"specfile {str(spec)!r} not found")
    text = None
    if instructions is not None and Path(instructions).is_absolute():
        file: Path | None = Path(instructions)
    elif instructions is not None or doc.get("instructions") is not None:
        value = instructions if instructions is not None else doc["instructions"]
        file = _inside(base, _text(value, "instructions") or "", "instructions")
    else:
        file = None
    if file is not None:
        if not file.is_file():
            raise InvalidManifestError(f"instructions file {str(file.name)!r} not found")
        # As flowserv: each file's text without surrounding white space.
        text = _expand_includes(_read_text(file, "instructions").strip(), base)
    return Manifest(
        source=base,
        name=wf_name.strip(),
        description=_text(
            description if description is not None else doc.get("description"), "description"
        ),
        instructions=text,
        specfile=spec_path,
        files=_files(doc.get("files"), base),
    )
