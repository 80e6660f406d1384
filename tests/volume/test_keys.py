from __future__ import annotations

import pytest

from flowserv_async.errors import ConstraintViolationError
from flowserv_async.volume import join_key, relative_key, validate_key, validate_prefix

BAD_KEYS = [
    "",
    ".",
    "./",
    "/",
    "//",
    "/abs",
    "/etc/passwd",
    "..",
    "../x",
    "a/..",
    "a/../../b",
    "a/../b",
    "a\\b",
    "..\\x",
    "a\x00b",
    "a\nb",
    "a\tb",
    "\x1b[31m",
    "a\x7fb",
    "a\x85b",
]


@pytest.mark.parametrize(
    ("key", "normalised"),
    [
        ("a", "a"),
        ("a/b/c.txt", "a/b/c.txt"),
        ("a//b", "a/b"),
        ("./a/./b/", "a/b"),
        ("results/data.json", "results/data.json"),
        ("..a/b..", "..a/b.."),
        ("name with spaces.txt", "name with spaces.txt"),
        ("ünïcödé/файл.csv", "ünïcödé/файл.csv"),
    ],
)
def test_validate_key_normalises(key: str, normalised: str) -> None:
    assert validate_key(key) == normalised


@pytest.mark.parametrize("key", BAD_KEYS)
def test_validate_key_refuses_and_names_the_key(key: str) -> None:
    with pytest.raises(ConstraintViolationError) as info:
        validate_key(key)
    assert type(info.value) is ConstraintViolationError
    assert repr(key) in info.value.message


def test_validate_prefix_allows_the_root_only_as_empty_string() -> None:
    assert validate_prefix("") == ""
    assert validate_prefix("a/b/") == "a/b"
    with pytest.raises(ConstraintViolationError):
        validate_prefix("..")


def test_join_key_validates_each_part() -> None:
    assert join_key("wf", "static", "data/x.csv") == "wf/static/data/x.csv"
    assert join_key("", "a", "") == "a"
    for parts in [("wf", "/etc/passwd"), ("wf", "../x"), ("wf", "a\\b"), ("", "")]:
        with pytest.raises(ConstraintViolationError):
            join_key(*parts)


def test_relative_key() -> None:
    assert relative_key("a/b/c", "a") == "b/c"
    assert relative_key("a/b", "a/b") == ""
    assert relative_key("a/b", "") == "a/b"
    with pytest.raises(ConstraintViolationError, match="'ab/c' is not inside 'a'"):
        relative_key("ab/c", "a")
