"""JSON-ready shapes of the service results (flowserv's keys, SPEC 3)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from sqlalchemy import Row

from flowserv_async._util import isoformat
from flowserv_async.db.models import Group, Run, RunFile, UploadedFile, User, Workflow

if TYPE_CHECKING:
    from flowserv_async.services.reads import GroupRow, MemberRow, RunFileRow

# Rows of a Core select with the models' column names serialize like the models.
WorkflowFields = Workflow | Row[Any]
GroupFields = Group | Row[Any]
RunFields = Run | Row[Any]


def workflow_descriptor(wf: WorkflowFields) -> dict[str, Any]:
    """``{id, name, description?, instructions?}``."""
    doc: dict[str, Any] = {"id": wf.workflow_id, "name": wf.name}
    if wf.description is not None:
        doc["description"] = wf.description
    if wf.instructions is not None:
        doc["instructions"] = wf.instructions
    return doc


def workflow_handle(
    wf: WorkflowFields,
    groups: Sequence[Group | GroupRow] | None = None,
    postproc: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """A workflow handle: the descriptor plus parameters and the optional parts.

    ``parameterGroups``, ``outputs``, ``postproc`` and ``groups`` (the caller's groups)
    appear when they apply.
    """
    doc = workflow_descriptor(wf)
    doc["parameters"] = list(wf.parameters)
    if wf.parameter_groups:
        doc["parameterGroups"] = list(wf.parameter_groups)
    if wf.outputs is not None:
        doc["outputs"] = list(wf.outputs)
    if postproc is not None:
        doc["postproc"] = postproc
    if groups is not None:
        doc["groups"] = [group_descriptor(g) for g in groups]
    return doc


def group_descriptor(group: GroupFields | GroupRow) -> dict[str, Any]:
    """``{id, name, workflow}``."""
    return {"id": group.group_id, "name": group.name, "workflow": group.workflow_id}


def group_handle(
    group: Group,
    members: Sequence[User | MemberRow],
    files: list[UploadedFile],
    runs: list[Run] | None,
) -> dict[str, Any]:
    """A group descriptor with members, parameters, files, config and ``runs?``."""
    doc = group_descriptor(group)
    doc["members"] = [{"id": u.user_id, "username": u.name} for u in members]
    doc["parameters"] = list(group.parameters)
    doc["files"] = [file_handle(f) for f in files]
    doc["config"] = dict(group.engine_config or {})
    if runs is not None:
        doc["runs"] = [run_descriptor(r) for r in runs]
    return doc


def file_handle(file: UploadedFile) -> dict[str, Any]:
    """``{id, name, createdAt, size}``."""
    return {
        "id": file.file_id,
        "name": file.name,
        "createdAt": isoformat(file.created_at),
        "size": file.size,
    }


def run_descriptor(run: RunFields) -> dict[str, Any]:
    """``{id, state, createdAt}``."""
    return {"id": run.run_id, "state": run.state, "createdAt": isoformat(run.created_at)}


def run_handle(
    run: RunFields,
    files: Sequence[RunFile | RunFileRow] | None = None,
    outputs: list[dict[str, Any]] | None = None,
    parameters: list[dict[str, Any]] | None = None,
) -> dict[str, Any]:
    """A run handle: the descriptor plus arguments, timestamps and outcome.

    ``groupId``, ``parameters``, ``startedAt``, ``finishedAt``, ``messages`` (CANCELED,
    ERROR) and ``files`` (SUCCESS, with the outputs' display metadata) appear when they
    apply.
    """
    doc = run_descriptor(run)
    doc["workflowId"] = run.workflow_id
    if run.group_id is not None:
        doc["groupId"] = run.group_id
    doc["arguments"] = list(run.arguments)
    if parameters is not None:
        doc["parameters"] = parameters
    if run.started_at is not None:
        doc["startedAt"] = isoformat(run.started_at)
    if run.ended_at is not None:
        doc["finishedAt"] = isoformat(run.ended_at)
    if run.state in ("CANCELED", "ERROR"):
        doc["messages"] = list(run.messages or [])
    if run.state == "SUCCESS" and files is not None:
        meta = {o.get("key", o["source"]): o for o in outputs or []}
        by_source = {o["source"]: o for o in outputs or []}
        listed = []
        for f in files:
            item: dict[str, Any] = {"id": f.file_id, "name": f.name}
            info = by_source.get(f.key) or meta.get(f.key) or {}
            # As flowserv's run view: a file with an output entry is named by its key.
            item["name"] = info.get("key", f.name)
            for key in ("title", "caption", "format", "widget"):
                if key in info:
                    item[key] = info[key]
            listed.append(item)
        doc["files"] = listed
    return doc
