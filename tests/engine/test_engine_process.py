"""Commands of container steps: templates, exec vs shell, env, cwd, output capture."""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING

import anyio
import pytest

from flowserv_async.engine import (
    RunLog,
    expand_command,
    needs_shell,
    parse_engine_config,
    run_command,
    run_workflow,
)
from flowserv_async.engine.process import MAX_LINE_CHARS, _OutputCapture

if TYPE_CHECKING:
    from .conftest import ProcessProbe

PY = sys.executable


async def run(command: str, rundir: Path, log: RunLog | None = None) -> tuple[int, RunLog]:
    log = log if log is not None else RunLog()
    result = await run_command(
        command, cwd=rundir, env=dict(os.environ), log=log, step="s", grace=0.5
    )
    return result.returncode, log


def texts(log: RunLog, stream: str = "stdout") -> list[str]:
    return [e.text for e in log.lines().lines if e.stream == stream]


@pytest.mark.parametrize(
    ("template", "expected"),
    [
        ("echo ${name} $name", "echo Ada Ada"),
        ("${python} run.py --n ${n}", f"{PY} run.py --n 3"),
        ("cat ${unknown}/x.txt", "cat unknown/x.txt"),
        ("echo $$HOME costs $$5", "echo $HOME costs $5"),
        ("echo $1 ${bad-name}", "echo $1 ${bad-name}"),
        ("  padded  ", "padded"),
    ],
)
def test_expand_command(template: str, expected: str) -> None:
    assert expand_command(template, {"name": "Ada", "n": 3, "python": PY}) == expected


@pytest.mark.parametrize(
    ("command", "shell"),
    [
        ("python run.py --n 3", False),
        ("python -c \"import sys; print(sys.argv[1:])\" 'a b' 'c;d'", False),
        ("sh -c 'sleep 1 & exit 0'", False),
        ("echo a | tr a b", True),
        ("echo a > out.txt", True),
        ("ls *.txt", True),
        ("echo $HOME", True),
        ('echo "$HOME"', True),
        ("cd data", True),
        ("A=1 env", True),
        ("a && b", True),
        ("echo 'unterminated", True),
        ("", True),
    ],
)
def test_needs_shell(command: str, shell: bool) -> None:
    assert needs_shell(command) is shell


async def test_plain_command_is_exec_directly_as_one_process(tmp_path: Path) -> None:
    code, log = await run(f'{PY} -c "import os; print(os.getppid())"', tmp_path)
    assert code == 0
    assert texts(log) == [str(os.getpid())]


async def test_shell_syntax_runs_under_sh(tmp_path: Path) -> None:
    code, log = await run(
        f'{PY} -c "import os; print(os.getppid())" | tr 0-9 x && echo hi > out.txt', tmp_path
    )
    assert code == 0
    # The python process was started by the shell, not by us.
    assert texts(log) != [str(os.getpid())]
    assert await anyio.Path(tmp_path / "out.txt").read_text() == "hi\n"


