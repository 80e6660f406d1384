"""Containment: processes that leave their step's process group still die with the run."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import anyio
import anyio.to_thread
import psutil
import pytest

from flowserv_async.engine import RunLog, containment, run_workflow
from flowserv_async.engine.containment import (
    CgroupProcesses,
    RunProcesses,
    TaggedProcesses,
    _spawn_launcher,
    cgroup_root,
    contain_run,
    kill_leftovers,
)
from flowserv_async.engine.process import run_command

# A step that leaves two processes behind outside its process group: a child that
# calls setsid(), and a daemon made by a double fork. Each writes its pid once it runs.
ESCAPE = """
import os, sys, time

def detached(name):
    os.setsid()
    with open(name + '.tmp', 'w') as f:
        f.write(str(os.getpid()))
    os.rename(name + '.tmp', name)
    time.sleep(300)
    os._exit(0)

if os.fork() == 0:
    detached('setsid.pid')
child = os.fork()
if child == 0:
    if os.fork() == 0:
        detached('daemon.pid')
    os._exit(0)
os.waitpid(child, 0)
while not (os.path.exists('setsid.pid') and os.path.exists('daemon.pid')):
    time.sleep(0.01)
if len(sys.argv) > 1:
    time.sleep(float(sys.argv[1]))
"""

MECHANISMS = ["tag", pytest.param("cgroup", marks=pytest.mark.skipif(
    sys.platform != "linux" or cgroup_root() is None, reason="no writable cgroup v2 here"
))]  # fmt: skip


def _alive(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


async def alive(pids: list[int]) -> list[int]:
    return [pid for pid in pids if await anyio.to_thread.run_sync(_alive, pid)]


async def escaped_pids(rundir: Path) -> list[int]:
    with anyio.fail_after(20):
        while True:
            try:
                return [
                    int(await anyio.Path(rundir, name).read_text())
                    for name in ("setsid.pid", "daemon.pid")
                ]
            except FileNotFoundError:
                await anyio.sleep(0.05)


@pytest.fixture
async def contained(tmp_path: Path) -> AsyncIterator[Callable[[str], Any]]:
    made: list[RunProcesses] = []

    async def make(kind: str) -> RunProcesses:
        processes: RunProcesses
        if kind == "tag":
            processes = TaggedProcesses(f"test-{tmp_path.name}-{len(made)}")
        else:
            processes = await contain_run(f"test-{os.getpid()}-{len(made)}")
            assert isinstance(processes, CgroupProcesses)
        made.append(processes)
        return processes

    yield make
    for processes in made:
        await processes.close()


def workflow(script: Path, *args: str) -> dict[str, Any]:
    command = " ".join([sys.executable, str(script), *args])
    return {"steps": [{"name": "s", "action": {"environment": "sh", "commands": [command]}}]}


@pytest.fixture
async def rundir(tmp_path: Path) -> Path:
    path = tmp_path / "run"
    await anyio.Path(path).mkdir()
    return path


@pytest.fixture
def escape_script(tmp_path: Path) -> Path:
    script = tmp_path / "escape.py"
    script.write_text(ESCAPE)
    return script


@pytest.mark.parametrize("kind", MECHANISMS)
async def test_processes_that_left_the_group_die_when_the_run_ends(
    rundir: Path, escape_script: Path, contained: Callable[[str], Any], kind: str
) -> None:
    processes = await contained(kind)
    result = await run_workflow(
        workflow(escape_script), rundir=rundir, log=RunLog(), processes=processes
    )
    assert result.success, result.messages
    assert await alive(await escaped_pids(rundir)) == []


@pytest.mark.parametrize("kind", MECHANISMS)
async def test_the_run_closes_the_containment_it_was_given_and_closing_again_does_nothing(
    rundir: Path, contained: Callable[[str], Any], kind: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    processes = await contained(kind)
    result = await run_workflow(
        workflow(Path(rundir, "nothing.py")), rundir=rundir, log=RunLog(), processes=processes
    )
    assert not result.success  # the script does not exist: the step failed
    assert processes.closed
    if isinstance(processes, CgroupProcesses):
        assert not await anyio.Path(processes.path).exists()

    async def fail() -> None:
        raise AssertionError("a closed containment was closed again")

    monkeypatch.setattr(processes, "_close", fail)
    await processes.close()


# A service process that starts a contained step without a parent death signal, prints
# the step's pid and waits to be killed.
KILLED_ENGINE = """
import os, anyio
from flowserv_async.engine import RunLog
from flowserv_async.engine.containment import CgroupProcesses, contain_run
from flowserv_async.engine.process import run_command

