"""The statements that change a run's state, log and heartbeat: the only run writers.

Every state change goes through :func:`set_state`, a conditional ``UPDATE`` that only
moves a run along an allowed transition (SPEC 4), so two writers can never move a run
out of a final state. The functions only ``flush``: the caller owns the transaction.
They are sync functions of a sync :class:`~sqlalchemy.orm.Session`, one definition for
both ways of running them: ``await async_session.run_sync(fn, ...)`` on the event loop,
or in a thread (:meth:`flowserv_async.db.DB.write_in_thread`) on SQLite.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any
from typing import cast as typed

from sqlalchemy import (
    JSON,
    FunctionElement,
    String,
    Table,
    Update,
    bindparam,
    delete,
    func,
    insert,
    or_,
    select,
    update,
)
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.orm import Session
from sqlalchemy.sql.compiler import SQLCompiler

from flowserv_async._util import new_id, utc_now
from flowserv_async.db.models import Ranking, Run, RunFile, RunLogLine
from flowserv_async.engine.job import ResultSpec
from flowserv_async.engine.log import DEFAULT_MAX_LINES, LogEntry
from flowserv_async.engine.store import RunOutcome
from flowserv_async.events import changes
from flowserv_async.states import ACTIVE_STATES, FINAL_STATES, RunState, allowed_sources


@dataclass(frozen=True, slots=True)
class NewRun:
    """A run to create, PENDING, for an engine (the columns that :func:`insert_runs` writes)."""

    run_id: str
    workflow_id: str
    group_id: str | None
    arguments: list[Any]
    engine_id: str | None
    created_at: datetime


_RUNS = typed(Table, Run.__table__)
_RUN_FILES = typed(Table, RunFile.__table__)
_RANKINGS = typed(Table, Ranking.__table__)


def insert_runs(session: Session, runs: Sequence[NewRun]) -> None:
    """Create PENDING runs in one ``INSERT``, each with its ``run.created`` event."""
    if not runs:
        return
    session.execute(
        insert(_RUNS),
        [
            {
                "run_id": run.run_id,
                "workflow_id": run.workflow_id,
                "group_id": run.group_id,
                "state": str(RunState.PENDING),
                "created_at": run.created_at,
                "arguments": run.arguments,
                "engine_id": run.engine_id,
                "heartbeat_at": run.created_at,
            }
            for run in runs
        ],
    )
    for run in runs:
        changes.run_created(session, run.run_id, run.workflow_id, run.group_id, run.created_at)


def set_state(
    session: Session,
    run_id: str,
    state: RunState,
    messages: Sequence[str] | None = None,
    processes: Mapping[str, str] | None = None,
) -> bool:
    """Move a run to ``state`` if that is an allowed transition; True when it moved.

    RUNNING sets ``startedAt`` and the record of the run's ``processes``; a final state
    sets ``finishedAt`` (and ``startedAt`` for a run that never ran) and the messages. The
    move is recorded as a ``run.state`` event in the same transaction
    (:mod:`flowserv_async.events`): a writer of run states that bypasses this function
    (or :func:`set_states`) must emit it too.
    """
    records = {run_id: processes} if processes is not None else None
    return bool(set_states(session, [run_id], state, messages, records))


class _RecordOf(FunctionElement[Any]):
    """The value of a run's id in a JSON object given as text: ``{run_id: record}``.

    So that the records of many runs are set by the one ``UPDATE`` that moves them to
    RUNNING (a run without a record gets NULL).
    """

    type = JSON()
    name = "record_of"
    inherit_cache = True


@compiles(_RecordOf, "sqlite")
def _record_of_sqlite(element: _RecordOf, compiler: SQLCompiler, **kw: Any) -> str:
    records, run_id = (compiler.process(arg, **kw) for arg in element.clauses)
    # Run ids are hex digits: the quoted key needs no escaping.
    return f"""json_extract({records}, '$."' || {run_id} || '"')"""


@compiles(_RecordOf, "postgresql")
def _record_of_postgresql(element: _RecordOf, compiler: SQLCompiler, **kw: Any) -> str:
    records, run_id = (compiler.process(arg, **kw) for arg in element.clauses)
    return f"(CAST({records} AS JSON) -> {run_id})"


@functools.cache
def _move_statement(state: RunState) -> Update:
    """The conditional ``UPDATE ... RETURNING`` that moves runs to ``state``.

    Built once per state, with the run ids (expanding), the time and the messages as
    bound parameters, so that neither building nor compiling it is paid per call.
    """
    now = bindparam("now", type_=_RUNS.c.heartbeat_at.type)
    values: dict[str, Any] = {"state": str(state), "heartbeat_at": now}
    if state == RunState.RUNNING:
        values["started_at"] = now
        values["processes"] = _RecordOf(bindparam("records", type_=String()), _RUNS.c.run_id)
    elif state in FINAL_STATES:
        values["ended_at"] = now
        values["started_at"] = func.coalesce(_RUNS.c.started_at, now)
        values["messages"] = bindparam("messages", type_=_RUNS.c.messages.type)
    sources = sorted(str(s) for s in allowed_sources(state))
    return (
        update(_RUNS)
        .where(
            _RUNS.c.run_id.in_(bindparam("run_ids", expanding=True)),
            _RUNS.c.state.in_(sources),
        )
        .values(**values)
        .returning(
            _RUNS.c.run_id,
            _RUNS.c.workflow_id,
            _RUNS.c.group_id,
            _RUNS.c.messages,
            _RUNS.c.created_at,
            _RUNS.c.started_at,
            _RUNS.c.ended_at,
        )
    )


def set_states(
    session: Session,
    run_ids: Sequence[str],
    state: RunState,
    messages: Sequence[str] | None = None,
    processes: Mapping[str, Mapping[str, str]] | None = None,
) -> set[str]:
    """:func:`set_state` for many runs in one ``UPDATE``; returns the runs that moved.

    ``processes`` maps run ids to the records of their processes (RUNNING only).
    """
    if not allowed_sources(state) or not run_ids:
        return set()
    params: dict[str, Any] = {"run_ids": list(run_ids), "now": utc_now()}
    if state in FINAL_STATES:
        params["messages"] = list(messages or [])
    elif state == RunState.RUNNING:
        params["records"] = json.dumps(processes or {})
    stmt = _move_statement(state)
    moved = set()
    for row in session.execute(stmt, params).all():
        moved.add(row.run_id)
        changes.state_changed(
            session,
            run_id=row.run_id,
            workflow_id=row.workflow_id,
            group_id=row.group_id,
            state=str(state),
            messages=row.messages,
            created_at=row.created_at,
            started_at=row.started_at,
            ended_at=row.ended_at,
        )
    return moved


def record_successes(
    session: Session, results: Sequence[tuple[ResultSpec, RunOutcome]]
) -> set[str]:
    """Record successful runs (state, result files, ranking); the ids of those recorded.

    The files must already be in the file store under each ``spec.prefix``. A run whose
    results do not fit the workflow's result schema becomes ERROR instead, with the
    reason (it is not silently left unranked). The runs move to SUCCESS in one
    ``UPDATE``, their files and rankings are inserted with one statement each.
    """
    for spec, outcome in results:
        if outcome.error is not None:
            set_state(session, spec.run_id, RunState.ERROR, [outcome.error])
    valid = [(spec, outcome) for spec, outcome in results if outcome.error is None]
    moved = set_states(session, [spec.run_id for spec, _ in valid], RunState.SUCCESS)
    recorded = [(spec, outcome) for spec, outcome in valid if spec.run_id in moved]
    files = [
        {"file_id": new_id(), "run_id": spec.run_id, "key": name, "name": name, "size": size}
        for spec, outcome in recorded
        for name, size in outcome.files
    ]
    if files:
        session.execute(insert(_RUN_FILES), files)
    ranked = [
        (spec, outcome.results)
        for spec, outcome in recorded
        if outcome.results is not None and spec.group_id is not None
    ]
    if ranked:
        session.execute(
            insert(_RANKINGS),
            [
                {
                    "run_id": spec.run_id,
                    "workflow_id": spec.workflow_id,
                    "group_id": spec.group_id,
                    "values": values,
                }
                for spec, values in ranked
            ],
        )
        for spec, _ in ranked:
            changes.ranking_changed(session, spec.workflow_id, spec.run_id, "ranked")
    return moved


def append_log(
    session: Session, run_id: str, entries: Sequence[LogEntry], keep_from: int = 0
) -> None:
    """Store log lines of a run and drop its stored lines before ``keep_from``.

    With ``keep_from`` from the engine's :class:`~flowserv_async.engine.log.LogBatch`,
    the stored log is the same tail, within the same byte and line budget, as the
    engine's in-memory log; readers are told how many lines were dropped. At most the
    newest ``DEFAULT_MAX_LINES`` lines are kept in any case.
    """
    append_logs(session, [(run_id, entries, keep_from)])


def append_logs(session: Session, logs: Sequence[tuple[str, Sequence[LogEntry], int]]) -> None:
    """Store log lines of several runs in one ``INSERT`` (see :func:`append_log`)."""
    rows = [
        {"run_id": run_id, "pos": e.pos, "step": e.step, "stream": e.stream, "text": e.text}
        for run_id, entries, _ in logs
        for e in entries
    ]
    owners = {}
    if rows:
        session.execute(insert(RunLogLine), rows)
        told = [run_id for run_id, entries, _ in logs if entries]
        owners = {
            row.run_id: row
            for row in session.execute(
                select(Run.run_id, Run.workflow_id, Run.group_id).where(Run.run_id.in_(told))
            )
        }
    for run_id, entries, keep_from in logs:
        if entries:
            owner = owners[run_id]
            lines = [
                {"pos": e.pos, "step": e.step, "stream": e.stream, "text": e.text} for e in entries
            ]
            changes.log_appended(session, run_id, owner.workflow_id, owner.group_id, lines)
        cutoff = max(keep_from, entries[-1].pos - DEFAULT_MAX_LINES + 1 if entries else 0)
        if cutoff > 0:
            session.execute(
                delete(RunLogLine).where(RunLogLine.run_id == run_id, RunLogLine.pos < cutoff)
            )


def heartbeat(session: Session, engine_id: str, run_ids: Sequence[str]) -> None:
    """Tell that this engine still executes these runs."""
    if run_ids:
        session.execute(
            update(Run)
            .where(Run.run_id.in_(run_ids), Run.engine_id == engine_id)
            .values(heartbeat_at=utc_now())
            .execution_options(synchronize_session=False)
        )


def fail_stale_runs(
    session: Session,
    engine_id: str,
    lease: float,
    tracked: Collection[str] | None = None,
) -> list[str]:
    """Set active runs that no live engine has reported for ``lease`` seconds to ERROR.

    Runs of ``engine_id`` (the caller) are never stale when ``tracked`` is None; else
    only those in ``tracked`` are spared, so that a run the engine lost (its final
    state could not be written) does not stay active. Returns the failed run ids.
    """
    limit = utc_now() - timedelta(seconds=lease)
    stale = or_(Run.heartbeat_at.is_(None), Run.heartbeat_at < limit)
    # A run without an engine waits in the database queue (dispatch.database): no
    # engine has taken it yet, so none can have stopped reporting it.
    stmt = select(Run.run_id, Run.engine_id).where(
        Run.state.in_([str(s) for s in ACTIVE_STATES]), stale, Run.engine_id.is_not(None)
    )
    spared = set(tracked or ())
    run_ids = [
        run_id
        for run_id, owner in session.execute(stmt).all()
        if owner != engine_id or (tracked is not None and run_id not in spared)
    ]
    message = f"the run was interrupted: its engine stopped reporting for over {lease:g} s"
    failed = set_states(session, run_ids, RunState.ERROR, [message])
    return [r for r in run_ids if r in failed]


def run_processes(session: Session, run_ids: Collection[str]) -> dict[str, Any]:
    """The recorded process containment of these runs (those that have one)."""
    if not run_ids:
        return {}
    stmt = select(Run.run_id, Run.processes).where(
        Run.run_id.in_(list(run_ids)), Run.processes.is_not(None)
    )
    return {run_id: record for run_id, record in session.execute(stmt).all()}
