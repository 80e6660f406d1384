"""Frequent reads as single prebuilt Core statements.

Each function here answers a service read with one ``SELECT`` (joins instead of a
statement per table) built once at import, with bind parameters, so that SQLAlchemy's
compiled cache serves it and no ORM object is loaded. The rows are turned into the
same dicts as :mod:`flowserv_async.services.serialize` returns for ORM objects.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from typing import Any, NamedTuple, cast

from sqlalchemy import Select, and_, bindparam, exists, literal, select
from sqlalchemy.ext.asyncio import AsyncSession

from flowserv_async.db.models import Group, GroupMember, Run, RunFile, Workflow
from flowserv_async.services import serialize
from flowserv_async.services.base import check_page
from flowserv_async.states import RunState


def _is_member(group_id: Any) -> Any:
    """``EXISTS`` (the ``user_id`` parameter is a member of the group)."""
    return exists().where(
        GroupMember.group_id == group_id, GroupMember.user_id == bindparam("user_id")
    )


class RunFileRow(NamedTuple):
    """The columns of a result file that a run handle shows."""

    file_id: str
    name: str
    key: str


class RunRead(NamedTuple):
    """A run handle as read, with what authorization needs."""

    handle: dict[str, Any]
    group_id: str | None
    is_member: bool


_RUN_HANDLE = (
    select(
        Run.run_id,
        Run.workflow_id,
        Run.group_id,
        Run.state,
        Run.created_at,
        Run.started_at,
        Run.ended_at,
        Run.arguments,
        Run.messages,
        Group.parameters.label("group_parameters"),
        Workflow.outputs.label("workflow_outputs"),
        Workflow.postproc_spec["outputs"].label("postproc_outputs"),
        _is_member(Run.group_id).label("is_member"),
        RunFile.file_id,
        RunFile.name.label("file_name"),
        RunFile.key.label("file_key"),
    )
    .select_from(Run)
    .join(Workflow, Workflow.workflow_id == Run.workflow_id)
    .outerjoin(Group, Group.group_id == Run.group_id)
    .outerjoin(
        RunFile, and_(RunFile.run_id == Run.run_id, Run.state == literal(str(RunState.SUCCESS)))
    )
    .where(Run.run_id == bindparam("run_id"))
    .order_by(RunFile.key)
)


async def read_run(session: AsyncSession, run_id: str, user_id: str | None) -> RunRead | None:
    """The handle of a run (as ``load_run_handle`` builds it), or None for no such run."""
    rows = (await session.execute(_RUN_HANDLE, {"run_id": run_id, "user_id": user_id})).all()
    if not rows:
        return None
    run = rows[0]
    files: list[RunFileRow] | None = None
    outputs: list[dict[str, Any]] | None = None
    if run.state == RunState.SUCCESS:
        files = [RunFileRow(r.file_id, r.file_name, r.file_key) for r in rows if r.file_id]
        if run.group_id is None:
            outputs = list(run.postproc_outputs or []) or None
        elif run.workflow_outputs is not None:
            outputs = list(run.workflow_outputs)
    parameters = list(run.group_parameters) if run.group_id is not None else None
    handle = serialize.run_handle(run, files=files, outputs=outputs, parameters=parameters)
    return RunRead(handle, run.group_id, bool(run.is_member))


class RunList(NamedTuple):
    """A group's runs as read, with what authorization needs."""

    runs: list[dict[str, Any]]
    is_member: bool


# LIMIT for a page without one: both backends take a number where "no limit" differs.
_NO_LIMIT = 2**62


def _page(limit: int | None, offset: int | None) -> dict[str, int]:
    check_page(limit, offset)
    if limit is None and offset is None:
        return {}
    return {"limit": _NO_LIMIT if limit is None else limit, "offset": offset or 0}


def _paged(stmt: Select[Any]) -> Select[Any]:
    return stmt.limit(bindparam("limit")).offset(bindparam("offset"))


