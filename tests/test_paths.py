"""The one rule for relative paths, and the layers that apply it."""

from __future__ import annotations

import pytest

from flowserv_async._paths import relative_path
from flowserv_async.engine.spec import normalize_path
from flowserv_async.errors import ConstraintViolationError, InvalidTemplateError
from flowserv_async.template._checks import relative_path as template_path
from flowserv_async.volume import validate_key


@pytest.mark.parametrize(
    ("path", "normal"),
    [("a", "a"), ("a//b/./c/", "a/b/c"), ("./x.txt", "x.txt"), ("..a/b..", "..a/b..")],
)
def test_relative_paths_are_normalised(path: str, normal: str) -> None:
    assert relative_path(path) == normal


@pytest.mark.parametrize(
    ("path", "reason"),
    [
        ("", "names no file"),
        ("./", "names no file"),
        ("/etc/passwd", "absolute"),
        ("C:x", "absolute"),
        ("a/../b", "leaves its folder"),
        ("..", "leaves its folder"),
        ("a\\b", "backslash"),
        ("a\x00b", "NUL or control character"),
        ("a\nb", "NUL or control character"),
    ],
)
def test_every_layer_refuses_the_same_paths(path: str, reason: str) -> None:
    with pytest.raises(ValueError, match=reason):
        relative_path(path)
    with pytest.raises(ValueError, match=reason):
        template_path(path)
    with pytest.raises(ConstraintViolationError, match=reason):
        validate_key(path)
    with pytest.raises(InvalidTemplateError, match=reason):
        normalize_path(path, "output")


def test_a_path_must_be_a_string() -> None:
    with pytest.raises(TypeError, match="must be a string"):
        relative_path(3)
    with pytest.raises(InvalidTemplateError, match="must be a string"):
        normalize_path(None, "output")