async def test_runs_in_the_run_folder_with_os_env_and_worker_env(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FLOWSERV_TEST_FROM_OS", "os-value")
    monkeypatch.setenv("FLOWSERV_TEST_OVERRIDE", "os-value")
    log = RunLog()
    config = parse_engine_config(
        {
            "workers": [
                {
                    "name": "w",
                    "type": "subprocess",
                    "env": {"FLOWSERV_TEST_OVERRIDE": "worker-value"},
                    "variables": {"greeting": "from-worker"},
                }
            ],
            "workflow": [{"step": "env", "worker": "w"}],
        }
    )
    script = (
        "import os; print(os.getcwd()); "
        "print(os.environ['FLOWSERV_TEST_FROM_OS'], os.environ['FLOWSERV_TEST_OVERRIDE'])"
    )
    result = await run_workflow(
        {
            "parameters": {"greeting": "from-parameters", "who": "world"},
            "steps": [
                {
                    "name": "env",
                    "action": {
                        "commands": [f'${{python}} -c "{script}"', "echo ${greeting} ${who}"]
                    },
                }
            ],
        },
        rundir=tmp_path,
        log=log,
        config=config,
    )
    assert result.success, result.messages
    assert texts(log) == [
        str(tmp_path),
        "os-value worker-value",
        "from-worker world",
    ]


async def test_output_lines_keep_their_order_and_stream(tmp_path: Path) -> None:
    script = (
        "import sys\n"
        "for i in range(3):\n"
        "    print('out', i, flush=True)\n"
        "    print('err', i, file=sys.stderr, flush=True)\n"
        "sys.stdout.write('no newline at end')\n"
    )
    await anyio.Path(tmp_path / "script.py").write_text(script)
    code, log = await run(f"{PY} script.py", tmp_path)
    assert code == 0
    assert texts(log) == ["out 0", "out 1", "out 2", "no newline at end"]
    assert texts(log, "stderr") == ["err 0", "err 1", "err 2"]
    assert {e.step for e in log.lines().lines} == {"s"}
    positions = [e.pos for e in log.lines().lines]
    assert positions == sorted(positions)


async def test_large_output_on_both_streams_does_not_deadlock(tmp_path: Path) -> None:
    # 5 MB on each stream, more than any pipe buffer; the log keeps a bounded tail.
    script = (
        "import sys\n"
        "line = 'x' * 99 + '\\n'\n"
        "for i in range(50_000):\n"
        "    sys.stdout.write(line)\n"
        "    sys.stderr.write(line)\n"
        "print('last line', flush=True)\n"
    )
    await anyio.Path(tmp_path / "big.py").write_text(script)
    log = RunLog(max_bytes=100_000)
    with anyio.fail_after(30):
        code, _ = await run(f"{PY} big.py", tmp_path, log)
    assert code == 0
    assert log.next == 100_001
    assert log.dropped > 99_000
    page = log.lines()
    assert page.lines[0].stream == "engine"
    assert "earlier line(s) dropped" in page.lines[0].text
    assert texts(log)[-1] == "last line"


async def test_long_lines_are_split_and_bad_bytes_replaced(tmp_path: Path) -> None:
    script = (
        "import sys\n"
        f"sys.stdout.write('a' * {2 * MAX_LINE_CHARS + 5} + '\\n')\n"
        "sys.stdout.flush()\n"
        "sys.stdout.buffer.write(b'caf\\xc3\\xa9 \\xff end\\n')\n"
    )
    await anyio.Path(tmp_path / "long.py").write_text(script)
    code, log = await run(f"{PY} long.py", tmp_path)
    assert code == 0
    assert [len(t) for t in texts(log)[:3]] == [MAX_LINE_CHARS, MAX_LINE_CHARS, 5]
    assert texts(log)[3] == "café \ufffd end"


def test_output_split_anywhere_gives_the_same_lines() -> None:
    data = "one\r\ncafé ünïcode\n".encode() + b"bad \xff\xfe byte\n" + b"x" * 20_000
    whole = RunLog()
    capture = _OutputCapture(whole, "s")
    capture.feed("stdout", data)
    capture.finish("stdout")
    # Byte by byte: every multi-byte character and every \r\n is split somewhere.
    pieces = RunLog()
    capture = _OutputCapture(pieces, "s")
    for index in range(len(data)):
        capture.feed("stdout", data[index : index + 1])
    capture.finish("stdout")
    expected = ["one", "café ünïcode", "bad \ufffd\ufffd byte"]
    expected += ["x" * MAX_LINE_CHARS, "x" * MAX_LINE_CHARS, "x" * (20_000 - 2 * MAX_LINE_CHARS)]
    assert texts(whole) == expected
    assert texts(pieces) == expected


def test_output_streams_are_split_apart_and_stderr_tail_is_kept() -> None:
    log = RunLog()
    capture = _OutputCapture(log, "s")
    capture.feed("stdout", b"out 1\nout")
    capture.feed("stderr", b"err 1\nerr 2\nerr")
    capture.feed("stdout", b" 2\n")
    capture.finish("stderr")
    capture.finish("stdout")
    capture.finish("stdout")  # nothing pending: nothing written
    assert texts(log) == ["out 1", "out 2"]
    assert texts(log, "stderr") == ["err 1", "err 2", "err"]
    assert list(capture.stderr_tail) == ["err 1", "err 2", "err"]


async def test_an_unfinished_line_is_kept_when_an_escaped_process_holds_the_pipes(
    tmp_path: Path, probe: ProcessProbe
) -> None:
    # The setsid'd sleep keeps the pipes open past the drain wait; the run's
    # containment kills it when the run ends.
    command = "sh -c 'printf partial; setsid sleep 60 & echo $! >&2'"
    log = RunLog()
    spec = {"steps": [{"name": "s", "action": {"commands": [command]}}]}
    with anyio.fail_after(30):
        result = await run_workflow(spec, rundir=tmp_path, log=log)
    assert result.success, result.messages
    assert texts(log) == ["partial"]
    assert not await probe.alive(int(texts(log, "stderr")[0]))


def _open_descriptors() -> set[str]:
    return set(os.listdir("/proc/self/fd"))


@pytest.mark.skipif(sys.platform != "linux", reason="reads /proc/self/fd")
async def test_commands_leave_no_descriptor_open(tmp_path: Path) -> None:
    await run("true", tmp_path)  # the pools' threads and descriptors exist from here on
    before = await anyio.to_thread.run_sync(_open_descriptors)
    for command in ("true", "sh -c 'echo out; echo err >&2; exit 3'", "no-such-program-x"):
        await run(command, tmp_path)
    with anyio.CancelScope() as scope:
        scope.cancel()
        await run("sleep 60", tmp_path)
    await anyio.sleep(0.05)  # a watched descriptor is closed in a later loop step
    assert await anyio.to_thread.run_sync(_open_descriptors) == before


async def test_missing_program_fails_with_127(tmp_path: Path) -> None:
    code, log = await run("no-such-program-flowserv --help", tmp_path)
    assert code == 127
    assert "no-such-program-flowserv" in texts(log, "stderr")[0]


async def test_processes_left_behind_by_a_finished_command_are_ended(
    tmp_path: Path, probe: ProcessProbe
) -> None:
    start = time.monotonic()
    # The background sleep keeps the output pipes open; "$!" is its pid.
    code, log = await run("sh -c 'sleep 60 & echo $!'", tmp_path)
    assert code == 0
    assert time.monotonic() - start < 30
    assert not await probe.alive(int(texts(log)[0]))


async def test_exit_by_a_signal_is_the_negative_signal_number(tmp_path: Path) -> None:
    code, _ = await run(
        f"{PY} -c 'import os, signal; os.kill(os.getpid(), signal.SIGTERM)'", tmp_path
    )
    assert code == -15


async def test_without_pidfd_a_thread_learns_the_exit_and_cancel_still_kills_the_group(
    tmp_path: Path, probe: ProcessProbe, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Kernels or sandboxes that refuse pidfd_open, and other platforms, take this path.
    monkeypatch.setattr("flowserv_async.engine.process._PIDFD", False)
    code, log = await run(f"{PY} -c 'print(\"out\"); import sys; sys.exit(3)'", tmp_path)
    assert (code, texts(log)) == (3, ["out"])
    scope = anyio.CancelScope()

    async def cancelled_run() -> None:
        with scope:
            await run("sh -c 'sleep 60 & sleep 60'", tmp_path)

    async with anyio.create_task_group() as tg:
        tg.start_soon(cancelled_run)
        pgid = await probe.leader()
        await probe.wait_members(pgid, 2)
        scope.cancel()
    assert scope.cancelled_caught
    assert await probe.members(pgid) == []


async def test_cancel_while_the_process_starts_still_kills_it(
    tmp_path: Path, probe: ProcessProbe
) -> None:
    with anyio.CancelScope() as scope:
        scope.cancel()  # already cancelled when the spawn begins: it is shielded
        await run(f"{PY} -c 'import time; time.sleep(60)'", tmp_path)
    assert scope.cancelled_caught
    assert await probe.leaders() == []


async def test_a_step_outlives_idle_worker_threads(
    tmp_path: Path, probe: ProcessProbe, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The parent death signal fires when the thread that started a process ends; anyio
    # ends worker threads that idled MAX_IDLE_TIME seconds, pruned on the next call.
    monkeypatch.setattr("anyio._backends._asyncio.WorkerThread.MAX_IDLE_TIME", 0)
    scope = anyio.CancelScope()

    async def step() -> None:
        with scope:
            await run(f"{PY} -c 'import time; time.sleep(60)'", tmp_path)

    async with anyio.create_task_group() as tg:
        tg.start_soon(step)
        pid = await probe.leader()
        for _ in range(3):  # each call prunes the idle threads of the calls before
            async with anyio.create_task_group() as calls:
                for _ in range(8):
                    calls.start_soon(anyio.to_thread.run_sync, time.sleep, 0.01)
        await anyio.sleep(0.2)  # time for a parent death signal to arrive
        alive = await probe.alive(pid)
        scope.cancel()
    assert alive
