"""Workflow manifests: defaults, overrides, instructions, static files and bad input."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from flowserv_async.errors import InvalidManifestError
from flowserv_async.template.manifest import read_manifest

HELLOWORLD = Path(__file__).parents[2] / "flowserv_async" / "examples" / "helloworld"


def make_source(folder: Path, manifest: Any = None, name: str = "flowserv.yaml") -> Path:
    """A source folder with a spec, code, docs and (optionally) a JSON manifest."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "spec.yaml").write_text("workflow: {}\n")
    (folder / "code").mkdir(exist_ok=True)
    (folder / "code" / "run.py").write_text("print(1)\n")
    (folder / "docs.md").write_text("Read {{ more.md }} now.")
    (folder / "more.md").write_text("*more*")
    if manifest is not None:
        (folder / name).write_text(json.dumps(manifest))
    return folder


def test_helloworld_manifest() -> None:
    manifest = read_manifest(HELLOWORLD)
    assert manifest.source == HELLOWORLD.resolve()
    assert manifest.name == "Hello World"
    assert manifest.description is not None and manifest.description.startswith("Say hello")
    # As flowserv: without the trailing newline.
    assert manifest.instructions == (HELLOWORLD / "instructions.md").read_text().strip()
    assert manifest.specfile == (HELLOWORLD / "benchmark.yaml").resolve()
    assert manifest.files is None


def test_manifest_values_and_included_instructions(tmp_path: Path) -> None:
    doc = {
        "name": "  Demo  ",
        "description": "A demo",
        "instructions": "docs.md",
        "specfile": "spec.yaml",
        "files": [{"source": "code"}, {"source": "more.md", "target": "doc/more.md"}],
    }
    manifest = read_manifest(make_source(tmp_path / "src", doc))
    assert manifest.name == "Demo"
    assert manifest.description == "A demo"
    assert manifest.instructions == "Read *more* now."
    assert manifest.files == [("code", None), ("more.md", "doc/more.md")]


@pytest.mark.parametrize("name", ["flowserv.json", "flowserv.yaml", "flowserv.yml"])
def test_default_manifest_names(tmp_path: Path, name: str) -> None:
    source = make_source(tmp_path, {"name": name, "specfile": "spec.yaml"}, name=name)
    assert read_manifest(source).name == name


def test_json_manifest_is_found_first(tmp_path: Path) -> None:
    source = make_source(tmp_path, {"name": "yaml", "specfile": "spec.yaml"})
    (source / "flowserv.json").write_text(json.dumps({"name": "json", "specfile": "spec.yaml"}))
    assert read_manifest(source).name == "json"


def test_call_arguments_override_the_manifest(tmp_path: Path) -> None:
    source = make_source(tmp_path, {"name": "A", "description": "a", "specfile": "nope.yaml"})
    (source / "other.yaml").write_text("workflow: {}\n")
    manifest = read_manifest(
        source,
        name="B",
        description="b",
        instructions="docs.md",
        specfile="other.yaml",
    )
    assert (manifest.name, manifest.description) == ("B", "b")
    assert manifest.instructions == "Read *more* now."
    assert manifest.specfile == (source / "other.yaml").resolve()


def test_manifest_file_given_by_the_caller(tmp_path: Path) -> None:
    source = make_source(tmp_path / "src", {"name": "default", "specfile": "spec.yaml"})
    (source / "alt.json").write_text(json.dumps({"name": "alt", "specfile": "spec.yaml"}))
    assert read_manifest(source, manifestfile="alt.json").name == "alt"
    elsewhere = tmp_path / "m.json"
    elsewhere.write_text(json.dumps({"name": "abs", "specfile": "spec.yaml"}))
    assert read_manifest(source, manifestfile=elsewhere).name == "abs"


def test_no_manifest_needs_name_and_specfile_arguments(tmp_path: Path) -> None:
    source = make_source(tmp_path)
    manifest = read_manifest(source, name="n", specfile="spec.yaml")
    assert (manifest.name, manifest.instructions, manifest.files) == ("n", None, None)


