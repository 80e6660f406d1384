"""The events of each persisted change: one call at each place that writes it.

They take the sync session (``AsyncSession.sync_session`` from async code), or the list
of events of a transaction in the SQLite writer thread (:mod:`flowserv_async.events.store`).
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from flowserv_async._util import isoformat
from flowserv_async.events.model import EventType
from flowserv_async.events.store import EventTarget, emit
from flowserv_async.states import FINAL_STATES


def run_created(
    target: EventTarget, run_id: str, workflow_id: str, group_id: str | None, created_at: datetime
) -> None:
    """A run was created (PENDING); a post-processing run also starts post-processing."""
    data = {"state": "PENDING", "createdAt": isoformat(created_at)}
    emit(
        target,
        EventType.RUN_CREATED,
        workflow_id=workflow_id,
        group_id=group_id,
        run_id=run_id,
        data=data,
    )
    if group_id is None:
        emit(
            target,
            EventType.POSTPROC_STARTED,
            workflow_id=workflow_id,
            group_id=None,
            run_id=run_id,
            data=data,
        )


def state_changed(
    target: EventTarget,
    *,
    run_id: str,
    workflow_id: str,
    group_id: str | None,
    state: str,
    messages: Sequence[str] | None,
    created_at: datetime | None,
    started_at: datetime | None,
    ended_at: datetime | None,
) -> None:
    """A run moved to ``state``; the end of a post-processing run also finishes it."""
    data: dict[str, Any] = {
        "state": state,
        "messages": list(messages or []),
        "createdAt": isoformat(created_at),
        "startedAt": isoformat(started_at),
        "finishedAt": isoformat(ended_at),
    }
    kinds = [EventType.RUN_STATE]
    if group_id is None and state in FINAL_STATES:
        kinds.append(EventType.POSTPROC_FINISHED)
    for kind in kinds:
        emit(target, kind, workflow_id=workflow_id, group_id=group_id, run_id=run_id, data=data)


def log_appended(
    target: EventTarget,
    run_id: str,
    workflow_id: str,
    group_id: str | None,
    lines: Sequence[dict[str, Any]],
) -> None:
    """Log lines ``{pos, step, stream, text}`` of a run were stored."""
    emit(
        target,
        EventType.RUN_LOG,
        workflow_id=workflow_id,
        group_id=group_id,
        run_id=run_id,
        data={"lines": list(lines)},
    )


def ranking_changed(target: EventTarget, workflow_id: str, run_id: str, reason: str) -> None:
    """The leaderboard of a workflow changed: ``reason`` is ``ranked`` or ``deleted``.

    A workflow event (no group, no run): the leaderboard is public.
    """
    emit(
        target,
        EventType.RANKING_CHANGED,
        workflow_id=workflow_id,
        group_id=None,
        run_id=None,
        data={"runId": run_id, "reason": reason},
    )
