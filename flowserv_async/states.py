"""Run states and the transitions between them (SPEC 4)."""

from __future__ import annotations

from enum import StrEnum


class RunState(StrEnum):
    """The state of a workflow run, stored as its string value."""

    PENDING = "PENDING"
    RUNNING = "RUNNING"
    CANCELED = "CANCELED"
    ERROR = "ERROR"
    SUCCESS = "SUCCESS"


ACTIVE_STATES = frozenset({RunState.PENDING, RunState.RUNNING})
FINAL_STATES = frozenset({RunState.CANCELED, RunState.ERROR, RunState.SUCCESS})


def allowed_sources(target: RunState) -> frozenset[RunState]:
    """The states from which a run may move to ``target`` (besides staying in it)."""
    if target == RunState.PENDING:
        return frozenset()
    if target == RunState.RUNNING:
        return frozenset({RunState.PENDING})
    return ACTIVE_STATES
