"""Post-processing: a workflow-level run over the current ranking (SPEC 7).

When a ranked run succeeds and the set of ranked runs (the best run of each group)
differs from the inputs of the workflow's last post-processing run, a new one starts.
Its run folder has ``runs/{run_id}/{file}`` for the ``inputs.files`` of every ranked run
and ``runs/runs.json`` = ``[{id, name, files}]`` in rank order: flowserv's layout, so
existing post-processing scripts keep working. The ranking's digest is unique per
workflow in the database, so concurrent successes start at most one run per ranking.

A post-processing run cancelled because the service shut down gives up its ranking:
:func:`resume_postproc` starts it again when the factory next opens. Deleting a ranked
run starts the post-processing of the ranking that remains.
"""

from __future__ import annotations

import hashlib
import json
import logging
from typing import Any

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from flowserv_async._util import new_id, utc_now
from flowserv_async.db._statements import on_session
from flowserv_async.db.models import Run, RunFile, Workflow
from flowserv_async.db.runstate import set_state
from flowserv_async.engine.config import load_engine_config
from flowserv_async.engine.controller import SHUTDOWN_REASON
from flowserv_async.engine.job import RunJob, result_files
from flowserv_async.engine.spec import parse_workflow
from flowserv_async.errors import FlowservError
from flowserv_async.events import changes
from flowserv_async.services.ranking import ranked_runs, sort_columns
from flowserv_async.services.stored import run_prefix, static_prefix, template_of
from flowserv_async.states import RunState
from flowserv_async.template import ParameterIndex, replace_references
from flowserv_async.volume import join_key

RUNS_FILE = "runs.json"

logger = logging.getLogger(__name__)


def ranking_key(run_ids: list[str]) -> str:
    """The digest of a set of ranked runs (order does not matter)."""
    return hashlib.sha256("\n".join(sorted(run_ids)).encode()).hexdigest()


async def start_postproc(
    session: AsyncSession, workflow_id: str, engine_id: str, engine_config: str | None
) -> RunJob | None:
    """Create the post-processing run for the current ranking, if one is due.

    Returns the job to hand to the engine once the session commits, or None when the
    workflow has no post-processing, ignores it, has no ranked run, or a
    post-processing run already had this ranking as input (that run becomes the
    workflow's current one again: a ranking can return when a run is deleted).
    """
    # The workflow row is the lock that orders concurrent successes: the ranking is
    # read after it is taken, so the last transaction to commit sees every ranked run
    # (under READ COMMITTED a concurrent success is otherwise invisible, and the last
    # post-processing run would miss it). NO KEY UPDATE does not conflict with the
    # KEY SHARE locks that inserting rows which reference the workflow takes.
    wf = await session.get(
        Workflow, workflow_id, populate_existing=True, with_for_update={"key_share": True}
    )
    if wf is None or wf.postproc_spec is None or wf.ignore_postproc or wf.result_schema is None:
        return None
    template = template_of(wf)
    schema, postproc = template.result_schema, template.postproc
    assert schema is not None
    assert postproc is not None
    rows = await session.run_sync(ranked_runs, workflow_id, schema, sort_columns(schema, None))
    if not rows:
        # No ranked run is left (they were deleted): no current post-processing either.
        wf.postproc_run_id = None
        await session.flush()
        return None
    run_ids = [row.run_id for row in rows]
    key = ranking_key(run_ids)
    if await _reuse(session, wf, key):
        return None
    run_id = new_id()
    created = utc_now()
    try:
        async with session.begin_nested():
            session.add(
                Run(
                    run_id=run_id,
                    workflow_id=workflow_id,
                    group_id=None,
                    state=str(RunState.PENDING),
                    arguments=[],
                    engine_id=engine_id,
                    heartbeat_at=created,
                    created_at=created,
                    postproc_key=key,
                )
            )
    except IntegrityError:
        # Another writer started the run for this ranking (a backend without row locks).
        await _reuse(session, wf, key)
        return None
    wf.postproc_run_id = run_id
    await session.flush()
    changes.run_created(session.sync_session, run_id, workflow_id, None, created)
    stored = await session.execute(
        select(RunFile.run_id, RunFile.key).where(RunFile.run_id.in_(run_ids))
    )
    results: dict[str, set[str]] = {}
    for rid, file_key in stored:
        results.setdefault(rid, set()).add(file_key)
    listing: list[dict[str, Any]] = []
    inputs: list[tuple[str, str]] = []
    for row in rows:
        files = [f for f in postproc.files if f in results.get(row.run_id, set())]
        listing.append({"id": row.run_id, "name": row.group_name, "files": files})
        for f in files:
            source = join_key(run_prefix(workflow_id, row.run_id), f)
            inputs.append((source, join_key(postproc.runs, row.run_id, f)))
    try:
        section = replace_references(postproc.workflow, {"runs": postproc.runs}, ParameterIndex())
        spec = parse_workflow(section)
        config = await load_engine_config(engine_config, wf.engine_config)
    except FlowservError as exc:
        await on_session(
            session, set_state, run_id, RunState.ERROR, [f"post-processing: {exc.message}"]
        )
        return None
    return RunJob(
        run_id=run_id,
        workflow_id=workflow_id,
        group_id=None,
        workflow=spec,
        context={},
        static_prefix=static_prefix(workflow_id),
        result_prefix=run_prefix(workflow_id, run_id),
        input_files=tuple(inputs),
        generated_files=((join_key(postproc.runs, RUNS_FILE), json.dumps(listing).encode()),),
        result_files=result_files(postproc.outputs, spec.outputs),
        config=config,
    )


async def resume_postproc(
    session: AsyncSession, engine_id: str, engine_config: str | None
) -> list[RunJob]:
    """Create again the current post-processing runs that a shutdown cancelled.

    Returns the jobs to hand to the engine once the session commits. A workflow whose
    post-processing cannot be started is logged and skipped.
    """
    stmt = (
        select(Workflow.workflow_id, Run.messages)
        .join(Run, Run.run_id == Workflow.postproc_run_id)
        .where(Run.state == str(RunState.CANCELED))
    )
    jobs = []
    for workflow_id, messages in (await session.execute(stmt)).all():
        if not _shut_down(RunState.CANCELED, messages):
            continue  # cancelled by a user: left as it is
        try:
            async with session.begin_nested():
                job = await start_postproc(session, workflow_id, engine_id, engine_config)
        except Exception:
            logger.exception("cannot resume post-processing of workflow %s", workflow_id)
            continue
        if job is not None:
            jobs.append(job)
    return jobs


def _shut_down(state: RunState, messages: list[str] | None) -> bool:
    """True for a run that was cancelled because the service shut down."""
    return state == RunState.CANCELED and list(messages or []) == [SHUTDOWN_REASON]


async def _reuse(session: AsyncSession, wf: Workflow, key: str) -> bool:
    """Make the post-processing run of this ranking current, if there is one.

    A run that a shutdown cancelled is not reused: it gives up the ranking's key.
    """
    existing = await session.scalar(
        select(Run.run_id).where(Run.workflow_id == wf.workflow_id, Run.postproc_key == key)
    )
    if existing is None:
        return False
    run = await session.get(Run, existing, populate_existing=True)
    assert run is not None
    if _shut_down(RunState(run.state), run.messages):
        run.postproc_key = None
        await session.flush()
        return False
    if wf.postproc_run_id != existing:
        wf.postproc_run_id = existing
        await session.flush()
    return True
