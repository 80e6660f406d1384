"""Following runs: signal handling, live log and state display, result downloads."""

from __future__ import annotations

import contextlib
import math
import os
import signal
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anyio
import anyio.to_thread
from rich.text import Text

from flowserv_async._paths import relative_path
from flowserv_async.cli._context import CLIError
from flowserv_async.cli.render import Output, state_text
from flowserv_async.errors import InvalidRunStateError
from flowserv_async.events import EventType
from flowserv_async.local import LocalAPIFactory
from flowserv_async.states import FINAL_STATES, RunState
from flowserv_async.volume import DownloadHandle

#: The signals that stop a command: Ctrl-C, ``kill``, and a closed terminal or SSH link.
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


class Interrupt:
    """The first SIGINT, SIGTERM or SIGHUP that a command received, if any.

    A signal sets :attr:`event` and cancels the scope registered with :meth:`guard`
    (the set-up work before a run exists); repeated signals are ignored while the
    command cancels its run.
    """

    def __init__(self) -> None:
        self.event = anyio.Event()
        self.signum: int | None = None
        self._scope: anyio.CancelScope | None = None

    @property
    def exit_code(self) -> int:
        """The conventional status of a process ended by the signal: 128 + number."""
        return 128 + (self.signum if self.signum is not None else signal.SIGINT)

    @property
    def name(self) -> str:
        """The name of the signal (``SIGINT``)."""
        return signal.Signals(self.signum or signal.SIGINT).name

    @contextlib.contextmanager
    def guard(self) -> Iterator[anyio.CancelScope]:
        """A cancel scope that a signal cancels (cancelled at once if one came already)."""
        with anyio.CancelScope() as scope:
            self._scope = scope
            if self.event.is_set():
                scope.cancel()
            try:
                yield scope
            finally:
                self._scope = None

    async def watch(self, signals: AsyncIterator[int]) -> None:
        """Record the first signal and cancel the guarded scope."""
        async for signum in signals:
            if self.signum is None:
                self.signum = signum
                if signum == signal.SIGHUP:
                    await anyio.to_thread.run_sync(_detach_from_terminal)
                self.event.set()
            if self._scope is not None:
                self._scope.cancel()


def _detach_from_terminal() -> None:
    """Point stdout and stderr that are a terminal at /dev/null.

    After a hangup the terminal is gone and writing to it fails (EIO); the command
    must still cancel its run and exit with its status.
    """
    null = os.open(os.devnull, os.O_WRONLY)
    try:
        for fd in (1, 2):
            if os.isatty(fd):
                os.dup2(null, fd)
    finally:
        os.close(null)


@contextlib.asynccontextmanager
async def catching_signals() -> AsyncIterator[Interrupt]:
    """Handle SIGINT, SIGTERM and SIGHUP in the event loop (no KeyboardInterrupt)."""
    interrupt = Interrupt()
    with anyio.open_signal_receiver(*STOP_SIGNALS) as signals:
        async with anyio.create_task_group() as tg:
            tg.start_soon(interrupt.watch, signals)
            try:
                yield interrupt
            finally:
                tg.cancel_scope.cancel()


class LogPrinter:
    """Prints log lines as ``step | text`` and remembers the current step."""

    def __init__(self, out: Output, prefix: str = "") -> None:
        self.out = out
        self.prefix = prefix
        self.step: str | None = None

    def print(self, lines: list[dict[str, Any]]) -> None:
        """Print lines of ``get_log`` (nothing in JSON mode)."""
        for line in lines:
            if line.get("step"):
                self.step = line["step"]
            if self.out.json_output:
                continue
            style = "red" if line["stream"] == "stderr" else ""
            if line["stream"] == "engine":
                style = "dim italic"
            step = f"{self.prefix}{line.get('step') or 'engine'}"
            self.out.line((f"{step} | ", "dim"), Text(line["text"], style=style))


@dataclass
class Followed:
    """How following a run ended.

    Attributes:
        state: the last state seen.
        offset: the log position to continue from.
        stopped: ``"signal"`` or ``"timeout"`` when the follower stopped the run.

    """

    state: str
    offset: int
    stopped: str | None = None


class Status:
    """A spinner line with state, step and elapsed time (on terminals only)."""

    def __init__(self, out: Output, label: str) -> None:
        self.out = out
        self.label = label
        self.started = anyio.current_time()
        self._status: Any = None

    @contextlib.contextmanager
    def shown(self) -> Iterator[Status]:
        """Show the spinner while the block runs."""
        if self.out.json_output or not self.out.console.is_terminal:
            yield self
            return
        with self.out.console.status(self.label) as status:
            self._status = status
            try:
                yield self
            finally:
                self._status = None

    def update(self, state: str, step: str | None) -> None:
        """Show the current state and step."""
        if self._status is None:
            return
        elapsed = anyio.current_time() - self.started
        text = Text.assemble(self.label, " ", state_text(state), f"  {elapsed:.1f} s")
        if step:
            text.append(f"  step {step}")
        self._status.update(text)