@functools.cache
def _group_runs(with_states: bool, with_page: bool) -> Select[Any]:
    runs = cast(
        "Select[Any]",
        select(Run.run_id, Run.state, Run.created_at, Run.group_id)
        .where(Run.group_id == bindparam("group_id"))
        .order_by(Run.created_at, Run.run_id),
    )
    if with_states:
        runs = runs.where(Run.state.in_(bindparam("states", expanding=True)))
    page = (_paged(runs) if with_page else runs).subquery()
    return cast(
        "Select[Any]",
        select(
            _is_member(Group.group_id).label("is_member"),
            page.c.run_id,
            page.c.state,
            page.c.created_at,
        )
        .select_from(Group)
        .outerjoin(page, page.c.group_id == Group.group_id)
        .where(Group.group_id == bindparam("group_id"))
        .order_by(page.c.created_at, page.c.run_id),
    )


async def read_group_runs(
    session: AsyncSession,
    group_id: str,
    user_id: str | None,
    states: Sequence[str] | None,
    limit: int | None,
    offset: int | None,
) -> RunList | None:
    """A group's runs (descriptors, creation order), or None for no such group."""
    params: dict[str, Any] = {"group_id": group_id, "user_id": user_id, **_page(limit, offset)}
    if states is not None:
        params["states"] = list(states)
    stmt = _group_runs(states is not None, "limit" in params)
    rows = (await session.execute(stmt, params)).all()
    if not rows:
        return None
    listed = [serialize.run_descriptor(row) for row in rows if row.run_id is not None]
    return RunList(listed, bool(rows[0].is_member))


@functools.cache
def _groups(of_workflow: bool, of_user: bool, with_page: bool) -> Select[Any]:
    stmt = cast(
        "Select[Any]",
        select(Group.group_id, Group.name, Group.workflow_id).order_by(
            Group.created_at, Group.group_id
        ),
    )
    if of_workflow:
        stmt = stmt.where(Group.workflow_id == bindparam("workflow_id"))
    if of_user:
        stmt = stmt.where(_is_member(Group.group_id))
    return _paged(stmt) if with_page else stmt


async def read_groups(
    session: AsyncSession,
    workflow_id: str | None,
    user_id: str | None,
    limit: int | None,
    offset: int | None,
) -> list[dict[str, Any]]:
    """Group descriptors: the user's groups (all for None), optionally of one workflow."""
    params: dict[str, Any] = {"workflow_id": workflow_id, "user_id": user_id}
    params.update(_page(limit, offset))
    stmt = _groups(workflow_id is not None, user_id is not None, "limit" in params)
    rows = (await session.execute(stmt, params)).all()
    return [serialize.group_descriptor(row) for row in rows]


_WORKFLOW_HANDLE = (
    select(
        Workflow.workflow_id,
        Workflow.name,
        Workflow.description,
        Workflow.instructions,
        Workflow.parameters,
        Workflow.parameter_groups,
        Workflow.outputs,
        Workflow.postproc_run_id,
        Group.group_id,
        Group.name.label("group_name"),
    )
    .select_from(Workflow)
    .outerjoin(
        Group,
        and_(
            Group.workflow_id == Workflow.workflow_id,
            _is_member(Group.group_id),
        ),
    )
    .where(Workflow.workflow_id == bindparam("workflow_id"))
    .order_by(Group.created_at, Group.group_id)
)


class MemberRow(NamedTuple):
    """The columns of a group member that a group handle shows."""

    user_id: str
    name: str


class GroupRow(NamedTuple):
    """The columns of a group descriptor."""

    group_id: str
    name: str
    workflow_id: str


async def read_workflow(
    session: AsyncSession, workflow_id: str, user_id: str | None
) -> dict[str, Any] | None:
    """The workflow handle with the user's groups and the post-processing run, or None."""
    params = {"workflow_id": workflow_id, "user_id": user_id}
    rows = (await session.execute(_WORKFLOW_HANDLE, params)).all()
    if not rows:
        return None
    wf = rows[0]
    postproc = None
    if wf.postproc_run_id is not None:
        read = await read_run(session, wf.postproc_run_id, user_id)
        postproc = read.handle if read is not None else None
    groups = [GroupRow(r.group_id, r.group_name, wf.workflow_id) for r in rows if r.group_id]
    return serialize.workflow_handle(wf, groups=groups, postproc=postproc)
