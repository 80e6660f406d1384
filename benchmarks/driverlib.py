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
