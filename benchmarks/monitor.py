"""Samples the process tree of a driver from outside it (in the harness process).

Sampling from outside keeps the measurement off the measured process: no extra thread
competing for its GIL or event loop. The tree is found by reading ``/proc/*/stat`` (a
lean version of what psutil does; about 4x cheaper, which matters on a small machine),
memory by psutil's ``memory_full_info`` (PSS and USS, which count the pages that forked
workers share with their parent once, unlike RSS).

Only the window between the driver's ``@mark start`` and ``@mark stop`` is recorded.
"""

from __future__ import annotations

import contextlib
import os
import signal
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import psutil

# (pid, start time in clock ticks): a pid alone may be reused.
ProcKey = tuple[int, int]

MB = 1024 * 1024


def _read_each(name: str) -> Iterator[tuple[int, bytes]]:
    """``/proc/<pid>/<name>`` of every process (those that end meanwhile are skipped)."""
    with os.scandir("/proc") as entries:
        for entry in entries:
            if not entry.name.isdigit():
                continue
            try:
                with open(f"/proc/{entry.name}/{name}", "rb") as f:
                    data = f.read()
            except OSError:
                continue  # ended while we looked
            yield int(entry.name), data


def scan_proc() -> dict[ProcKey, tuple[int, str]]:
    """Every process on the machine: key -> (parent pid, state letter)."""
    table: dict[ProcKey, tuple[int, str]] = {}
    for pid, stat in _read_each("stat"):
        # The command name (field 2) may contain spaces and parentheses.
        fields = stat[stat.rindex(b")") + 2 :].split()
        table[(pid, int(fields[19]))] = (int(fields[1]), fields[0].decode())
    return table


def descendants(root: int, table: dict[ProcKey, tuple[int, str]]) -> list[tuple[ProcKey, str]]:
    """The processes below ``root`` with their state letters."""
    children: dict[int, list[tuple[ProcKey, str]]] = {}
    for key, (ppid, state) in table.items():
        children.setdefault(ppid, []).append((key, state))
    found: list[tuple[ProcKey, str]] = []
    stack = [root]
    while stack:
        for key, state in children.get(stack.pop(), ()):
            found.append((key, state))
            stack.append(key[0])
    return found


def launchers(owner: int) -> list[int]:
    """The launchers of run commands of process ``owner`` (flowserv-async's containment).

    A launcher is nobody's child: its commands are below it, not below ``owner``. Its
    last argument is ``<pid>:<start time>`` of the process it starts commands for.
    """
    prefix = f"{owner}:".encode()
    found = []
    for pid, cmdline in _read_each("cmdline"):
        args = cmdline.split(b"\0")
        if args[1:4] == [b"-I", b"-S", b"-c"] and args[-2].startswith(prefix):
            found.append(pid)
    return found


def tree_memory(pids: list[int]) -> tuple[float, float]:
    """Summed PSS and USS of ``pids`` in MB (processes that ended are skipped)."""
    pss = uss = 0
    for pid in pids:
        try:
            info = psutil.Process(pid).memory_full_info()
        except psutil.Error:
            continue
        pss += getattr(info, "pss", 0)
        uss += info.uss
    return pss / MB, uss / MB


@dataclass
class TreeStats:
    """What the monitor saw inside the measured window."""

    spawned: set[ProcKey] = field(default_factory=set)
    peak_procs: int = 0
    peak_pss_mb: float = 0.0
    peak_uss_mb: float = 0.0
    baseline_pss_mb: float | None = None
    samples: int = 0

    def to_dict(self, runs: int | None) -> dict[str, Any]:
        return {
            "procs_per_run": len(self.spawned) / runs if runs else None,
            "peak_procs": self.peak_procs,
            "peak_pss_mb": self.peak_pss_mb,
            "peak_uss_mb": self.peak_uss_mb,
            "baseline_pss_mb": self.baseline_pss_mb,
            "tree_samples": self.samples,
        }


class TreeMonitor(threading.Thread):
    """Samples the tree below ``pid`` every ``interval`` s (backing off when slow).

    With ``measure=False`` it only keeps track of the processes it saw (for the clean-up
    in :meth:`kill_leftovers`), every 0.1 s, to stay out of the way of latency scenarios.
    """

    def __init__(
        self,
        pid: int,
        measure: bool = True,
        interval: float = 0.02,
        memory_interval: float = 0.2,
    ) -> None:
        super().__init__(name=f"tree-monitor-{pid}", daemon=True)
        self.pid = pid
        self.measure = measure
        self.interval = interval if measure else max(interval, 0.1)
        self.memory_interval = memory_interval
        self.stats = TreeStats()
        self.seen: set[ProcKey] = set()
        self._recording = threading.Event()
        self._baseline_due = False
        self._stopped = threading.Event()
        self._lock = threading.Lock()
        self._launchers: list[int] = []

    def open_window(self) -> None:
        with self._lock:
            self._baseline_due = True
        self._recording.set()

    def close_window(self) -> None:
        self._recording.clear()

    def stop(self) -> None:
        self._stopped.set()
        self.join()

    def run(self) -> None:
        last_memory = 0.0
        while not self._stopped.is_set():
            began = time.perf_counter()
            table = scan_proc()
            tree = descendants(self.pid, table)
            tree.extend(self._launched(table))
            self.seen.update(key for key, _ in tree)
            if self.measure and self._recording.is_set():
                live = [key for key, state in tree if state not in "ZX"]
                stats = self.stats
                stats.samples += 1
                stats.spawned.update(live)
                new_peak = len(live) > stats.peak_procs
                stats.peak_procs = max(stats.peak_procs, len(live))
                with self._lock:
                    baseline, self._baseline_due = self._baseline_due, False
                if baseline or new_peak or began - last_memory >= self.memory_interval:
                    last_memory = began
                    pss, uss = tree_memory([self.pid, *(pid for pid, _ in live)])
                    if baseline and stats.baseline_pss_mb is None:
                        stats.baseline_pss_mb = pss
                    stats.peak_pss_mb = max(stats.peak_pss_mb, pss)
                    stats.peak_uss_mb = max(stats.peak_uss_mb, uss)
            # Never take more than about half a core, even with hundreds of processes.
            elapsed = time.perf_counter() - began
            self._stopped.wait(max(self.interval, elapsed))

    def _launched(self, table: dict[ProcKey, tuple[int, str]]) -> list[tuple[ProcKey, str]]:
        """The launchers of the process and what they started (looked up until found)."""
        pids = {pid for pid, _ in table}
        if not self._launchers or not pids.issuperset(self._launchers):
            self._launchers = launchers(self.pid)
        found = []
        for key, (_, state) in table.items():
            if key[0] in self._launchers:
                found.append((key, state))
                found.extend(descendants(key[0], table))
        return found

    def kill_leftovers(self) -> list[int]:
        """SIGKILL every process seen below the driver that still exists; their pids."""
        table = scan_proc()
        killed = []
        for key in self.seen:
            if key in table and table[key][1] not in "ZX":
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.kill(key[0], signal.SIGKILL)
                    killed.append(key[0])
        return killed
