"""The async parts of the CLI never block the event loop (checked by blockbuster)."""

from __future__ import annotations

from pathlib import Path

import anyio

from flowserv_async.cli._context import CLIContext
from flowserv_async.cli.run import RunRequest, execute
from flowserv_async.examples.run_helloworld import HERE as HELLOWORLD


async def test_run_command_does_not_block_the_event_loop(tmp_path: Path, names_file: Path) -> None:
    request = RunRequest(
        workflow=str(HELLOWORLD),
        folder=HELLOWORLD,
        arguments=[("greeting", "Hi")],
        files=[("names", names_file)],
        group="local",
        timeout=None,
        output=tmp_path / "out",
        results=tmp_path / "results",
    )
    env = CLIContext(basedir=tmp_path / "home").env()
    assert await execute(env, request, json_output=False) == 0
    greetings = await anyio.Path(tmp_path, "out", "results", "greetings.txt").read_text()
    assert greetings == "Hi, Alice!\nHi, Bob!\n"
