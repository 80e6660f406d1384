"""Groups: the caller's groups, one group, update, delete, and its runs."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, HTTPException, Response, status

import flowserv_async.server.models as models
from flowserv_async.errors import UnauthorizedAccessError, UnknownUserError
from flowserv_async.server._caller import CallerDep
from flowserv_async.states import RunState

router = APIRouter(prefix="/groups", tags=["groups"], route_class=models.ShapedRoute)


@router.get("", response_model=models.GroupListing)
async def list_groups(caller: CallerDep) -> dict[str, Any]:
    """The caller's groups of all workflows."""
    async with caller.session(login=True) as api:
        return await api.groups().list_groups()


@router.get("/{group_id}", response_model=models.GroupHandle)
async def get_group(caller: CallerDep, group_id: str) -> dict[str, Any]:
    """The group, for its members."""
    async with caller.session(login=True) as api:
        # The service shows non-members a group's public part; over HTTP only members
        # see a group (REST.md decisions). Under open access everyone is a member.
        group = await api.groups().get_group(group_id)
        if "runs" not in group:
            raise UnauthorizedAccessError(
                f"user '{api.user_id}' is not a member of group '{group_id}'"
            )
        return group


@router.put("/{group_id}", response_model=models.GroupHandle)
@router.post(
    "/{group_id}",
    response_model=models.GroupHandle,
    operation_id="update_group_by_post",
    description="The same as PUT: flowserv's remote client updates a group with POST.",
)
async def update_group(
    caller: CallerDep, group_id: str, body: models.GroupUpdateBody
) -> dict[str, Any]:
    """Rename the group or replace its members (PUT; POST for flowserv's client)."""
    async with caller.session(login=True) as api:
        try:
            return await api.groups().update_group(group_id, name=body.name, members=body.members)
        except UnknownUserError as exc:
            raise HTTPException(status.HTTP_400_BAD_REQUEST, exc.message) from exc


@router.delete("/{group_id}", status_code=status.HTTP_204_NO_CONTENT, response_class=Response)
async def delete_group(caller: CallerDep, group_id: str) -> Response:
    """Delete the group with its runs and files (a JSON body is ignored)."""
    async with caller.session(login=True) as api:
        await api.groups().delete_group(group_id)
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.get("/{group_id}/runs", response_model=models.RunListing)
async def list_runs(caller: CallerDep, group_id: str, state: str | None = None) -> dict[str, Any]:
    """The group's runs; ``state`` filters only when it names a state.

    flowserv's client sends ``state=None`` and rob-ui ``state={state}``: both list all.
    """
    selected = state if state in RunState.__members__ else None
    async with caller.session(login=True) as api:
        return await api.runs().list_runs(group_id, state=selected)


@router.post(
    "/{group_id}/runs", status_code=status.HTTP_201_CREATED, response_model=models.RunHandle
)
async def start_run(caller: CallerDep, group_id: str, body: models.RunStartBody) -> dict[str, Any]:
    """Start a run of the group's workflow."""
    async with caller.session(login=True) as api:
        return await api.runs().start_run(group_id, body.arguments, config=body.config)
