"""Fixtures for the CLI tests: an isolated environment and an in-process invoker."""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result

from flowserv_async.cli import cli

Invoke = Callable[..., Result]


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """No FLOWSERV_* setting of the developer's shell leaks into a test; cwd is tmp."""
    for name in list(os.environ):
        if name.startswith("FLOWSERV_"):
            monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path)


@pytest.fixture
def cli_dir(tmp_path: Path) -> Path:
    """The CLI's base folder (not created: the CLI creates it)."""
    return tmp_path / "home"


@pytest.fixture
def names_file(tmp_path: Path) -> Path:
    """A names file for the hello-world workflow."""
    path = tmp_path / "names.txt"
    path.write_text("Alice\nBob\n", encoding="utf-8")
    return path


@pytest.fixture
def invoke(cli_dir: Path) -> Invoke:
    """Run the CLI in-process on the test's base folder; stdout and stderr apart."""

    def run(*args: str, input: str | None = None, env: dict[str, str] | None = None) -> Result:
        return CliRunner().invoke(
            cli, ["--basedir", str(cli_dir), *args], input=input, env=env, catch_exceptions=False
        )

    return run


def write_template(
    folder: Path,
    name: str,
    commands: list[str],
    parameters: list[dict[str, Any]] | None = None,
    outputs: list[str] | None = None,
) -> Path:
    """Write a one-step workflow template folder (manifest and spec) and return it."""
    folder.mkdir(parents=True, exist_ok=True)
    step = {"name": "main", "action": {"environment": "python", "commands": commands}}
    workflow: dict[str, Any] = {"steps": [step]}
    if outputs is not None:
        workflow["files"] = {"inputs": [], "outputs": outputs}
    spec = {"workflow": workflow, "parameters": parameters or []}
    (folder / "spec.json").write_text(json.dumps(spec), encoding="utf-8")
    manifest = {"name": name, "specfile": "spec.json"}
    (folder / "flowserv.json").write_text(json.dumps(manifest), encoding="utf-8")
    return folder


@pytest.fixture
def template(tmp_path: Path) -> Callable[..., Path]:
    """Write a one-step template folder below tmp: ``template(name, commands, ...)``."""

    def make(name: str, commands: list[str], **kwargs: Any) -> Path:
        return write_template(tmp_path / "templates" / name, name, commands, **kwargs)

    return make
