"""Workflows: listing, handles, leaderboards, post-processing downloads, their groups."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, HTTPException, Request, status
from fastapi.responses import JSONResponse, Response, StreamingResponse

import flowserv_async.server.models as models
from flowserv_async.errors import UnknownUserError
from flowserv_async.server._caller import Caller, CallerDep, DownloaderDep, app_factory
from flowserv_async.server._download import download, download_responses

router = APIRouter(prefix="/workflows", tags=["workflows"], route_class=models.ShapedRoute)


def parse_order_by(value: str | None) -> list[dict[str, Any]] | None:
    """Parse robflask's ``orderBy``: ``col[:ASC|:DESC],...``; only ``:asc`` sorts ascending.

    Missing or empty means the template's default order; an empty or unknown column name
    is left for the service to refuse (400).
    """
    if not value:
        return None
    order = []
    for item in value.split(","):
        name, _, direction = item.partition(":")
        order.append({"name": name, "sortDesc": direction.lower() != "asc"})
    return order


def parse_include_all(value: str | None) -> bool:
    """Parse robflask's ``includeAll``: missing is false, bare or empty is true, else ``true``."""
    if value is None:
        return False
    return value == "" or value.lower() == "true"


@router.get("", response_model=models.WorkflowListing)
async def list_workflows(caller: CallerDep) -> dict[str, Any]:
    """All workflows."""
    async with caller.session() as api:
        return await api.workflows().list_workflows()


@router.get("/{workflow_id}", response_model=models.WorkflowHandle)
async def get_workflow(caller: CallerDep, workflow_id: str) -> dict[str, Any]:
    """The workflow; ``groups`` lists the caller's groups when a token is valid."""
    async with caller.session() as api:
        handle = await api.workflows().get_workflow(workflow_id)
        if api.user_id is None:
            handle.pop("groups", None)  # as flowserv's server: only for a known user
        return handle


def _optional_text_query(name: str) -> dict[str, Any]:
    # What FastAPI documents for a parameter ``name: str | None = None``.
    schema = {"anyOf": [{"type": "string"}, {"type": "null"}], "title": name.capitalize()}
    return {"name": name, "in": "query", "required": False, "schema": schema}


# The two optional text parameters are read from the query string as they are, and
# documented as FastAPI would document them: its per-request solving of them was 5 % of
# a leaderboard request's instructions.
@router.get(
    "/{workflow_id}/leaderboard",
    response_model=models.Leaderboard,
    openapi_extra={"parameters": [_optional_text_query(n) for n in ("orderBy", "includeAll")]},
)
async def get_leaderboard(workflow_id: str, request: Request) -> Response:
    """The ranking of the workflow's successful runs (best run per group by default).

    The same for every caller: the service does not ask who it is, so the route takes
    no token (one dependency less to solve per request). The service builds the
    document in its final shape, so it is sent as it is: checking a leaderboard of many
    runs against the model cost more CPU than reading it.
    """
    query = request.query_params
    async with Caller(app_factory(request), None).session(public=True) as api:
        ranking = await api.workflows().get_ranking(
            workflow_id,
            order_by=parse_order_by(query.get("orderBy")),
            include_all=parse_include_all(query.get("includeAll")),
        )
    # A workflow without a result schema ranks nothing.
    return JSONResponse(ranking if ranking is not None else {"schema": [], "ranking": []})


@router.get(
    "/{workflow_id}/downloads/archive",
    response_class=StreamingResponse,
    responses=download_responses("application/gzip"),
)
async def download_postproc_archive(caller: DownloaderDep, workflow_id: str) -> StreamingResponse:
    """A tar.gz of the current post-processing run's files."""
    return await download(caller, lambda api: api.workflows().get_result_archive(workflow_id))


@router.get(
    "/{workflow_id}/downloads/files/{file_id}",
    response_class=StreamingResponse,
    responses=download_responses(),
)
async def download_postproc_file(
    caller: DownloaderDep, workflow_id: str, file_id: str
) -> StreamingResponse:
    """A file of the current post-processing run."""
    return await download(caller, lambda api: api.workflows().get_result_file(workflow_id, file_id))


@router.get("/{workflow_id}/groups", response_model=models.GroupListing)
async def list_workflow_groups(caller: CallerDep, workflow_id: str) -> dict[str, Any]:
    """The caller's groups of the workflow."""
    async with caller.session(login=True) as api:
        await api.workflows().get_workflow(workflow_id)
        return await api.groups().list_groups(workflow_id=workflow_id)


@router.post(
    "/{workflow_id}/groups",
    status_code=status.HTTP_201_CREATED,
    response_model=models.GroupHandle,
)
async def create_group(
    caller: CallerDep, workflow_id: str, body: models.GroupCreateBody
) -> dict[str, Any]:
    """Create a group; the caller is a member. ``id`` and ``config`` are optional."""
    async with caller.session(login=True) as api:
        try:
            return await api.groups().create_group(
                workflow_id,
                body.name,
                members=body.members,
                parameters=body.parameters,
                engine_config=body.config,
                identifier=body.id,
            )
        except UnknownUserError as exc:
            # A bad request body, as flowserv's server answers (REST.md decisions).
            raise HTTPException(status.HTTP_400_BAD_REQUEST, exc.message) from exc
