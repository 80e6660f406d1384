"""Run events: one ``async for`` stream of what happens to runs, across processes.

``factory.events(run_id=..., group_id=..., workflow_id=..., after=...)`` returns an
:class:`EventStream`. Every event is written to the ``events`` table in the transaction
of the change it describes, with an id that increases in commit order; ``after=`` (the
id of the last event seen) resumes with no gap and no duplicate while the store still
keeps those events (``FLOWSERV_EVENTS_KEEP``, newest 100,000 by default; older
positions raise :class:`~flowserv_async.errors.EventsExpiredError`).

The JSON shape of an event (:meth:`Event.to_dict`)::

    {"id": 42, "type": "run.state", "time": "2026-01-01T12:00:00.123456+00:00",
     "workflowId": "...", "groupId": "..." | null, "runId": "..." | null,
     "data": {...}}

``data`` by ``type``:

- ``run.created``: ``{state: "PENDING", createdAt}``
- ``run.state``: ``{state, messages, createdAt, startedAt, finishedAt}`` (the run
  handle's fields; timestamps null until set)
- ``run.log``: ``{lines: [{pos, step, stream, text}]}`` (one event per stored batch)
- ``postproc.started``: ``{state: "PENDING", createdAt}`` (a post-processing run was
  created; ``groupId`` is null)
- ``postproc.finished``: as ``run.state``, when a post-processing run ends
- ``ranking.changed``: ``{runId, reason: "ranked" | "deleted"}`` (``groupId`` and
  ``runId`` null: the leaderboard is public)

Group events are shown only to the group's members (as ``get_run``); workflow-level
events (post-processing, rankings) to everyone who can see the workflow. A stream looks
membership up again after a membership change committed in its process, and at least
every ``MEMBERSHIP_RECHECK`` seconds (changes made by other processes).
"""

from flowserv_async.events.hub import EventAccess, EventHub, EventStream, hub_of
from flowserv_async.events.model import Event, EventFilter, EventType

__all__ = [
    "Event",
    "EventAccess",
    "EventFilter",
    "EventHub",
    "EventStream",
    "EventType",
    "hub_of",
]