async def main():
    processes = await contain_run(f"test-{os.getpid()}-killed")
    assert isinstance(processes, CgroupProcesses)
    await run_command(
        "sh -c 'echo $$ > step.tmp && mv step.tmp step.pid && exec sleep 300'",
        cwd=os.getcwd(), env=dict(os.environ), log=RunLog(), step="s", grace=1,
        processes=processes,
    )

anyio.run(main)
"""


def _launchers_of(pid: int) -> list[psutil.Process]:
    found = []
    for proc in psutil.process_iter(["cmdline"]):
        cmdline = proc.info["cmdline"] or []
        if len(cmdline) > 1 and cmdline[-1].startswith(f"{pid}:") and "-S" in cmdline:
            found.append(proc)
    return found


@pytest.mark.skipif(
    sys.platform != "linux" or cgroup_root() is None, reason="no writable cgroup v2 here"
)
async def test_contained_steps_die_with_the_engine_process_and_so_does_its_launcher(
    tmp_path: Path,
) -> None:
    async with await anyio.open_process(
        [sys.executable, "-c", KILLED_ENGINE], cwd=tmp_path, stderr=subprocess.DEVNULL
    ) as engine:
        pidfile = anyio.Path(tmp_path, "step.pid")
        with anyio.fail_after(20):
            while not await pidfile.exists():
                await anyio.sleep(0.02)
        step = int(await pidfile.read_text())
        launchers = await anyio.to_thread.run_sync(_launchers_of, engine.pid)
        assert len(launchers) == 1
        engine.kill()
        await engine.wait()
    try:
        # Nothing else would kill it (no other engine, no lease): the launcher does.
        with anyio.fail_after(10):
            while await alive([step, launchers[0].pid]):
                await anyio.sleep(0.05)
    finally:
        for pid in await alive([step]):  # the test failed: leave nothing behind
            os.kill(pid, signal.SIGKILL)


@pytest.mark.parametrize("kind", MECHANISMS)
async def test_processes_that_left_the_group_die_on_cancel(
    rundir: Path, escape_script: Path, contained: Callable[[str], Any], kind: str
) -> None:
    processes = await contained(kind)
    scope = anyio.CancelScope()

    async def run() -> None:
        with scope:
            await run_workflow(
                workflow(escape_script, "300"),
                rundir=rundir,
                log=RunLog(),
                processes=processes,
                grace=0.5,
            )

    async with anyio.create_task_group() as tg:
        tg.start_soon(run)
        pids = await escaped_pids(rundir)
        assert await alive(pids) == pids
        scope.cancel()
    assert scope.cancelled_caught
    assert await alive(pids) == []


async def test_processes_that_left_the_group_die_on_step_timeout(
    rundir: Path, escape_script: Path
) -> None:
    spec = workflow(escape_script, "300")
    spec["steps"][0]["timeout"] = 5
    result = await run_workflow(spec, rundir=rundir, log=RunLog(), grace=0.5)
    assert result.messages == ["step 's' exceeded its time limit of 5 s"]
    assert await alive(await escaped_pids(rundir)) == []


def _spawn_interrupted_run(
    processes: RunProcesses, script: Path, cwd: Path
) -> subprocess.Popen[bytes]:
    """Start a contained process tree as an engine that then died would have left it."""
    env = {**os.environ, **processes.environment()}
    argv = [sys.executable, str(script), "300"]
    if isinstance(processes, CgroupProcesses):  # moved into the cgroup before it starts
        argv = [
            "/bin/sh",
            "-c",
            'echo 0 > "$0/cgroup.procs" && exec "$@"',
            str(processes.path),
            *argv,
        ]
    return subprocess.Popen(argv, cwd=cwd, env=env, start_new_session=True)


@pytest.mark.parametrize("kind", MECHANISMS)
async def test_leftovers_of_an_interrupted_run_are_killed_from_its_record(
    tmp_path: Path, escape_script: Path, contained: Callable[[str], Any], kind: str
) -> None:
    processes = await contained(kind)
    bystander = await anyio.to_thread.run_sync(
        lambda: subprocess.Popen(["sleep", "300"], start_new_session=True)
    )
    main = await anyio.to_thread.run_sync(
        _spawn_interrupted_run, processes, escape_script, tmp_path
    )
    try:
        pids = [main.pid, *await escaped_pids(tmp_path)]
        assert await alive(pids) == pids
        await kill_leftovers(processes.record())
        assert await alive(pids) == []
        assert await alive([bystander.pid]) == [bystander.pid]  # not of the run: untouched
    finally:
        for proc in (bystander, main):
            proc.kill()
            await anyio.to_thread.run_sync(proc.wait)


@pytest.mark.parametrize(
    "record",
    [
        {},
        {"mechanism": "cgroup", "path": "/sys/fs/cgroup/unified", "tag": "x"},
        {"mechanism": "cgroup", "path": "/sys/fs/cgroup/unified/flowserv-async/run-y", "tag": "x"},
        {"mechanism": "tag", "tag": ""},
        {"mechanism": "tag", "tag": 5},
    ],
    ids=["empty", "foreign-cgroup", "other-runs-cgroup", "empty-tag", "tag-not-text"],
)
async def test_records_that_name_nothing_of_ours_kill_nothing(record: dict[str, Any]) -> None:
    bystander = await anyio.to_thread.run_sync(
        lambda: subprocess.Popen(["sleep", "300"], start_new_session=True)
    )
    try:
        await kill_leftovers(record)
        assert await alive([bystander.pid]) == [bystander.pid]
    finally:
        bystander.kill()
        await anyio.to_thread.run_sync(bystander.wait)


@pytest.mark.skipif(
    (sys.platform != "linux" or cgroup_root() is None) and os.environ.get("CI") != "true",
    reason="no writable cgroup v2 with cgroup.kill here (CI=true runs it, and fails without)",
)
async def test_opening_an_engine_removes_the_empty_cgroups_of_dead_engines(
    make_factory: Callable[..., Any], tmp_path: Path
) -> None:
    root = cgroup_root()
    assert root is not None
    dead, mine, unowned = (anyio.Path(root, f"run-{tmp_path.name}-{n}") for n in range(3))
    # An engine process that made the cgroup of a run and was killed before it removed it.
    make = "import anyio; from flowserv_async.engine.containment import contain_run\n"
    make += f"anyio.run(contain_run, {dead.name.removeprefix('run-')!r})"
    await anyio.run_process([sys.executable, "-c", make])
    # A cgroup of this process (a live engine), one between two steps (empty), and one
    # whose maker is not recorded yet (it is being made).
    live = await contain_run(mine.name.removeprefix("run-"))
    assert isinstance(live, CgroupProcesses)
    await unowned.mkdir()
    try:
        assert await dead.is_dir()
        await make_factory({"FLOWSERV_AUTH": "open"}).open()
        assert not await dead.exists()
        assert await mine.is_dir()
        assert await unowned.is_dir()
    finally:
        await live.close()
        await unowned.rmdir()
    assert not await mine.exists()


@pytest.mark.skipif(
    sys.platform != "linux" or cgroup_root() is None, reason="no writable cgroup v2 here"
)
async def test_an_empty_cgroup_a_dead_engine_left_for_the_run_is_made_anew_as_ours(
    tmp_path: Path,
) -> None:
    root = cgroup_root()
    assert root is not None
    left = anyio.Path(root, f"run-{tmp_path.name}")
    # An engine process that made the cgroup of the run and was killed before it removed it.
    make = "import anyio; from flowserv_async.engine.containment import contain_run\n"
    make += f"anyio.run(contain_run, {tmp_path.name!r})"
    await anyio.run_process([sys.executable, "-c", make])
    theirs = os.getxattr(left, "user.flowserv.owner").decode()
    processes = await contain_run(tmp_path.name)
    try:
        assert isinstance(processes, CgroupProcesses)
        assert processes.path == Path(left)
        ours = os.getxattr(left, "user.flowserv.owner").decode()
        assert ours != theirs
        assert ours.partition(":")[0] == str(os.getpid())
    finally:
        await processes.close()
    assert not await left.exists()


@pytest.mark.skipif(sys.platform != "linux", reason="reads /proc")
def test_a_forked_child_records_its_own_identity_not_its_parents() -> None:
    parent = containment._own_identity()
    read, write = os.pipe()
    child = os.fork()
    if child == 0:  # pragma: no cover - runs in the child
        os.write(write, containment._own_identity().encode())
        os._exit(0)
    os.close(write)
    with os.fdopen(read, "rb") as pipe:
        identity = pipe.read().decode()
    os.waitpid(child, 0)
    assert parent == containment._process_identity(os.getpid())
    assert identity.partition(":")[0] == str(child) != str(os.getpid())


def _descriptors() -> set[str]:
    return set(os.listdir("/proc/self/fd"))


@pytest.mark.skipif(
    sys.platform != "linux" or cgroup_root() is None, reason="no writable cgroup v2 here"
)
async def test_a_launcher_that_cannot_start_is_not_relied_on_and_leaves_nothing_open(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    root = cgroup_root()
    assert root is not None
    before = await anyio.to_thread.run_sync(_descriptors)
    monkeypatch.setattr(sys, "executable", "/nonexistent/python")
    assert await anyio.to_thread.run_sync(_spawn_launcher, root, "0:none") == (None, False)
    assert await anyio.to_thread.run_sync(_descriptors) == before
    monkeypatch.undo()
    # One that starts says so, and ends when its socket closes.
    sock, running = await anyio.to_thread.run_sync(_spawn_launcher, root, "0:none")
    assert sock is not None and running
    owner = "0:none"
    launchers = await anyio.to_thread.run_sync(_launcher_processes, owner)
    assert len(launchers) == 1
    sock.close()
    with anyio.fail_after(10):
        while await anyio.to_thread.run_sync(_launcher_processes, owner):
            await anyio.sleep(0.05)


def _launcher_processes(owner: str) -> list[int]:
    return [
        proc.pid
        for proc in psutil.process_iter(["cmdline", "status"])
        if (proc.info["cmdline"] or [])[-1:] == [owner]
        and proc.info["status"] != psutil.STATUS_ZOMBIE
    ]


CGROUP_ONLY = pytest.mark.skipif(
    sys.platform != "linux" or cgroup_root() is None, reason="no writable cgroup v2 here"
)


def _cgroup_of(pid: int) -> str:
    with open(f"/proc/{pid}/cgroup", encoding="utf-8") as groups:
        return next(line[3:].strip() for line in groups if line.startswith("0::"))


async def _command(
    command: str, cwd: Path, processes: RunProcesses
) -> tuple[int, tuple[str, ...], RunLog]:
    log = RunLog()
    result = await run_command(
        command, cwd=cwd, env=dict(os.environ), log=log, step="s", grace=0.5, processes=processes
    )
    return result.returncode, result.stderr_tail, log


@CGROUP_ONLY
async def test_the_launcher_starts_commands_in_the_run_cgroup_and_stays_out_of_it(
    rundir: Path, contained: Callable[[str], Any]
) -> None:
    processes = await contained("cgroup")
    code, _, log = await _command("sh -c 'cat /proc/self/cgroup; echo $PPID'", rundir, processes)
    assert code == 0
    lines = [entry.text for entry in log.lines().lines]
    own = await anyio.to_thread.run_sync(_cgroup_of, os.getpid())
    assert f"0::{own.rstrip('/')}/flowserv-async/{processes.path.name}" in lines
    launcher = int(lines[-1])
    assert launcher != os.getpid()  # not this process's child: the launcher's
    # The launcher is back where it started: killing the run's cgroup spares it.
    launcher_cgroup = await anyio.to_thread.run_sync(_cgroup_of, launcher)
    assert launcher_cgroup == await anyio.to_thread.run_sync(_cgroup_of, os.getpid())


@CGROUP_ONLY
async def test_a_program_the_launcher_cannot_start_fails_with_127_and_leaves_nothing_open(
    rundir: Path, contained: Callable[[str], Any]
) -> None:
    processes = await contained("cgroup")
    before = await anyio.to_thread.run_sync(_descriptors)
    code, tail, _ = await _command("no-such-program-flowserv --help", rundir, processes)
    assert code == 127
    assert tail == (
        "cannot run 'no-such-program-flowserv': [Errno 2] No such file or directory: "
        "'no-such-program-flowserv'",
    )
    assert await anyio.to_thread.run_sync(_descriptors) == before


@CGROUP_ONLY
async def test_a_killed_launcher_ends_its_commands_and_a_new_one_starts_the_next(
    rundir: Path, contained: Callable[[str], Any]
) -> None:
    processes = await contained("cgroup")
    pidfile = anyio.Path(rundir, "step.pid")
    results: list[tuple[int, tuple[str, ...], RunLog]] = []

    async def step() -> None:
        results.append(
            await _command(
                "sh -c 'echo $$ > step.tmp && mv step.tmp step.pid && exec sleep 300'",
                rundir,
                processes,
            )
        )

    async with anyio.create_task_group() as tg:
        tg.start_soon(step)
        with anyio.fail_after(20):
            while not await pidfile.exists():
                await anyio.sleep(0.02)
        pid = int(await pidfile.read_text())
        launcher = await anyio.to_thread.run_sync(lambda: psutil.Process(pid).ppid())
        assert launcher != os.getpid()
        os.kill(launcher, signal.SIGKILL)
    assert results[0][0] == -signal.SIGKILL
    assert await alive([pid, launcher]) == []
    code, _, log = await _command("sh -c 'echo $PPID'", rundir, processes)
    assert code == 0
    assert int(log.lines().lines[-1].text) not in (launcher, os.getpid())


@CGROUP_ONLY
async def test_runs_get_the_tag_where_the_launcher_cannot_start(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(containment, "_launcher", containment._Launcher())
    monkeypatch.setattr(sys, "executable", "/nonexistent/python")
    run_id = f"test-{os.getpid()}-no-launcher"
    processes = await contain_run(run_id)
    assert isinstance(processes, TaggedProcesses)
    root = cgroup_root()
    assert root is not None
    assert not await anyio.Path(root, f"run-{run_id}").exists()


@CGROUP_ONLY
async def test_launched_commands_ignore_the_signals_that_commands_started_here_ignore(
    rundir: Path, contained: Callable[[str], Any]
) -> None:
    processes = await contained("cgroup")
    show = "grep -E '^Sig(Ign|Blk)' /proc/self/status"
    _, _, launched = await _command(show, rundir, processes)
    here = RunLog()
    await run_command(show, cwd=rundir, env=dict(os.environ), log=here, step="s", grace=0.5)
    assert [e.text for e in launched.lines().lines] == [e.text for e in here.lines().lines]
