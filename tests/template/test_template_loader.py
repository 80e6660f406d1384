"""Loading template documents: JSON, YAML and ``!include``."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from flowserv_async.errors import InvalidTemplateError
from flowserv_async.template import load_document, load_template


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


def test_json_document(tmp_path: Path) -> None:
    spec = write(tmp_path / "t.json", json.dumps({"workflow": {"steps": []}}))
    assert load_document(spec) == {"workflow": {"steps": []}}


def test_yaml_with_includes_relative_to_the_including_file(tmp_path: Path) -> None:
    write(tmp_path / "params" / "a.yaml", "name: a\ndtype: int\n")
    write(tmp_path / "params" / "b.yaml", "!include more/b-inner.yaml\n")
    write(tmp_path / "params" / "more" / "b-inner.yaml", "name: b\ndtype: string\n")
    write(tmp_path / "params" / "c.json", '{"name": "c", "dtype": "bool"}')
    spec = write(
        tmp_path / "benchmark.yaml",
        "workflow: {steps: []}\n"
        "parameters:\n"
        "  - !include params/a.yaml\n"
        "  - !include params/b.yaml\n"
        "  - !include params/c.json\n",
    )
    template = load_template(spec)
    assert list(template.parameters) == ["a", "b", "c"]


def test_include_may_use_dotdot_inside_the_base(tmp_path: Path) -> None:
    write(tmp_path / "shared.yaml", "steps: []\n")
    spec = write(tmp_path / "sub" / "t.yaml", "workflow: !include ../shared.yaml\n")
    assert load_document(spec, base_dir=tmp_path) == {"workflow": {"steps": []}}


@pytest.mark.parametrize("target", ["../outside.yaml", "sub/../../outside.yaml"])
def test_include_escaping_the_base_folder_is_refused(tmp_path: Path, target: str) -> None:
    write(tmp_path / "outside.yaml", "steps: []\n")
    spec = write(tmp_path / "tpl" / "t.yaml", f"workflow: !include {target}\n")
    with pytest.raises(InvalidTemplateError, match="leads out of the template folder"):
        load_document(spec)


def test_absolute_include_is_refused(tmp_path: Path) -> None:
    other = write(tmp_path / "x.yaml", "steps: []\n")
    spec = write(tmp_path / "t.yaml", f"workflow: !include {other}\n")
    with pytest.raises(InvalidTemplateError, match="must be a relative path"):
        load_document(spec)


def test_include_through_a_symlink_out_is_refused(tmp_path: Path) -> None:
    write(tmp_path / "secret.yaml", "steps: []\n")
    (tmp_path / "tpl").mkdir()
    os.symlink(tmp_path / "secret.yaml", tmp_path / "tpl" / "link.yaml")
    spec = write(tmp_path / "tpl" / "t.yaml", "workflow: !include link.yaml\n")
    with pytest.raises(InvalidTemplateError, match="leads out of the template folder"):
        load_document(spec)


def test_template_file_outside_base_is_refused(tmp_path: Path) -> None:
    spec = write(tmp_path / "t.yaml", "workflow: {}\n")
    with pytest.raises(InvalidTemplateError, match="outside the folder"):
        load_document(spec, base_dir=tmp_path / "sub")


def test_include_cycle_is_refused(tmp_path: Path) -> None:
    write(tmp_path / "a.yaml", "x: !include b.yaml\n")
    write(tmp_path / "b.yaml", "y: !include a.yaml\n")
    with pytest.raises(InvalidTemplateError, match="include cycle"):
        load_document(tmp_path / "a.yaml")


def test_include_of_a_mapping_node_is_refused(tmp_path: Path) -> None:
    spec = write(tmp_path / "t.yaml", "workflow: !include {a: 1}\n")
    with pytest.raises(InvalidTemplateError, match="needs a file name"):
        load_document(spec)


def test_missing_include_names_the_file(tmp_path: Path) -> None:
    spec = write(tmp_path / "t.yaml", "workflow: !include nothere.yaml\n")
    with pytest.raises(InvalidTemplateError, match=r"nothere\.yaml") as info:
        load_document(spec)
    assert isinstance(info.value.__cause__, FileNotFoundError)


@pytest.mark.parametrize(
    ("name", "text"),
    [
        ("t.yaml", "workflow: [unclosed\n"),
        ("t.json", "{not json"),
        ("t.yaml", "a: !!python/object:os.system x\n"),
    ],
)
def test_parse_error_names_the_file(tmp_path: Path, name: str, text: str) -> None:
    spec = write(tmp_path / name, text)
    with pytest.raises(InvalidTemplateError, match=f"cannot read template file .*{name}") as info:
        load_document(spec)
    assert info.value.__cause__ is not None


def test_missing_file_is_refused(tmp_path: Path) -> None:
    with pytest.raises(InvalidTemplateError, match=r"missing\.yaml"):
        load_document(tmp_path / "missing.yaml")


@pytest.mark.parametrize("text", ["- a\n- b\n", "just text\n", ""])
def test_document_must_be_a_mapping(tmp_path: Path, text: str) -> None:
    spec = write(tmp_path / "t.yaml", text)
    with pytest.raises(InvalidTemplateError, match="must be a mapping"):
        load_document(spec)


ALIAS_BOMB = (
    "a: &a [x, x, x, x, x, x, x, x, x]\n"
    "b: &b [*a, *a, *a, *a, *a, *a, *a, *a, *a]\n"
    "c: &c [*b, *b, *b, *b, *b, *b, *b, *b, *b]\n"
    "d: &d [*c, *c, *c, *c, *c, *c, *c, *c, *c]\n"
    "e: &e [*d, *d, *d, *d, *d, *d, *d, *d, *d]\n"
    "f: &f [*e, *e, *e, *e, *e, *e, *e, *e, *e]\n"
    "g: &g [*f, *f, *f, *f, *f, *f, *f, *f, *f]\n"
    "workflow: {steps: *g}\n"
)


@pytest.mark.parametrize(
    ("text", "line"),
    [
        (ALIAS_BOMB, 2),
        ("workflow: &w {steps: [*w]}\n", 1),
        ("base: &b {x: 1}\nworkflow:\n  <<: *b\n", 3),
    ],
    ids=["bomb", "cycle", "merge-key"],
)
def test_yaml_aliases_are_refused(tmp_path: Path, text: str, line: int) -> None:
    spec = write(tmp_path / "t.yaml", text)
    with pytest.raises(InvalidTemplateError, match=rf"t\.yaml, line {line}: YAML aliases"):
        load_document(spec)


@pytest.mark.parametrize(
    ("name", "text"),
    [
        ("t.yaml", "workflow: " + "[" * 3000 + "]" * 3000 + "\n"),
        ("t.yaml", "workflow:\n" + "".join("  " * i + "- \n" for i in range(1, 200))),
        ("t.json", '{"workflow": ' + "[" * 3000 + "]" * 3000 + "}"),
        ("t.json", '{"workflow": ' + "[" * 100 + "]" * 100 + "}"),
    ],
    ids=["yaml-flow", "yaml-block", "json-3000", "json-100"],
)
def test_deep_nesting_is_refused(tmp_path: Path, name: str, text: str) -> None:
    spec = write(tmp_path / name, text)
    with pytest.raises(InvalidTemplateError, match="nested more than 64 levels deep"):
        load_document(spec)


def test_nesting_is_counted_across_includes(tmp_path: Path) -> None:
    # Each file alone is shallow; the chain of includes is not.
    for i in range(20):
        inner = f"!include f{i + 1}.yaml" if i < 19 else "leaf"
        write(tmp_path / f"f{i}.yaml", "[[[[" + inner + "]]]]\n")
    spec = write(tmp_path / "t.yaml", "workflow: !include f0.yaml\n")
    with pytest.raises(InvalidTemplateError, match="nested more than 64 levels deep"):
        load_document(spec)


def test_include_fan_out_is_bounded(tmp_path: Path) -> None:
    # Twenty files that each include the next one ten times: 10**20 values unrolled.
    for i in range(20):
        inner = f"!include f{i + 1}.yaml" if i < 19 else "leaf"
        write(tmp_path / f"f{i}.yaml", "[" + ", ".join([inner] * 10) + "]\n")
    spec = write(tmp_path / "t.yaml", "workflow: !include f0.yaml\n")
    with pytest.raises(InvalidTemplateError, match="more than 10000 values"):
        load_document(spec)


def test_oversized_file_is_refused(tmp_path: Path) -> None:
    spec = write(tmp_path / "t.yaml", "workflow: {}\n" + "#" * (1 << 20) + "\n")
    with pytest.raises(InvalidTemplateError, match=r"t\.yaml is larger than 1048576 bytes"):
        load_document(spec)


def test_anchor_without_alias_and_moderate_nesting_load(tmp_path: Path) -> None:
    spec = write(tmp_path / "t.yaml", "workflow: &w {steps: " + "[" * 60 + "]" * 60 + "}\n")
    doc = load_document(spec)
    assert doc["workflow"]["steps"] == json.loads("[" * 60 + "]" * 60)
