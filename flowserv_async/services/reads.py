"""Frequent reads as single prebuilt Core statements.

Each function here answers a service read with one ``SELECT`` (joins instead of a
statement per table) built once at import, with bind parameters, so that SQLAlchemy's
compiled cache serves it and no ORM object is loaded. The statements name the tables'
columns, not the mapped attributes: a statement of plain columns skips the ORM's
execution and row loading, which cost more CPU than the query. The rows are turned
into the same dicts as :mod:`flowserv_async.services.serialize` returns for ORM objects;
the timestamps they show are read as their ISO text (:func:`iso_text`).

They are plain functions of an :data:`~flowserv_async.services.base.Executor` (the
compiled statements of SQLite's connection thread, a connection, or a sync session),
run by :meth:`~flowserv_async.services.base.ServiceContext.read` (or :meth:`DB.read`)
in one call: a call that only reads then opens no ``AsyncSession``.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Sequence
from datetime import datetime
from typing import Any, NamedTuple, cast

from sqlalchemy import (
    CompoundSelect,
    Select,
    and_,
    bindparam,
    exists,
    literal,
    null,
    select,
    union_all,
)

from flowserv_async.db.models import Group, GroupMember, Run, RunFile, Workflow
from flowserv_async.db.runstate import is_in
from flowserv_async.db.timestamps import iso_text
from flowserv_async.services import serialize
from flowserv_async.services.base import Executor, check_page
from flowserv_async.states import RunState

# The tables (Core), see the module's docstring.
_groups = Group.__table__
_members = GroupMember.__table__
_runs = Run.__table__
_files = RunFile.__table__
_workflows = Workflow.__table__


def _is_member(group_id: Any) -> Any:
    """``EXISTS`` (the ``user_id`` parameter is a member of the group)."""
    return exists().where(
        _members.c.group_id == group_id, _members.c.user_id == bindparam("user_id")
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


_RUN_HANDLE: Select[Any] = (
    select(
        _runs.c.run_id,
        _runs.c.workflow_id,
        _runs.c.group_id,
        _runs.c.state,
        iso_text(_runs.c.created_at),
        iso_text(_runs.c.started_at),
        iso_text(_runs.c.ended_at),
        _runs.c.arguments,
        _runs.c.messages,
        _groups.c.parameters.label("group_parameters"),
        _workflows.c.outputs.label("workflow_outputs"),
        _workflows.c.postproc_spec["outputs"].label("postproc_outputs"),
        _is_member(_runs.c.group_id).label("is_member"),
        _files.c.file_id,
        _files.c.name.label("file_name"),
        _files.c.key.label("file_key"),
    )
    .select_from(_runs)
    .join(_workflows, _workflows.c.workflow_id == _runs.c.workflow_id)
    .outerjoin(_groups, _groups.c.group_id == _runs.c.group_id)
    .outerjoin(
        _files,
        and_(_files.c.run_id == _runs.c.run_id, _runs.c.state == literal(str(RunState.SUCCESS))),
    )
    .where(_runs.c.run_id == bindparam("run_id"))
    .order_by(_files.c.key)
)


def read_run(executor: Executor, run_id: str, user_id: str | None) -> RunRead | None:
    """The handle of a run (as ``load_run_handle`` builds it), or None for no such run."""
    rows = (executor.execute(_RUN_HANDLE, {"run_id": run_id, "user_id": user_id})).all()
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


class GroupVersion(NamedTuple):
    """Which group (and workflow) a group id names now, with the caller's membership.

    A workflow's and a group's template columns never change once created; one that is
    deleted and created again under the same identifier has a new ``created_at``. So
    these columns tell whether a template prepared earlier is still the group's.
    """

    workflow_id: str
    group_created: datetime
    workflow_created: datetime
    is_member: bool


_GROUP_VERSION: Select[Any] = (
    select(
        _groups.c.workflow_id,
        _groups.c.created_at.label("group_created"),
        _workflows.c.created_at.label("workflow_created"),
        _is_member(_groups.c.group_id).label("is_member"),
    )
    .select_from(_groups)
    .join(_workflows, _workflows.c.workflow_id == _groups.c.workflow_id)
    .where(_groups.c.group_id == bindparam("group_id"))
)


def read_group_version(
    executor: Executor, group_id: str, user_id: str | None
) -> GroupVersion | None:
    """The :class:`GroupVersion` of a group, or None for no such group."""
    params = {"group_id": group_id, "user_id": user_id}
    row = (executor.execute(_GROUP_VERSION, params)).first()
    if row is None:
        return None
    return GroupVersion(
        row.workflow_id, row.group_created, row.workflow_created, bool(row.is_member)
    )


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
        select(_runs.c.run_id, _runs.c.state, _runs.c.created_at, _runs.c.group_id)
        .where(_runs.c.group_id == bindparam("group_id"))
        .order_by(_runs.c.created_at, _runs.c.run_id),
    )
    if with_states:
        # One JSON text, not an expanding list: compiled once (db/_statements.py).
        runs = runs.where(is_in(_runs.c.state, "states"))
    page = (_paged(runs) if with_page else runs).subquery()
    return cast(
        "Select[Any]",
        select(
            _is_member(_groups.c.group_id).label("is_member"),
            page.c.run_id,
            page.c.state,
            iso_text(page.c.created_at),
        )
        .select_from(_groups)
        .outerjoin(page, page.c.group_id == _groups.c.group_id)
        .where(_groups.c.group_id == bindparam("group_id"))
        .order_by(page.c.created_at, page.c.run_id),
    )


def read_group_runs(
    executor: Executor,
    group_id: str,
    user_id: str | None,
    states: Sequence[str] | None,
    limit: int | None,
    offset: int | None,
) -> RunList | None:
    """A group's runs (descriptors, creation order), or None for no such group."""
    params: dict[str, Any] = {"group_id": group_id, "user_id": user_id, **_page(limit, offset)}
    if states is not None:
        params["states"] = json.dumps(list(states))
    stmt = _group_runs(states is not None, "limit" in params)
    rows = (executor.execute(stmt, params)).all()
    if not rows:
        return None
    listed = [serialize.run_descriptor(row) for row in rows if row.run_id is not None]
    return RunList(listed, bool(rows[0].is_member))


