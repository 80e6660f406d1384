"""Runs: handle, cancel, delete, result downloads, the paged log and the event stream."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Annotated, Any

from fastapi import APIRouter, Header, Query, Response, status
from fastapi.responses import StreamingResponse
from sse_starlette import EventSourceResponse, ServerSentEvent

import flowserv_async.server.models as models
from flowserv_async.errors import UnauthorizedAccessError
from flowserv_async.events import EventFilter, EventStream, EventType
from flowserv_async.events.store import last_id
from flowserv_async.server._caller import CallerDep, DownloaderDep
from flowserv_async.server._download import download, download_responses
from flowserv_async.states import FINAL_STATES

router = APIRouter(prefix="/runs", tags=["runs"], route_class=models.ShapedRoute)

#: Most log lines in one page.
MAX_LOG_PAGE = 1000
#: Seconds between the heartbeats (``: ping`` comments) of an event stream.
HEARTBEAT_INTERVAL = 15.0

_EVENT_STREAM_RESPONSES: dict[int | str, Any] = {
    200: {
        "description": (
            "Server-Sent Events: ``id`` the event's position, ``event`` its type"
            " (run.created, run.state, run.log), ``data`` the event's JSON; comment"
            " heartbeats; the stream ends after the run's final state"
        ),
        "content": {"text/event-stream": {"schema": {"type": "string"}}},
    },
    204: {"description": "the run is final and the client has all its events (Last-Event-ID)"},
    410: {
        "model": models.ErrorMessage,
        "description": "the events after Last-Event-ID are no longer stored",
    },
}


@router.get("/{run_id}", response_model=models.RunHandle)
async def get_run(caller: CallerDep, run_id: str) -> dict[str, Any]:
    """The run (group runs: members only)."""
    async with caller.session(login=True) as api:
        return await api.runs().get_run(run_id)


@router.put("/{run_id}", response_model=models.RunHandle)
async def cancel_run(
    caller: CallerDep, run_id: str, body: models.CancelBody | None = None
) -> dict[str, Any]:
    """Cancel an active run; no body or ``{}`` gives flowserv's default reason."""
    reason = body.reason if body is not None else None
    async with caller.session(login=True) as api:
        return await api.runs().cancel_run(run_id, reason=reason)


@router.delete("/{run_id}", status_code=status.HTTP_204_NO_CONTENT, response_class=Response)
async def delete_run(caller: CallerDep, run_id: str) -> Response:
    """Delete a run that is not active, with its files."""
    async with caller.session(login=True) as api:
        await api.runs().delete_run(run_id)
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.get(
    "/{run_id}/downloads/archive",
    response_class=StreamingResponse,
    responses=download_responses("application/gzip"),
)
async def download_run_archive(caller: DownloaderDep, run_id: str) -> StreamingResponse:
    """A tar.gz of a successful run's result files."""
    return await download(caller, lambda api: api.runs().get_result_archive(run_id))


@router.get(
    "/{run_id}/downloads/files/{file_id}",
    response_class=StreamingResponse,
    responses=download_responses(),
)
async def download_run_file(caller: DownloaderDep, run_id: str, file_id: str) -> StreamingResponse:
    """One result file of a successful run."""
    return await download(caller, lambda api: api.runs().get_result_file(run_id, file_id))


@router.get("/{run_id}/logs", response_model=models.RunLog)
async def get_run_log(
    caller: CallerDep,
    run_id: str,
    offset: Annotated[int, Query(ge=0)] = 0,
    limit: Annotated[int, Query(ge=1, le=MAX_LOG_PAGE)] = MAX_LOG_PAGE,
) -> dict[str, Any]:
    """A page of the run's captured output from line ``offset``; ``next`` continues it."""
    async with caller.session(login=True) as api:
        log = await api.runs().get_log(run_id, offset=offset)
    lines = log["lines"][:limit]
    if len(lines) < len(log["lines"]):
        log = {**log, "lines": lines, "next": lines[-1]["pos"] + 1}
    return log


@router.get(
    "/{run_id}/events",
    response_class=EventSourceResponse,
    responses=_EVENT_STREAM_RESPONSES,
)
async def stream_run_events(
    caller: CallerDep,
    run_id: str,
    last_event_id: Annotated[int | None, Header(ge=0)] = None,
) -> Response:
    """The run's state changes and log lines as Server-Sent Events, until it is final.

    A new stream starts with the run's first stored event; ``Last-Event-ID`` resumes
    exactly after that event. Access as ``GET runs/{runId}``.
    """
    async with caller.session(login=True) as api:
        await api.runs().get_run(run_id)
    after = last_event_id or 0
    stream = caller.factory.events(run_id=run_id, after=after, access_token=caller.token)
    # Subscribed before the state is read: an end committed in between is streamed.
    await stream.start()
    try:
        async with caller.session(login=True) as api:
            state = (await api.runs().get_run(run_id))["state"]
        end = None
        if state in FINAL_STATES:
            # Every event of a final run is stored: stream up to its last one.
            async with caller.factory.db.session() as session:
                end = await last_id(session, EventFilter(run_id=run_id))
            if end <= after:
                # 204 tells a browser's EventSource not to reconnect.
                await stream.aclose()
                return Response(status_code=status.HTTP_204_NO_CONTENT)
    except BaseException:
        await stream.aclose()
        raise
    return EventSourceResponse(_server_sent(stream, end), ping=HEARTBEAT_INTERVAL)


async def _server_sent(stream: EventStream, end: int | None) -> AsyncIterator[ServerSentEvent]:
    # The stream closes when this generator ends, also when the client goes away
    # (sse-starlette then cancels the generator).
    async with stream:
        try:
            async for event in stream:
                yield ServerSentEvent(
                    data=json.dumps(event.to_dict()), event=str(event.type), id=str(event.id)
                )
                final = event.type == EventType.RUN_STATE and event.data["state"] in FINAL_STATES
                if final or (end is not None and event.id >= end):
                    return
        except UnauthorizedAccessError:
            # The caller left the run's group: the stream ends (a reconnect gets 403).
            return
