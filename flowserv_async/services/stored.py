"""Where stored things live.

File store keys of workflows, groups, uploads and runs, and the template of a stored
workflow: one place for the layout of SPEC 8.
"""

from __future__ import annotations

from typing import Any

from flowserv_async.db.models import Workflow
from flowserv_async.template import WorkflowTemplate
from flowserv_async.volume import join_key


def static_prefix(workflow_id: str) -> str:
    """The file store folder of a workflow's static files."""
    return join_key(workflow_id, "static")


def group_prefix(workflow_id: str, group_id: str) -> str:
    """The file store folder of a group."""
    return join_key(workflow_id, "groups", group_id)


def upload_key(workflow_id: str, group_id: str, file_id: str) -> str:
    """The file store key of an uploaded file."""
    return join_key(workflow_id, "groups", group_id, "files", file_id)


def run_prefix(workflow_id: str, run_id: str) -> str:
    """The file store folder of a run's result files."""
    return join_key(workflow_id, "runs", run_id)


def template_of(wf: Workflow) -> WorkflowTemplate:
    """Rebuild the validated template of a stored workflow."""
    doc: dict[str, Any] = {"workflow": wf.workflow_spec, "parameters": wf.parameters}
    if wf.parameter_groups:
        doc["parameterGroups"] = wf.parameter_groups
    if wf.outputs is not None:
        doc["outputs"] = wf.outputs
    if wf.result_schema is not None:
        doc["results"] = wf.result_schema
    if wf.postproc_spec is not None:
        doc["postproc"] = wf.postproc_spec
    return WorkflowTemplate.from_dict(doc)
