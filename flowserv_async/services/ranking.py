"""Leaderboards: the ranked results of a workflow's successful runs, sorted in SQL.

Each ranked run has one row in ``rankings`` with its typed result values as JSON; the
sort keys are JSON fields cast to the column type, so ordering, "missing values last"
and "best run per group" (a window function) all happen in the database.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

from sqlalchemy import (
    ColumnElement,
    Select,
    Text,
    bindparam,
    cast,
    func,
    select,
)

from flowserv_async.db.models import Group, Ranking, Run, Workflow
from flowserv_async.db.timestamps import iso_text
from flowserv_async.errors import InvalidArgumentError
from flowserv_async.services.base import Executor
from flowserv_async.states import RunState
from flowserv_async.template import ResultSchema, SortColumn

_WORKFLOWS = Workflow.__table__.c

#: A workflow's stored result schema as its JSON text, cast in SQL: asyncpg would
#: otherwise decode the JSON of every leaderboard row (see :func:`schema_text`).
SCHEMA_TEXT = cast(_WORKFLOWS.result_schema, Text)


def schema_text(value: Any) -> str | None:
    """A stored result schema as JSON text, or None for none.

    Parsed once per text and compared as it is. None stands for SQL NULL and for JSON
    null (as SQLite stores it).
    """
    if value is None or value == "null":
        return None
    return value if isinstance(value, str) else json.dumps(value, sort_keys=True)


#: What a leaderboard needs of its workflow (its first read, or when unsure).
WORKFLOW_COLUMNS = select(SCHEMA_TEXT.label("result_schema"), _WORKFLOWS.postproc_run_id).where(
    _WORKFLOWS.workflow_id == bindparam("workflow_id")
)


@lru_cache(maxsize=256)
def stored_schema(text: str) -> ResultSchema:
    """The ResultSchema of a workflow's stored ``result_schema`` JSON text, parsed once.

    Schemas are frozen, so one parsed object serves every leaderboard read of them.
    """
    return ResultSchema.from_dict(json.loads(text))


# The result schema last read of each workflow (bounded): with it a leaderboard is read
# in one statement, which also returns the current schema to check the guess.
_SEEN_SCHEMAS: dict[str, str] = {}
_SEEN_MAX = 1024


def remember_schema(workflow_id: str, text: str) -> None:
    """Note the result schema read of a workflow for its next leaderboard read."""
    if len(_SEEN_SCHEMAS) >= _SEEN_MAX:
        _SEEN_SCHEMAS.clear()
    _SEEN_SCHEMAS[workflow_id] = text


def sort_columns(schema: ResultSchema, order_by: Any) -> list[SortColumn]:
    """Validate ``order_by`` (``[{name, sortDesc?}]``) against the schema.

    ``None`` and an empty list mean the template's order (default: first column
    descending): without a sort column "the best run of a group" would be arbitrary.

    Raises:
        InvalidArgumentError: naming an unknown column or a malformed entry.

    """
    if order_by is None or (isinstance(order_by, list | tuple) and not order_by):
        return schema.default_order()
    if not isinstance(order_by, list | tuple):
        raise InvalidArgumentError(f"order_by must be a list of {{name, sortDesc}}: {order_by!r}")
    names = {column.name for column in schema.columns}
    columns: list[SortColumn] = []
    for item in order_by:
        if isinstance(item, SortColumn):
            column = item
        elif isinstance(item, dict) and isinstance(item.get("name"), str):
            desc = item.get("sortDesc", True)
            if not isinstance(desc, bool) or set(item) - {"name", "sortDesc"}:
                raise InvalidArgumentError(f"malformed order_by entry {item!r}")
            column = SortColumn(item["name"], desc)
        else:
            raise InvalidArgumentError(f"malformed order_by entry {item!r}")
        if column.name not in names:
            raise InvalidArgumentError(f"unknown result column '{column.name}' in order_by")
        columns.append(column)
    return columns


# The tables' columns: Core statements skip the ORM's compile and result steps.
_RANKINGS, _RUNS, _GROUPS = Ranking.__table__.c, Run.__table__.c, Group.__table__.c


def _sort_keys(order: Sequence[tuple[str, str, bool]]) -> list[ColumnElement[Any]]:
    keys: list[ColumnElement[Any]] = []
    for name, dtype, sort_desc in order:
        field = _RANKINGS["values"][name]
        value = (
            field.as_integer()
            if dtype == "int"
            else field.as_float()
            if dtype == "float"
            else field.as_string()
        )
        keys.append((value.desc() if sort_desc else value.asc()).nulls_last())
    # Ties: the earlier run first, then by id, so the order is stable.
    keys.extend([_RUNS.created_at.asc(), _RUNS.run_id.asc()])
    return keys


@lru_cache(maxsize=256)
def _ranked_statement(
    order: tuple[tuple[str, str, bool], ...], include_all: bool, with_workflow: bool = False
) -> Select[Any]:
    """The leaderboard query for ``(column, dtype, desc)`` keys, the workflow a parameter.

    Built once per order: building it (the window subquery most) cost more CPU than
    running it, and the same statement object lets SQLAlchemy's compiled cache hit.
    ``with_workflow`` adds the workflow's result schema text and post-processing run to
    every row (one statement instead of two).
    """
    keys = _sort_keys(order)
    ranked = (
        _RANKINGS.workflow_id == bindparam("workflow_id"),
        _RUNS.state == str(RunState.SUCCESS),
    )
    stmt = (
        select(
            _RUNS.run_id,
            iso_text(_RUNS.created_at),
            iso_text(_RUNS.started_at),
            iso_text(_RUNS.ended_at),
            _GROUPS.group_id,
            _GROUPS.name,
            _RANKINGS["values"],
        )
        .select_from(Ranking.__table__)
        .join(Run.__table__, _RUNS.run_id == _RANKINGS.run_id)
        .join(Group.__table__, _GROUPS.group_id == _RANKINGS.group_id)
        .where(*ranked)
    )
    if not include_all:
        position = func.row_number().over(partition_by=_RANKINGS.group_id, order_by=keys)
        window = (
            select(_RANKINGS.run_id, position.label("position"))
            .select_from(Ranking.__table__)
            .join(Run.__table__, _RUNS.run_id == _RANKINGS.run_id)
            .where(*ranked)
            .subquery()
        )
        best = select(window.c.run_id).where(window.c.position == 1)
        stmt = stmt.where(_RANKINGS.run_id.in_(best))
    if with_workflow:
        of_workflow = _WORKFLOWS.workflow_id == bindparam("workflow_id")
        stmt = stmt.add_columns(
            select(SCHEMA_TEXT).where(of_workflow).scalar_subquery().label("result_schema"),
            select(_WORKFLOWS.postproc_run_id)
            .where(of_workflow)
            .scalar_subquery()
            .label("postproc_run_id"),
        )
    return stmt.order_by(*keys)


@dataclass(frozen=True, slots=True)
class RankedRun:
    """One row of a leaderboard; its timestamps are ISO 8601 text."""

    run_id: str
    created_at: str
    started_at: str | None
    ended_at: str | None
    group_id: str
    group_name: str
    values: dict[str, Any]


def ranked_runs(
    executor: Executor,
    workflow_id: str,
    schema: ResultSchema,
    order: Sequence[SortColumn],
    include_all: bool = False,
) -> list[RankedRun]:
    """The successful ranked runs in rank order; the best run per group by default.

    Plain columns, not ORM objects: a leaderboard may have many thousand rows.

    Raises:
        InvalidArgumentError: ``include_all`` is no bool.

    """
    if not isinstance(include_all, bool):
        raise InvalidArgumentError(f"include_all must be true or false, got {include_all!r}")
    stmt = _ranked_statement(_order_key(schema, order), include_all)
    rows = executor.execute(stmt, {"workflow_id": workflow_id})
    return [RankedRun(*row) for row in rows]


def _order_key(
    schema: ResultSchema, order: Sequence[SortColumn]
) -> tuple[tuple[str, str, bool], ...]:
    return tuple((sort.name, schema.column(sort.name).dtype, sort.sort_desc) for sort in order)


def ranked_with_workflow(
    executor: Executor, workflow_id: str, order_by: Any, include_all: Any
) -> tuple[ResultSchema, str | None, list[RankedRun]] | None:
    """The leaderboard in one statement: ``(schema, post-processing run id, rows)``.

    Uses the result schema last read of the workflow (:func:`remember_schema`) and
    checks it against the one the same statement returns. None when that cannot be
    done (no schema seen, the seen schema refuses ``order_by``, no ranked run, or the
    schema changed): the caller reads the workflow first then, which also gives the
    errors.
    """
    text = _SEEN_SCHEMAS.get(workflow_id)
    if text is None or not isinstance(include_all, bool):
        return None
    schema = stored_schema(text)
    try:
        order = sort_columns(schema, order_by)
    except InvalidArgumentError:
        return None
    stmt = _ranked_statement(_order_key(schema, order), include_all, with_workflow=True)
    rows = executor.execute(stmt, {"workflow_id": workflow_id}).all()
    if not rows or schema_text(rows[0].result_schema) != text:
        return None
    return schema, rows[0].postproc_run_id, [RankedRun(*row[:7]) for row in rows]


def leaderboard(
    schema: ResultSchema,
    rows: Sequence[RankedRun],
    postproc: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """The Leaderboard shape: ``{schema, ranking, postproc?}``."""
    doc: dict[str, Any] = {
        "schema": [{"name": c.name, "label": c.label, "dtype": c.dtype} for c in schema.columns],
        "ranking": [
            {
                "run": {
                    "id": row.run_id,
                    "createdAt": row.created_at,
                    "startedAt": row.started_at,
                    "finishedAt": row.ended_at,
                },
                "group": {"id": row.group_id, "name": row.group_name},
                "results": [
                    {"name": c.name, "value": row.values.get(c.name)}
                    for c in schema.columns
                    if row.values.get(c.name) is not None
                ],
            }
            for row in rows
        ],
    }
    if postproc is not None:
        doc["postproc"] = postproc
    return doc
