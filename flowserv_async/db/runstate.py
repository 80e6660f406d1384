"""The statements that change a run's state, log and heartbeat: the only run writers.

Every state change goes through :func:`set_state`, a conditional ``UPDATE`` that only
moves a run along an allowed transition (SPEC 4), so two writers can never move a run
out of a final state. The functions only ``flush``: the caller owns the transaction.
They are sync functions of :class:`~flowserv_async.db._statements.Statements`, one
definition of each statement for both ways of running them: on a sync session
(``AsyncSession.run_sync``, every backend), or compiled once on the SQLite writer
thread's connection (:meth:`flowserv_async.db.DB.write_in_thread`). So every statement
is a module constant, and lists of ids are bound as one JSON text (:class:`_IsIn`), not
as ``IN`` lists that would be rendered again for each call.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, ClassVar
from typing import cast as typed

from sqlalchemy import (
    JSON,
    ColumnElement,
    FunctionElement,
    String,
    Table,
    Update,
    bindparam,
    delete,
    func,
    insert,
    literal,
    or_,
    select,
    update,
)
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.sql.compiler import SQLCompiler
from sqlalchemy.sql.sqltypes import NullType

from flowserv_async._util import new_id, utc_now
from flowserv_async.db._statements import Statements
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
_RUN_LOG = typed(Table, RunLogLine.__table__)


class _DialectFunction(FunctionElement[Any]):
    """A function of two arguments, written for each backend as a template of them."""

    templates: ClassVar[dict[str, str]]
    inherit_cache = True


@compiles(_DialectFunction)
def _render(element: _DialectFunction, compiler: SQLCompiler, **kw: Any) -> str:
    # Compiled fragments (columns, bound parameters): no values in the text.
    arguments = (compiler.process(arg, **kw) for arg in element.clauses)
    return element.templates[compiler.dialect.name].format(*arguments)


class _IsIn(_DialectFunction):
    """``column IN`` the values of a JSON array given as text: one bound parameter.

    An expanding ``IN`` list is rendered anew for each number of values, on every call;
    this is one statement whatever the number of runs.
    """

    # Not Boolean: SQLite, which has no boolean type, would compare it with 1, and the
    # lookup of the runs by primary key would become a scan.
    type = NullType()
    name = "is_in"
    inherit_cache = True
    templates: ClassVar[dict[str, str]] = {
        "sqlite": "{0} IN (SELECT value FROM json_each({1}))",
        # An array, not IN (SELECT ...): the planner then looks the values up in the
        # column's index instead of hashing them against a scan of the table.
        "postgresql": "{0} = ANY(ARRAY(SELECT json_array_elements_text(CAST({1} AS JSON))))",
    }


def is_in(column: ColumnElement[Any], values: str | Collection[str]) -> _IsIn:
    """``column`` in the JSON list bound as ``values`` (a name), or in these constants."""
    if isinstance(values, str):
        return _IsIn(column, bindparam(values, type_=String()))
    return _IsIn(column, literal(json.dumps(sorted(values)), String()))


def _ids(values: Collection[str]) -> str:
    return json.dumps(list(values))


_INSERT_RUN = insert(_RUNS)
_INSERT_RUN_FILE = insert(_RUN_FILES)
_INSERT_RANKING = insert(_RANKINGS)
_INSERT_LOG_LINE = insert(_RUN_LOG)
_LOG_OWNERS = select(_RUNS.c.run_id, _RUNS.c.workflow_id, _RUNS.c.group_id).where(
    is_in(_RUNS.c.run_id, "run_ids")
)
_TRIM_LOG = delete(_RUN_LOG).where(
    _RUN_LOG.c.run_id == bindparam("log_of"), _RUN_LOG.c.pos < bindparam("cutoff")
)
_HEARTBEAT = (
    update(_RUNS)
    .where(is_in(_RUNS.c.run_id, "run_ids"), _RUNS.c.engine_id == bindparam("reporter"))
    .values(heartbeat_at=bindparam("now", type_=_RUNS.c.heartbeat_at.type))
)
# A run without an engine waits in the database queue (dispatch.database): no engine
# has taken it yet, so none can have stopped reporting it.
_STALE_CANDIDATES = select(_RUNS.c.run_id, _RUNS.c.engine_id).where(
    is_in(_RUNS.c.state, [str(s) for s in ACTIVE_STATES]),
    or_(_RUNS.c.heartbeat_at.is_(None), _RUNS.c.heartbeat_at < bindparam("limit")),
    _RUNS.c.engine_id.is_not(None),
)
_PROCESSES = select(_RUNS.c.run_id, _RUNS.c.processes).where(
    is_in(_RUNS.c.run_id, "run_ids"), _RUNS.c.processes.is_not(None)
)


def insert_runs(statements: Statements, runs: Sequence[NewRun]) -> None:
    """Create PENDING runs in one ``INSERT``, each with its ``run.created`` event."""
    if not runs:
        return
    statements.execute(
        _INSERT_RUN,
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
        changes.run_created(
            statements.events, run.run_id, run.workflow_id, run.group_id, run.created_at
        )


def set_state(
    statements: Statements,
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
    return bool(set_states(statements, [run_id], state, messages, records))


class _RecordOf(_DialectFunction):
    """The value of a run's id in a JSON object given as text: ``{run_id: record}``.

    So that the records of many runs are set by the one ``UPDATE`` that moves them to
    RUNNING (a run without a record gets NULL).
    """

    type = JSON()
    name = "record_of"
    inherit_cache = True
    # Run ids are hex digits: the quoted key needs no escaping.
    templates: ClassVar[dict[str, str]] = {
        "sqlite": """json_extract({0}, '$."' || {1} || '"')""",
        "postgresql": "(CAST({0} AS JSON) -> {1})",
    }


@functools.cache
def _move_statement(state: RunState) -> Update:
    """The conditional ``UPDATE ... RETURNING`` that moves runs to ``state``.

    Built once per state, with the run ids (a JSON list), the time and the messages as
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
    return (
        update(_RUNS)
        .where(
            is_in(_RUNS.c.run_id, "run_ids"),
            is_in(_RUNS.c.state, [str(s) for s in allowed_sources(state)]),
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
    statements: Statements,
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
    params: dict[str, Any] = {"run_ids": _ids(run_ids), "now": utc_now()}
    if state in FINAL_STATES:
        params["messages"] = list(messages or [])
    elif state == RunState.RUNNING:
        params["records"] = json.dumps(processes or {})
    moved = set()
    for row in statements.execute(_move_statement(state), params):
        run_id, workflow_id, group_id, stored_messages, created_at, started_at, ended_at = row
        moved.add(run_id)
        changes.state_changed(
            statements.events,
            run_id=run_id,
            workflow_id=workflow_id,
            group_id=group_id,
            state=str(state),
            messages=stored_messages,
            created_at=created_at,
            started_at=started_at,
            ended_at=ended_at,
        )
    return moved


def record_successes(
    statements: Statements, results: Sequence[tuple[ResultSpec, RunOutcome]]
) -> set[str]:
    """Record successful runs (state, result files, ranking); the ids of those recorded.

    The files must already be in the file store under each ``spec.prefix``. A run whose
    results do not fit the workflow's result schema becomes ERROR instead, with the
    reason (it is not silently left unranked). The runs move to SUCCESS in one
    ``UPDATE``, their files and rankings are inserted with one statement each.
    """
    for spec, outcome in results:
        if outcome.error is not None:
            set_state(statements, spec.run_id, RunState.ERROR, [outcome.error])
    valid = [(spec, outcome) for spec, outcome in results if outcome.error is None]
    moved = set_states(statements, [spec.run_id for spec, _ in valid], RunState.SUCCESS)
    recorded = [(spec, outcome) for spec, outcome in valid if spec.run_id in moved]
    files = [
        {"file_id": new_id(), "run_id": spec.run_id, "key": name, "name": name, "size": size}
        for spec, outcome in recorded
        for name, size in outcome.files
    ]
    if files:
        statements.execute(_INSERT_RUN_FILE, files)
    ranked = [
        (spec, outcome.results)
        for spec, outcome in recorded
        if outcome.results is not None and spec.group_id is not None
    ]
    if ranked:
        statements.execute(
            _INSERT_RANKING,
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
            changes.ranking_changed(statements.events, spec.workflow_id, spec.run_id, "ranked")
    return moved


def append_log(
    statements: Statements, run_id: str, entries: Sequence[LogEntry], keep_from: int = 0
) -> None:
    """Store log lines of a run and drop its stored lines before ``keep_from``.

    With ``keep_from`` from the engine's :class:`~flowserv_async.engine.log.LogBatch`,
    the stored log is the same tail, within the same byte and line budget, as the
    engine's in-memory log; readers are told how many lines were dropped. At most the
    newest ``DEFAULT_MAX_LINES`` lines are kept in any case.
    """
    append_logs(statements, [(run_id, entries, keep_from)])


def append_logs(
    statements: Statements, logs: Sequence[tuple[str, Sequence[LogEntry], int]]
) -> None:
    """Store log lines of several runs in one ``INSERT`` (see :func:`append_log`)."""
    rows = [
        {"run_id": run_id, "pos": e.pos, "step": e.step, "stream": e.stream, "text": e.text}
        for run_id, entries, _ in logs
        for e in entries
    ]
    owners = {}
    if rows:
        statements.execute(_INSERT_LOG_LINE, rows)
        told = [run_id for run_id, entries, _ in logs if entries]
        owners = {
            run_id: (workflow_id, group_id)
            for run_id, workflow_id, group_id in statements.execute(
                _LOG_OWNERS, {"run_ids": _ids(told)}
            )
        }
    for run_id, entries, keep_from in logs:
        if entries:
            workflow_id, group_id = owners[run_id]
            lines = [
                {"pos": e.pos, "step": e.step, "stream": e.stream, "text": e.text} for e in entries
            ]
            changes.log_appended(statements.events, run_id, workflow_id, group_id, lines)
        cutoff = max(keep_from, entries[-1].pos - DEFAULT_MAX_LINES + 1 if entries else 0)
        if cutoff > 0:
            statements.execute(_TRIM_LOG, {"log_of": run_id, "cutoff": cutoff})


def heartbeat(statements: Statements, engine_id: str, run_ids: Sequence[str]) -> None:
    """Tell that this engine still executes these runs."""
    if run_ids:
        statements.execute(
            _HEARTBEAT, {"run_ids": _ids(run_ids), "reporter": engine_id, "now": utc_now()}
        )


def fail_stale_runs(
    statements: Statements,
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
    spared = set(tracked or ())
    run_ids = [
        run_id
        for run_id, owner in statements.execute(_STALE_CANDIDATES, {"limit": limit})
        if owner != engine_id or (tracked is not None and run_id not in spared)
    ]
    message = f"the run was interrupted: its engine stopped reporting for over {lease:g} s"
    failed = set_states(statements, run_ids, RunState.ERROR, [message])
    return [r for r in run_ids if r in failed]


def run_processes(statements: Statements, run_ids: Collection[str]) -> dict[str, Any]:
    """The recorded process containment of these runs (those that have one)."""
    if not run_ids:
        return {}
    rows = statements.execute(_PROCESSES, {"run_ids": _ids(run_ids)})
    return {run_id: record for run_id, record in rows}
