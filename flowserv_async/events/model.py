"""The event kinds and their JSON shape (documented in :mod:`flowserv_async.events`)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Any

from flowserv_async._util import isoformat


class EventType(StrEnum):
    """What an event tells."""

    RUN_CREATED = "run.created"
    RUN_STATE = "run.state"
    RUN_LOG = "run.log"
    POSTPROC_STARTED = "postproc.started"
    POSTPROC_FINISHED = "postproc.finished"
    RANKING_CHANGED = "ranking.changed"


@dataclass(frozen=True, slots=True)
class Event:
    """One event of the stream.

    Attributes:
        id: position in the stream; increases in commit order.
        type: the kind of event.
        time: when the change was made (UTC).
        workflow_id: the workflow it concerns.
        group_id: the group, or None (post-processing runs, rankings).
        run_id: the run, or None (rankings).
        data: the kind's details (JSON values).

    """

    id: int
    type: EventType
    time: datetime
    workflow_id: str
    group_id: str | None
    run_id: str | None
    data: dict[str, Any]

    def to_dict(self) -> dict[str, Any]:
        """The JSON document of the event."""
        return {
            "id": self.id,
            "type": str(self.type),
            "time": isoformat(self.time),
            "workflowId": self.workflow_id,
            "groupId": self.group_id,
            "runId": self.run_id,
            "data": self.data,
        }


@dataclass(frozen=True, slots=True)
class EventFilter:
    """Which events a consumer wants: all that match every given field."""

    run_id: str | None = None
    group_id: str | None = None
    workflow_id: str | None = None

    def matches(self, event: Event) -> bool:
        """True when the event concerns the run, group and workflow asked for."""
        return (
            (self.run_id is None or event.run_id == self.run_id)
            and (self.group_id is None or event.group_id == self.group_id)
            and (self.workflow_id is None or event.workflow_id == self.workflow_id)
        )
