"""Runs: handle, cancel, delete, result downloads and the paged log."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query, Response, status
from fastapi.responses import StreamingResponse

import flowserv_async.server.models as models
from flowserv_async.server._caller import CallerDep, DownloaderDep
from flowserv_async.server._download import download, download_responses

router = APIRouter(prefix="/runs", tags=["runs"], route_class=models.ShapedRoute)

#: Most log lines in one page.
MAX_LOG_PAGE = 1000


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
