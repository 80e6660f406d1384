"""The CLI in-process (click's CliRunner): help, errors, JSON output, each command group."""

from __future__ import annotations

import json
import stat
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click
import pytest
from click.testing import Result

from flowserv_async import __version__
from flowserv_async.cli import cli
from flowserv_async.cli.run import folder_workflow_id
from flowserv_async.examples import run_helloworld

HELLOWORLD = run_helloworld.HERE
Invoke = Callable[..., Result]


def command_paths(group: click.Group = cli, prefix: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    paths = [prefix]
    for name, command in sorted(group.commands.items()):
        if isinstance(command, click.Group):
            paths.extend(command_paths(command, (*prefix, name)))
        else:
            paths.append((*prefix, name))
    return paths


def as_json(result: Any) -> Any:
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def run_hello(invoke: Invoke, names: Path, *args: str) -> Any:
    return invoke("run", str(HELLOWORLD), "--file", f"names={names}", *args)


# -- help, usage errors, error lines -----------------------------------------------------


@pytest.mark.parametrize("path", command_paths(), ids=lambda p: " ".join(p) or "root")
def test_every_command_and_group_has_help(invoke: Invoke, path: tuple[str, ...]) -> None:
    result = invoke(*path, "--help")
    assert result.exit_code == 0
    assert result.stdout.startswith("Usage: ")
    assert result.stderr == ""


def test_version_is_the_package_version(invoke: Invoke) -> None:
    result = invoke("--version")
    assert result.exit_code == 0
    assert __version__ in result.stdout


@pytest.mark.parametrize(
    "args",
    [
        ["--bogus"],
        ["no-such-command"],
        ["run"],
        ["run", "some-workflow", "--arg", "greeting"],
        ["run", "some-workflow", "--arg", "=x"],
        ["run", "some-workflow", "--file", "names=/does/not/exist.txt"],
        ["run", "./no-such-folder"],
        ["run", "some-workflow", "--timeout", "-1"],
        ["runs", "list", "--state", "SLEEPING"],
        ["workflows", "leaderboard", "wf", "--order", "avg_count:upwards"],
        ["files", "upload", "group", "/does/not/exist.txt"],
        ["groups", "create", "only-one-argument"],
    ],
    ids=lambda a: " ".join(a),
)
def test_bad_usage_is_one_line_and_exit_code_2(invoke: Invoke, args: list[str]) -> None:
    result = invoke(*args)
    assert result.exit_code == 2
    lines = result.stderr.splitlines()
    assert len(lines) == 1
    assert lines[0].startswith("error: ")
    assert "--help" in lines[0]
    assert "Traceback" not in result.output


def test_flowserv_error_is_one_line_and_exit_code_1(invoke: Invoke) -> None:
    result = invoke("workflows", "show", "unknown")
    assert result.exit_code == 1
    assert result.stderr == "error: unknown workflow 'unknown'\n"
    assert result.stdout == ""


def test_bad_configuration_is_an_error_line(invoke: Invoke) -> None:
    result = invoke("workflows", "list", env={"FLOWSERV_MAX_CONCURRENT_RUNS": "many"})
    assert result.exit_code == 1
    assert result.stderr.startswith("error: invalid value 'many' for FLOWSERV_MAX_CONCURRENT_RUNS")


# -- init and config ---------------------------------------------------------------------


def test_init_creates_the_database_and_refuses_to_erase_it(invoke: Invoke, cli_dir: Path) -> None:
    result = invoke("init")
    assert result.exit_code == 0, result.output
    assert (cli_dir / "flowserv.db").is_file()
    again = invoke("init", input="y\n")  # stdin is no terminal: never asks
    assert again.exit_code == 1
    assert again.stderr.startswith("error: database sqlite+aiosqlite:///")
    assert "use --force to erase it" in again.stderr


def test_init_force_erases_the_data(
    invoke: Invoke, template: Callable[..., Path], cli_dir: Path
) -> None:
    folder = template("noop", ["true"])
    assert invoke("workflows", "install", str(folder)).exit_code == 0
    assert len(as_json(invoke("--json", "workflows", "list"))["workflows"]) == 1
    result = invoke("--json", "init", "--force")
    assert as_json(result)["erased"] is True
    assert as_json(invoke("--json", "workflows", "list")) == {"workflows": []}


def test_config_shows_the_effective_settings(invoke: Invoke, cli_dir: Path) -> None:
    doc = as_json(invoke("config", "--json"))
    assert doc["api_dir"] == str(cli_dir)
    assert doc["auth"] == "open"  # the CLI's default for local use
    assert doc["database"] == f"sqlite+aiosqlite:///{cli_dir / 'flowserv.db'}"
    strict = as_json(invoke("--json", "config", env={"FLOWSERV_AUTH": "default"}))
    assert strict["auth"] == "default"
    table = invoke("config")
    assert "cancel_grace" in table.stdout


def test_examples_lists_the_bundled_hello_world(invoke: Invoke) -> None:
    doc = as_json(invoke("--json", "examples"))
    assert {"name": "helloworld", "path": str(HELLOWORLD.resolve())} in doc["examples"]


# -- run, in process ---------------------------------------------------------------------


def test_run_installs_runs_downloads_and_reuses_the_workflow(
    invoke: Invoke, names_file: Path, tmp_path: Path
) -> None:
    first = run_hello(invoke, names_file, "--arg", "greeting=Hi")
    assert first.exit_code == 0, first.output
    assert "SUCCESS" in first.stdout
    run_id = first.stdout.split("run ", 1)[1].split(":", 1)[0]
    greetings = tmp_path / "flowserv-results" / run_id / "results" / "greetings.txt"
    assert str(greetings) in first.stdout
    assert greetings.read_text() == "Hi, Alice!\nHi, Bob!\n"
    assert "post-processing" in first.stdout

    out = tmp_path / "out"
    second = as_json(run_hello(invoke, names_file, "--json", "--output", str(out)))
    assert second["state"] == "SUCCESS"
    assert second["workflowId"] == folder_workflow_id(HELLOWORLD.resolve())
    assert second["outputDir"] == str(out)
    paths = {f["name"]: f["path"] for f in second["files"]}
    assert paths["greetings"] == str(out / "results" / "greetings.txt")  # at its source path
    assert Path(paths["greetings"]).read_text() == "Hello, Alice!\nHello, Bob!\n"
    assert second["postproc"]["state"] == "SUCCESS"

    workflows = as_json(invoke("--json", "workflows", "list"))["workflows"]
    assert [w["id"] for w in workflows] == [second["workflowId"]]
    groups = as_json(invoke("--json", "groups", "list"))["groups"]
    assert [g["name"] for g in groups] == ["local"]

    # Every read command has a JSON form.
    wf, group = second["workflowId"], groups[0]["id"]
    for args in [
        ["workflows", "show", wf],
        ["workflows", "show", "Hello World"],
        ["workflows", "leaderboard", wf, "--all", "--order", "max_len:asc,avg_count"],
        ["groups", "show", "local"],
        ["files", "list", group],
        ["runs", "list", "--state", "success"],
        ["runs", "show", second["id"]],
        ["runs", "logs", second["id"]],
        ["config"],
    ]:
        assert as_json(invoke("--json", *args)) is not None, args

    board = as_json(invoke("--json", "workflows", "leaderboard", wf, "--all"))
    assert {r["run"]["id"] for r in board["ranking"]} == {run_id, second["id"]}
    best = as_json(invoke("--json", "workflows", "leaderboard", wf))
    assert len(best["ranking"]) == 1
    shown = invoke("workflows", "show", wf)
    for text in ("names", "file", "sleeptime", "0.1", "Greeting"):
        assert text in shown.stdout
    listed = as_json(invoke("--json", "runs", "list", "--group", "local"))["runs"]
    assert [r["id"] for r in listed] == [run_id, second["id"]]


def test_run_that_fails_exits_1_with_its_messages(
    invoke: Invoke, template: Callable[..., Path]
) -> None:
    py = sys.executable
    folder = template(
        "fails", [f"{py} -c \"import sys; print('oops', file=sys.stderr); sys.exit(3)\""]
    )
    result = invoke("run", str(folder))
    assert result.exit_code == 1
    assert "ERROR" in result.stdout
    assert "main | oops" in result.stdout  # the step's stderr, streamed
    assert "Traceback" not in result.output


def test_run_timeout_cancels_the_run(invoke: Invoke, template: Callable[..., Path]) -> None:
    folder = template("slow", ["sleep 30"])
    result = invoke("run", str(folder), "--timeout", "0.5")
    assert result.exit_code == 1
    assert "CANCELED" in result.stdout
    assert "timed out after 0.5 s" in result.stdout


def test_run_with_bad_arguments_leaves_no_run(invoke: Invoke, names_file: Path) -> None:
    missing = invoke("run", str(HELLOWORLD))
    assert missing.exit_code == 1
    assert missing.stderr == "error: missing argument for parameter 'names'\n"
    unknown = run_hello(invoke, names_file, "--arg", "colour=red")
    assert unknown.exit_code == 1
    assert unknown.stderr == "error: unknown parameter 'colour'\n"
    assert as_json(invoke("--json", "runs", "list")) == {"runs": []}


# -- workflows, groups, files, runs ------------------------------------------------------


def test_workflow_group_and_file_commands(
    invoke: Invoke, template: Callable[..., Path], names_file: Path
) -> None:
    folder = template("echo", ["echo hi"])
    wf = as_json(invoke("--json", "workflows", "install", str(folder), "--id", "echo"))
    assert wf["id"] == "echo"
    assert invoke("workflows", "leaderboard", "echo").stdout.startswith("the workflow has no")
    group = as_json(invoke("groups", "create", "echo", "team", "--json"))
    upload = as_json(
        invoke("--json", "files", "upload", "team", str(names_file), "--name", "n.txt")
    )
    assert upload["name"] == "n.txt"
    assert [f["id"] for f in as_json(invoke("--json", "files", "list", "team"))["files"]] == [
        upload["id"]
    ]
    assert invoke("files", "delete", "team", upload["id"]).exit_code == 0
    assert as_json(invoke("--json", "files", "list", group["id"])) == {"files": []}
    duplicate = invoke("groups", "create", "echo", "team")
    assert duplicate.exit_code == 1
    assert duplicate.stderr == "error: group name 'team' is taken for this workflow\n"
    assert invoke("groups", "delete", "team").exit_code == 0
    assert invoke("workflows", "delete", "echo").exit_code == 0
    gone = invoke("groups", "show", group["id"])
    assert gone.stderr == f"error: unknown workflow group '{group['id']}'\n"


def test_runs_commands_download_logs_cancel_delete(
    invoke: Invoke, template: Callable[..., Path], tmp_path: Path
) -> None:
    folder = template(
        "writer",
        ["mkdir -p out", "echo line one", "echo result > out/r.txt"],
        outputs=["out/r.txt"],
    )
    run = as_json(invoke("--json", "run", str(folder), "--output", str(tmp_path / "first")))
    run_id = run["id"]
    log = as_json(invoke("--json", "runs", "logs", run_id, "--follow"))
    assert [line["text"] for line in log["lines"]] == ["line one"]
    assert "main | line one" in invoke("runs", "logs", run_id).stdout

    target = tmp_path / "again"
    files = as_json(invoke("--json", "runs", "download", run_id, "--output", str(target)))
    assert (target / "out" / "r.txt").read_text() == "result\n"
    assert files["files"][0]["path"] == str(target / "out" / "r.txt")
    archive = as_json(invoke("--json", "runs", "download", run_id, "--archive"))
    assert archive["archive"] == str(
        tmp_path / "flowserv-results" / run_id / f"run.{run_id}.tar.gz"
    )
    assert Path(archive["archive"]).stat().st_size > 0

    not_active = invoke("runs", "cancel", run_id)
    assert not_active.exit_code == 1
    assert not_active.stderr == f"error: run '{run_id}' is SUCCESS, not active\n"
    assert invoke("runs", "delete", run_id).exit_code == 0
    assert invoke("runs", "show", run_id).stderr == f"error: unknown run '{run_id}'\n"


# -- users -------------------------------------------------------------------------------


def test_login_stores_the_token_privately_and_logout_removes_it(
    invoke: Invoke, cli_dir: Path
) -> None:
    assert invoke("users", "register", "alice", input="secret\n").exit_code == 0
    assert invoke("users", "whoami").stderr == "error: not logged in\n"
    wrong = invoke("users", "login", "alice", "--password", "wrong")
    assert wrong.stderr == "error: unknown user 'alice'\n"
    assert not (cli_dir / "cli.json").exists()

    result = invoke("users", "login", "alice", input="secret\n")
    assert result.exit_code == 0, result.output
    token_file = cli_dir / "cli.json"
    assert stat.S_IMODE(token_file.stat().st_mode) == 0o600
    assert json.loads(token_file.read_text())["username"] == "alice"
    assert as_json(invoke("--json", "users", "whoami"))["username"] == "alice"

    assert invoke("users", "logout").stdout == "logged out\n"
    assert not token_file.exists()
    assert invoke("users", "logout").stdout == "not logged in\n"


def test_default_policy_uses_the_stored_login(
    invoke: Invoke, template: Callable[..., Path]
) -> None:
    strict = {"FLOWSERV_AUTH": "default"}
    folder = template("echo", ["echo hi"])
    assert invoke("workflows", "install", str(folder), "--id", "echo", env=strict).exit_code == 0
    anonymous = invoke("groups", "create", "echo", "team", env=strict)
    assert anonymous.stderr == "error: not logged in\n"
    invoke("users", "register", "bob", "--password", "pw", env=strict)
    invoke("users", "login", "bob", "--password", "pw", env=strict)
    group = as_json(invoke("--json", "groups", "create", "echo", "team", env=strict))
    assert [m["username"] for m in group["members"]] == ["bob"]
    run = as_json(invoke("--json", "run", "echo", "--group", "team", env=strict))
    assert run["state"] == "SUCCESS"
    assert run["groupId"] == group["id"]