@pytest.mark.parametrize(
    ("doc", "kwargs", "match"),
    [
        ({"specfile": "spec.yaml"}, {}, "no name"),
        ({"name": "  ", "specfile": "spec.yaml"}, {}, "no name"),
        ({"name": 7, "specfile": "spec.yaml"}, {}, "name must be a string"),
        ({"name": "x"}, {}, "no specfile"),
        (None, {"name": "x"}, "no specfile"),
        ({"name": "x", "specfile": "missing.yaml"}, {}, "not found"),
        ({"name": "x", "specfile": "code"}, {}, "not found"),
        ({"name": "x", "specfile": "../spec.yaml"}, {}, "leaves the source"),
        ({"name": "x", "specfile": "/etc/passwd"}, {}, "leaves the source"),
        ({"name": "x", "specfile": "spec.yaml"}, {"specfile": "../spec.yaml"}, "leaves"),
        ({"name": "x", "specfile": "spec.yaml", "extra": 1}, {}, "unknown key"),
        ({"name": "x", "specfile": "spec.yaml", "description": ["a"]}, {}, "description"),
        ({"name": "x", "specfile": "spec.yaml", "instructions": "none.md"}, {}, "not found"),
        ({"name": "x", "specfile": "spec.yaml", "instructions": "../docs.md"}, {}, "leaves"),
        ({"name": "x", "specfile": "spec.yaml", "instructions": 5}, {}, "instructions"),
        ({"name": "x", "specfile": "spec.yaml"}, {"instructions": "../x.md"}, "leaves"),
        ({"name": "x", "specfile": "spec.yaml", "files": "code"}, {}, "files must be a list"),
        ({"name": "x", "specfile": "spec.yaml", "files": ["code"]}, {}, "malformed"),
        ({"name": "x", "specfile": "spec.yaml", "files": [{"target": "a"}]}, {}, "malformed"),
        (
            {"name": "x", "specfile": "spec.yaml", "files": [{"source": "code", "to": "a"}]},
            {},
            "malformed",
        ),
        ({"name": "x", "specfile": "spec.yaml", "files": [{"source": "../x"}]}, {}, "invalid"),
        ({"name": "x", "specfile": "spec.yaml", "files": [{"source": "/etc"}]}, {}, "invalid"),
        ({"name": "x", "specfile": "spec.yaml", "files": [{"source": "a\x00b"}]}, {}, "invalid"),
        ({"name": "x", "specfile": "spec.yaml", "files": [{"source": 3}]}, {}, "invalid"),
        (
            {"name": "x", "specfile": "spec.yaml", "files": [{"source": "code", "target": "../"}]},
            {},
            "invalid",
        ),
        (
            {"name": "x", "specfile": "spec.yaml", "files": [{"source": "code", "target": "/t"}]},
            {},
            "invalid",
        ),
        ({"name": "x", "specfile": "spec.yaml", "files": [{"source": "gone.txt"}]}, {}, "found"),
        ({"name": "x", "specfile": "spec.yaml"}, {"manifestfile": "none.json"}, "not found"),
        ({"name": "x", "specfile": "spec.yaml"}, {"manifestfile": "../m.json"}, "leaves"),
    ],
)
def test_bad_manifests(tmp_path: Path, doc: Any, kwargs: dict[str, Any], match: str) -> None:
    source = make_source(tmp_path / "src", doc)
    with pytest.raises(InvalidManifestError, match=match):
        read_manifest(source, **kwargs)


def test_source_must_be_a_folder(tmp_path: Path) -> None:
    with pytest.raises(InvalidManifestError, match="not a folder"):
        read_manifest(tmp_path / "missing")
    (tmp_path / "file").write_text("x")
    with pytest.raises(InvalidManifestError, match="not a folder"):
        read_manifest(tmp_path / "file")


@pytest.mark.parametrize("content", ["[1, 2]", "{not json", '"text"'])
def test_unreadable_manifest_documents(tmp_path: Path, content: str) -> None:
    source = make_source(tmp_path)
    (source / "flowserv.json").write_text(content)
    with pytest.raises(InvalidManifestError, match=r"flowserv\.json"):
        read_manifest(source)


def test_symbolic_links_out_of_the_source_are_refused(tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret.txt").write_text("secret")
    (outside / "spec.yaml").write_text("workflow: {}\n")
    source = make_source(tmp_path / "src")
    (source / "link.txt").symlink_to(outside / "secret.txt")
    (source / "linkdir").symlink_to(outside, target_is_directory=True)
    (source / "spec-link.yaml").symlink_to(outside / "spec.yaml")
    base = {"name": "x", "specfile": "spec.yaml"}
    cases: list[tuple[dict[str, Any], str]] = [
        ({**base, "files": [{"source": "link.txt"}]}, "leaves the source"),
        ({**base, "files": [{"source": "linkdir"}]}, "leaves the source"),
        ({**base, "files": [{"source": "linkdir/secret.txt"}]}, "leaves the source"),
        ({**base, "specfile": "spec-link.yaml"}, "leaves the source"),
        ({**base, "instructions": "link.txt"}, "leaves the source"),
    ]
    for doc, match in cases:
        (source / "flowserv.json").write_text(json.dumps(doc))
        with pytest.raises(InvalidManifestError, match=match):
            read_manifest(source)


def test_include_errors(tmp_path: Path) -> None:
    source = make_source(tmp_path / "src", {"name": "x", "specfile": "spec.yaml"})
    (tmp_path / "secret.md").write_text("secret")
    cases = {
        "{{../secret.md}}": "leaves the source",
        "{{missing.md}}": "not found",
        "{{self.md}}": "nested too deeply",
    }
    for text, match in cases.items():
        (source / "self.md").write_text(text)
        with pytest.raises(InvalidManifestError, match=match):
            read_manifest(source, instructions="self.md")


def test_instructions_that_are_not_utf8(tmp_path: Path) -> None:
    source = make_source(tmp_path, {"name": "x", "specfile": "spec.yaml"})
    (source / "latin1.md").write_bytes("caf\xe9".encode("latin-1"))
    with pytest.raises(InvalidManifestError, match="cannot read"):
        read_manifest(source, instructions="latin1.md")