async def follow(
    factory: LocalAPIFactory,
    run_id: str,
    out: Output,
    printer: LogPrinter,
    *,
    offset: int = 0,
    label: str = "run",
    interrupt: Interrupt | None = None,
    timeout: float | None = None,  # noqa: ASYNC109 - the run's limit, the run is cancelled
    cancel: bool = True,
) -> Followed:
    """Print a run's log and state changes, as its events arrive, until it is final.

    With ``cancel`` a signal (see ``interrupt``) or the ``timeout`` cancels the run;
    without it, following just stops.
    """
    status = Status(out, f"{label} {run_id}")
    stopped = None
    with status.shown():
        # Entered before the log is read: nothing written in between is missed.
        async with factory.events(run_id=run_id) as stream:
            async with factory() as api:
                state = (await api.runs().get_run(run_id))["state"]
            offset = await drain_log(factory, run_id, printer, offset)
            if state in FINAL_STATES:
                return Followed(state, offset)
            if not out.json_output:
                out.line(f"{label} {run_id}: ", state_text(state))
            status.update(state, printer.step)
            async with anyio.create_task_group() as tg:
                if interrupt is not None:
                    tg.start_soon(_cancel_on, interrupt.event, tg.cancel_scope)
                with anyio.move_on_after(math.inf if timeout is None else timeout) as limit:
                    async for event in stream:
                        if event.type == EventType.RUN_LOG:
                            lines = [x for x in event.data["lines"] if x["pos"] >= offset]
                            printer.print(lines)
                            offset = lines[-1]["pos"] + 1 if lines else offset
                        elif event.type == EventType.RUN_STATE and event.data["state"] != state:
                            state = event.data["state"]
                            if state in FINAL_STATES:
                                break
                            if not out.json_output:
                                out.line(f"{label} {run_id}: ", state_text(state))
                        status.update(state, printer.step)
                tg.cancel_scope.cancel()
            if state in FINAL_STATES:
                return Followed(state, offset)
            if limit.cancelled_caught:
                stopped = "timeout"
            elif interrupt is not None and interrupt.event.is_set():
                stopped = "signal"
    if stopped is not None and cancel:
        reason = (
            f"interrupted by {interrupt.name} on the command line"
            if stopped == "signal" and interrupt is not None
            else f"timed out after {timeout:g} s (--timeout)"
        )
        if not out.json_output:
            out.line(f"{label} {run_id}: canceling ({reason})")
        state = await cancel_run(factory, run_id, reason)
    return Followed(state, offset, stopped)


async def _cancel_on(event: anyio.Event, scope: anyio.CancelScope) -> None:
    await event.wait()
    scope.cancel()


async def cancel_run(factory: LocalAPIFactory, run_id: str, reason: str) -> str:
    """Cancel a run (its processes are gone on return); return its state."""
    try:
        async with factory() as api:
            handle = await api.runs().cancel_run(run_id, reason=reason)
    except InvalidRunStateError:
        # It ended on its own meanwhile.
        async with factory() as api:
            handle = await api.runs().get_run(run_id)
    state: str = handle["state"]
    return state


async def settle(factory: LocalAPIFactory, run_id: str, state: str) -> dict[str, Any]:
    """Wait until this process's engine is done with a final run; return its handle.

    A run that another process cancelled (``runs cancel``) or failed is final in the
    database while this engine may still execute its steps: stop them.
    """
    if state != RunState.SUCCESS:
        await factory.cancel_run(run_id)
    return await factory.wait_run(run_id)


async def drain_log(factory: LocalAPIFactory, run_id: str, printer: LogPrinter, offset: int) -> int:
    """Print the log lines written since ``offset``, page by page; return the next offset."""
    while True:
        async with factory() as api:
            log = await api.runs().get_log(run_id, offset)
        printer.print(log["lines"])
        if log["next"] == offset:
            return offset
        offset = log["next"]


def local_target(folder: Path, name: str) -> Path:
    """The local path for a result file name (a relative POSIX path inside ``folder``)."""
    try:
        parts = relative_path(name).split("/")
    except (TypeError, ValueError):
        raise CLIError(f"refusing to write result file {name!r} outside {folder}") from None
    return folder.joinpath(*parts)


async def write_download(handle: DownloadHandle, target: Path) -> None:
    """Stream a download handle into a local file."""
    try:
        await anyio.Path(target.parent).mkdir(parents=True, exist_ok=True)
        async with await anyio.open_file(target, "wb") as out:
            async for chunk in handle.iter_bytes():
                await out.write(chunk)
    except OSError as exc:
        raise CLIError(f"cannot write {target}: {exc}") from exc


async def download_files(
    factory: LocalAPIFactory, run: dict[str, Any], folder: Path
) -> list[dict[str, Any]]:
    """Write a successful run's result files under ``folder``; return them with ``path``."""
    written = []
    async with factory() as api:
        # A file with an output entry is named by its key: write it at its source path.
        workflow = await api.workflows().get_workflow(run["workflowId"])
        sources = {o["key"]: o["source"] for o in workflow.get("outputs") or []}
        for file in run.get("files", []):
            target = local_target(folder, sources.get(file["name"], file["name"]))
            handle = await api.runs().get_result_file(run["id"], file["id"])
            await write_download(handle, target)
            written.append({**file, "path": str(target)})
    return written


async def download_archive(factory: LocalAPIFactory, run_id: str, folder: Path) -> Path:
    """Write ``run.<id>.tar.gz`` of a successful run into ``folder``; return its path."""
    async with factory() as api:
        handle = await api.runs().get_result_archive(run_id)
        target = local_target(folder, handle.name)
        await write_download(handle, target)
    return target


def print_files(out: Output, files: list[dict[str, Any]]) -> None:
    """Print downloaded result files: name, title and local path."""
    out.line(("result files:", "bold"))
    for file in files:
        title = f" ({file['title']})" if file.get("title") else ""
        out.line("  ", Text(file["name"]), (title, "dim"), "  ", Text(file["path"], style="green"))


def print_messages(out: Output, run: dict[str, Any]) -> None:
    """Print the messages of a failed or cancelled run."""
    for message in run.get("messages", []):
        out.line("  ", Text(str(message), style="red"))
