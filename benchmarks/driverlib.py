"""Helpers of both scenario drivers (standard library and psutil only).

``flowserv_driver`` runs under flowserv-core's own virtualenv, so nothing here may
import flowserv_async.
"""

from __future__ import annotations

import contextlib
import statistics
from collections.abc import Iterable
from typing import Any

import psutil


def mark(label: str) -> None:
    """Tell the harness where the measured window starts or stops."""
    print(f"@mark {label}", flush=True)


def percentile(values: list[float], pct: float) -> float | None:
    """Nearest-rank percentile; ``None`` for no values."""
    if not values:
        return None
    ordered = sorted(values)
    rank = max(0, min(len(ordered) - 1, round(pct / 100 * len(ordered) + 0.5) - 1))
    return ordered[rank]


def summary_ms(prefix: str, seconds: list[float]) -> dict[str, Any]:
    """Median and p95 of durations in seconds, as ``{prefix}_median_ms``/``_p95_ms``."""
    ms = [s * 1000 for s in seconds]
    return {
        f"{prefix}_median_ms": statistics.median(ms) if ms else None,
        f"{prefix}_p95_ms": percentile(ms, 95),
    }


def alive(proc: psutil.Process) -> bool:
    """True for a running process that is not a zombie."""
    try:
        return proc.is_running() and proc.status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


def names(procs: Iterable[psutil.Process]) -> list[str]:
    """The names of the processes that still exist."""
    found = []
    for proc in procs:
        with contextlib.suppress(psutil.Error):
            found.append(proc.name())
    return found


def kill(procs: Iterable[psutil.Process]) -> None:
    """SIGKILL each process that still exists."""
    for proc in procs:
        with contextlib.suppress(psutil.Error):
            proc.kill()


class CancelTally:
    """The cancel scenario's measurements, added up over the counted runs."""

    def __init__(self, reps: int) -> None:
        self.reps = reps
        self.to_canceled: list[float] = []
        self.to_gone: list[float] = []
        self.procs_per_run: list[int] = []
        self.survivors = 0
        self.runs_with_survivors = 0
        self.survivor_names: set[str] = set()

    def add(
        self,
        procs: int,
        canceled_after: float | None,
        gone_after: float | None,
        survivors: int,
        survivor_names: Iterable[str],
    ) -> None:
        """One run: its step processes, seconds to CANCELED and to all gone, leftovers."""
        self.procs_per_run.append(procs)
        if canceled_after is not None:
            self.to_canceled.append(canceled_after)
        if gone_after is not None:
            self.to_gone.append(gone_after)
        self.survivors += survivors
        self.runs_with_survivors += bool(survivors)
        self.survivor_names.update(survivor_names)

    def result(self) -> dict[str, Any]:
        """The metrics both drivers report for the cancel scenario."""
        return {
            "runs": self.reps,
            **summary_ms("canceled", self.to_canceled),
            "not_canceled": self.reps - len(self.to_canceled),
            **summary_ms("procs_gone", self.to_gone),
            "runs_all_gone": len(self.to_gone),
            "runs_with_survivors": self.runs_with_survivors,
            "survivors": self.survivors,
            "survivor_names": sorted(self.survivor_names),
            "procs_per_run": (statistics.mean(self.procs_per_run) if self.procs_per_run else None),
        }


def count_named(procs: Iterable[psutil.Process], name: str) -> int:
    """How many of the live processes are named ``name``."""
    return sum(1 for n in names(p for p in procs if alive(p)) if n == name)


def storm_result(
    n: int,
    calls_s: float,
    final_s: float | None,
    states: Iterable[str],
    errors: list[str],
    survivors: int,
) -> dict[str, Any]:
    """The metrics both drivers report for the cancel-storm scenario."""
    states = list(states)
    result: dict[str, Any] = {
        "runs": n,
        "calls_s": calls_s,
        "final_s": final_s,
        "canceled": sum(1 for s in states if s == "CANCELED"),
        "other_final": sum(1 for s in states if s in ("SUCCESS", "ERROR")),
        "errors": len(errors),
        "survivors": survivors,
    }
    if errors:
        result["first_error"] = errors[0][:200]
    return result