@functools.cache
def _group_list(of_workflow: bool, of_user: bool, with_page: bool) -> Select[Any]:
    stmt = cast(
        "Select[Any]",
        select(_groups.c.group_id, _groups.c.name, _groups.c.workflow_id).order_by(
            _groups.c.created_at, _groups.c.group_id
        ),
    )
    if of_workflow:
        stmt = stmt.where(_groups.c.workflow_id == bindparam("workflow_id"))
    if of_user:
        stmt = stmt.where(_is_member(_groups.c.group_id))
    return _paged(stmt) if with_page else stmt


def read_groups(
    executor: Executor,
    workflow_id: str | None,
    user_id: str | None,
    limit: int | None,
    offset: int | None,
) -> list[dict[str, Any]]:
    """Group descriptors: the user's groups (all for None), optionally of one workflow."""
    params: dict[str, Any] = {"workflow_id": workflow_id, "user_id": user_id}
    params.update(_page(limit, offset))
    stmt = _group_list(workflow_id is not None, user_id is not None, "limit" in params)
    rows = (executor.execute(stmt, params)).all()
    return [serialize.group_descriptor(row) for row in rows]


# The workflow's row first (kind 0), then one row per group of the user (kind 1): its
# JSON columns are sent and decoded once, not once per group as a join would repeat them.
_WORKFLOW_COLUMNS = (
    "workflow_id",
    "name",
    "description",
    "instructions",
    "parameters",
    "parameter_groups",
    "outputs",
    "postproc_run_id",
)
_WORKFLOW_HANDLE = cast(
    "CompoundSelect[Any]",
    union_all(
        select(
            literal(0).label("kind"),
            *(_workflows.c[name] for name in _WORKFLOW_COLUMNS),
            null().label("group_id"),
            null().label("group_name"),
            null().label("group_created_at"),
        ).where(_workflows.c.workflow_id == bindparam("workflow_id")),
        select(
            literal(1),
            *(null() for _ in _WORKFLOW_COLUMNS),
            _groups.c.group_id,
            _groups.c.name,
            _groups.c.created_at,
        ).where(_groups.c.workflow_id == bindparam("workflow_id"), _is_member(_groups.c.group_id)),
    ).order_by("kind", "group_created_at", "group_id"),
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


def read_workflow(
    executor: Executor, workflow_id: str, user_id: str | None
) -> dict[str, Any] | None:
    """The workflow handle with the user's groups and the post-processing run, or None."""
    params = {"workflow_id": workflow_id, "user_id": user_id}
    rows = (executor.execute(_WORKFLOW_HANDLE, params)).all()
    if not rows or rows[0].kind != 0:
        return None
    wf = rows[0]
    postproc = None
    if wf.postproc_run_id is not None:
        read = read_run(executor, wf.postproc_run_id, user_id)
        postproc = read.handle if read is not None else None
    groups = [GroupRow(r.group_id, r.group_name, wf.workflow_id) for r in rows[1:]]
    return serialize.workflow_handle(wf, groups=groups, postproc=postproc)
