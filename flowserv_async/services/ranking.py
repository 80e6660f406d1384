"""Leaderboards: the ranked results of a workflow's successful runs, sorted in SQL.

Each ranked run has one row in ``rankings`` with its typed result values as JSON; the
sort keys are JSON fields cast to the column type, so ordering, "missing values last"
and "best run per group" (a window function) all happen in the database.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from functools import lru_cache
from typing import Any

from sqlalchemy import ColumnElement, Select, bindparam, func, select
from sqlalchemy.ext.asyncio import AsyncSession

from flowserv_async._util import isoformat
from flowserv_async.db.models import Group, Ranking, Run
from flowserv_async.errors import InvalidArgumentError
from flowserv_async.states import RunState
from flowserv_async.template import ResultSchema, SortColumn


def stored_schema(doc: Any) -> ResultSchema:
    """The ResultSchema of a workflow's stored ``result_schema`` JSON, parsed once per text.

    Schemas are frozen, so one parsed object serves every leaderboard read of them.
    """
    return _parsed_schema(json.dumps(doc, sort_keys=True))


@lru_cache(maxsize=256)
def _parsed_schema(text: str) -> ResultSchema:
    return ResultSchema.from_dict(json.loads(text))


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
def _ranked_statement(order: tuple[tuple[str, str, bool], ...], include_all: bool) -> Select[Any]:
    """The leaderboard query for ``(column, dtype, desc)`` keys, the workflow a parameter.

    Built once per order: building it (the window subquery most) cost more CPU than
    running it, and the same statement object lets SQLAlchemy's compiled cache hit.
    """
    keys = _sort_keys(order)
    ranked = (
        _RANKINGS.workflow_id == bindparam("workflow_id"),
        _RUNS.state == str(RunState.SUCCESS),
    )
    stmt = (
        select(
            _RUNS.run_id,
            _RUNS.created_at,
            _RUNS.started_at,
            _RUNS.ended_at,
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
    return stmt.order_by(*keys)


@dataclass(frozen=True, slots=True)
class RankedRun:
    """One row of a leaderboard."""

    run_id: str
    created_at: datetime
    started_at: datetime | None
    ended_at: datetime | None
    group_id: str
    group_name: str
    values: dict[str, Any]


async def ranked_runs(
    session: AsyncSession,
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
    key = tuple((sort.name, schema.column(sort.name).dtype, sort.sort_desc) for sort in order)
    stmt = _ranked_statement(key, include_all)
    rows = await session.execute(stmt, {"workflow_id": workflow_id})
    return [RankedRun(*row) for row in rows]


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
                    "createdAt": isoformat(row.created_at),
                    "startedAt": isoformat(row.started_at),
                    "finishedAt": isoformat(row.ended_at),
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
