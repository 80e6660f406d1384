"""ORM models: the tables of flowserv with real constraints and cascading deletes.

Relationships are never loaded implicitly (``lazy="raise"``); services query what they
need explicitly and return plain dicts built inside the session.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Text,
    TypeDecorator,
    UniqueConstraint,
)
from sqlalchemy.engine import Dialect
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship

from flowserv_async._util import new_id, utc_now

ID = String(32)


class UTCDateTime(TypeDecorator[datetime]):
    """A timestamp stored as naive UTC and returned timezone-aware (UTC) on every backend."""

    impl = DateTime(timezone=False)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        """Store as naive UTC."""
        if value is None:
            return None
        if value.tzinfo is not None:
            value = value.astimezone(UTC).replace(tzinfo=None)
        return value

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        """Return as aware UTC."""
        if value is None:
            return None
        return value.replace(tzinfo=UTC)


class Base(DeclarativeBase):
    """Declarative base of all tables."""

    # Named constraints, so that they can be dropped (the workflow <-> run cycle).
    metadata = MetaData(
        naming_convention={
            "ix": "ix_%(column_0_label)s",
            "uq": "uq_%(table_name)s_%(column_0_N_name)s",
            "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
            "pk": "pk_%(table_name)s",
        }
    )

    type_annotation_map = {  # noqa: RUF012 - SQLAlchemy reads it once
        datetime: UTCDateTime(),
        dict[str, Any]: JSON,
        list[Any]: JSON,
    }


class User(Base):
    """A registered user."""

    __tablename__ = "users"

    user_id: Mapped[str] = mapped_column(ID, primary_key=True, default=new_id)
    name: Mapped[str] = mapped_column(String(512), unique=True)
    secret: Mapped[str] = mapped_column(String(256))
    active: Mapped[bool] = mapped_column(Boolean, default=False)
    is_admin: Mapped[bool] = mapped_column(Boolean, default=False)
    created_at: Mapped[datetime] = mapped_column(default=utc_now)


class APIKey(Base):
    """The login token of a user (at most one per user, as in flowserv)."""

    __tablename__ = "api_keys"

    user_id: Mapped[str] = mapped_column(
        ForeignKey("users.user_id", ondelete="CASCADE"), primary_key=True
    )
    # The token's first characters select the row; the whole value is then compared in
    # constant time, so a lookup never compares secrets in the database.
    selector: Mapped[str] = mapped_column(String(16), unique=True)
    value: Mapped[str] = mapped_column(String(128))
    expires_at: Mapped[datetime]


class PasswordRequest(Base):
    """A pending password reset request."""

    __tablename__ = "password_requests"

    request_id: Mapped[str] = mapped_column(ID, primary_key=True, default=new_id)
    user_id: Mapped[str] = mapped_column(
        ForeignKey("users.user_id", ondelete="CASCADE"), unique=True
    )
    expires_at: Mapped[datetime]


class Workflow(Base):
    """An installed workflow template."""

    __tablename__ = "workflows"

    workflow_id: Mapped[str] = mapped_column(ID, primary_key=True, default=new_id)
    name: Mapped[str] = mapped_column(String(512), unique=True)
    description: Mapped[str | None] = mapped_column(Text)
    instructions: Mapped[str | None] = mapped_column(Text)
    workflow_spec: Mapped[dict[str, Any]]
    parameters: Mapped[list[Any]] = mapped_column(default=list)
    parameter_groups: Mapped[list[Any] | None]
    outputs: Mapped[list[Any] | None]
    result_schema: Mapped[dict[str, Any] | None]
    postproc_spec: Mapped[dict[str, Any] | None]
    ignore_postproc: Mapped[bool] = mapped_column(Boolean, default=False)
    engine_config: Mapped[dict[str, Any] | None]
    postproc_run_id: Mapped[str | None] = mapped_column(
        ForeignKey("runs.run_id", ondelete="SET NULL", use_alter=True)
    )
    created_at: Mapped[datetime] = mapped_column(default=utc_now)


class Group(Base):
    """A user group (submission) of a workflow."""

    __tablename__ = "groups"
    __table_args__ = (UniqueConstraint("workflow_id", "name"),)

    group_id: Mapped[str] = mapped_column(ID, primary_key=True, default=new_id)
    workflow_id: Mapped[str] = mapped_column(
        ForeignKey("workflows.workflow_id", ondelete="CASCADE"), index=True
    )
    name: Mapped[str] = mapped_column(String(512))
    owner_id: Mapped[str | None] = mapped_column(ForeignKey("users.user_id", ondelete="SET NULL"))
    workflow_spec: Mapped[dict[str, Any]]
    parameters: Mapped[list[Any]] = mapped_column(default=list)
    engine_config: Mapped[dict[str, Any] | None]
    created_at: Mapped[datetime] = mapped_column(default=utc_now)

    members: Mapped[list[GroupMember]] = relationship(
        lazy="raise", cascade="all, delete-orphan", passive_deletes=True
    )


class GroupMember(Base):
    """Membership of a user in a group."""

    __tablename__ = "group_members"

    group_id: Mapped[str] = mapped_column(
        ForeignKey("groups.group_id", ondelete="CASCADE"), primary_key=True
    )
    user_id: Mapped[str] = mapped_column(
        ForeignKey("users.user_id", ondelete="CASCADE"), primary_key=True, index=True
    )


class UploadedFile(Base):
    """A file uploaded by a group."""

    __tablename__ = "uploads"

    file_id: Mapped[str] = mapped_column(ID, primary_key=True, default=new_id)
    group_id: Mapped[str] = mapped_column(
        ForeignKey("groups.group_id", ondelete="CASCADE"), index=True
    )
    name: Mapped[str] = mapped_column(String(1024))
    mime_type: Mapped[str | None] = mapped_column(String(256))
    size: Mapped[int] = mapped_column(Integer)
    key: Mapped[str] = mapped_column(String(2048))
    created_at: Mapped[datetime] = mapped_column(default=utc_now)


class Run(Base):
    """A workflow run; post-processing runs have no group."""

    __tablename__ = "runs"
    __table_args__ = (
        UniqueConstraint("workflow_id", "postproc_key"),
        Index("ix_runs_group_created", "group_id", "created_at"),
        Index("ix_runs_state", "state"),
    )

    run_id: Mapped[str] = mapped_column(ID, primary_key=True, default=new_id)
    workflow_id: Mapped[str] = mapped_column(
        ForeignKey("workflows.workflow_id", ondelete="CASCADE"), index=True
    )
    group_id: Mapped[str | None] = mapped_column(ForeignKey("groups.group_id", ondelete="CASCADE"))
    state: Mapped[str] = mapped_column(String(8))
    created_at: Mapped[datetime] = mapped_column(default=utc_now)
    started_at: Mapped[datetime | None]
    ended_at: Mapped[datetime | None]
    arguments: Mapped[list[Any]] = mapped_column(default=list)
    messages: Mapped[list[Any] | None]
    # Which engine executes the run and when it last said so (SPEC 6.5).
    engine_id: Mapped[str | None] = mapped_column(String(64))
    heartbeat_at: Mapped[datetime | None]
    # How the engine contained the run's processes, and its run folder: what another
    # engine needs to clean up after an interrupted run (engine.containment).
    processes: Mapped[dict[str, Any] | None]
    # For post-processing runs: a digest of the ranked run ids that were its inputs;
    # unique per workflow, so one ranking starts at most one post-processing run.
    postproc_key: Mapped[str | None] = mapped_column(String(64))


class RunFile(Base):
    """A result file of a successful run."""

    __tablename__ = "run_files"
    __table_args__ = (UniqueConstraint("run_id", "key"),)

    file_id: Mapped[str] = mapped_column(ID, primary_key=True, default=new_id)
    run_id: Mapped[str] = mapped_column(ForeignKey("runs.run_id", ondelete="CASCADE"))
    key: Mapped[str] = mapped_column(String(2048))
    name: Mapped[str] = mapped_column(String(2048))
    mime_type: Mapped[str | None] = mapped_column(String(256))
    size: Mapped[int] = mapped_column(Integer)


class RunLogLine(Base):
    """One captured line of a step's standard output or error."""

    __tablename__ = "run_log"
    __table_args__ = (UniqueConstraint("run_id", "pos"),)

    line_id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    run_id: Mapped[str] = mapped_column(ForeignKey("runs.run_id", ondelete="CASCADE"))
    pos: Mapped[int] = mapped_column(Integer)
    step: Mapped[str | None] = mapped_column(String(512))
    stream: Mapped[str] = mapped_column(String(8))
    text: Mapped[str] = mapped_column(Text)


class Ranking(Base):
    """The typed result values of a ranked run (one row per run)."""

    __tablename__ = "rankings"

    run_id: Mapped[str] = mapped_column(
        ForeignKey("runs.run_id", ondelete="CASCADE"), primary_key=True
    )
    workflow_id: Mapped[str] = mapped_column(
        ForeignKey("workflows.workflow_id", ondelete="CASCADE"), index=True
    )
    group_id: Mapped[str] = mapped_column(ForeignKey("groups.group_id", ondelete="CASCADE"))
    values: Mapped[dict[str, Any]]


class StoredEvent(Base):
    """One run event (see :mod:`flowserv_async.events`).

    It is written in the transaction of the change it describes. Ids increase in commit
    order on both backends (on PostgreSQL, writers take a transaction lock just before
    they insert events), so a consumer that has seen id ``n`` has seen every event up to
    ``n``. No foreign keys: an event outlives what it describes until retention removes
    it.
    """

    __tablename__ = "events"
    __table_args__ = ({"sqlite_autoincrement": True},)

    event_id: Mapped[int] = mapped_column(
        BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True
    )
    type: Mapped[str] = mapped_column(String(32))
    workflow_id: Mapped[str] = mapped_column(ID, index=True)
    group_id: Mapped[str | None] = mapped_column(ID, index=True)
    run_id: Mapped[str | None] = mapped_column(ID, index=True)
    created_at: Mapped[datetime] = mapped_column(default=utc_now)
    data: Mapped[dict[str, Any]]


class QueuedRun(Base):
    """A PENDING run that waits in the database for a process to execute it.

    Only with ``FLOWSERV_RUN_QUEUE=database`` (see :mod:`flowserv_async.dispatch`). The
    row is deleted by the process that claims the run, in the transaction that records
    that process's engine on the run; ``queue_id`` orders the queue (first in, first out).
    """

    __tablename__ = "run_queue"

    queue_id: Mapped[int] = mapped_column(
        BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True
    )
    run_id: Mapped[str] = mapped_column(ForeignKey("runs.run_id", ondelete="CASCADE"), unique=True)
    # The prepared job (flowserv_async.dispatch.jobs): everything the engine needs.
    job: Mapped[bytes] = mapped_column(LargeBinary)


class CancelRequest(Base):
    """A request to the process that executes a run to cancel it (``FLOWSERV_RUN_QUEUE``).

    No foreign key: a request outlives a run deleted with its group or workflow, whose
    processes must still be stopped.
    """

    __tablename__ = "run_cancels"

    run_id: Mapped[str] = mapped_column(ID, primary_key=True)
    engine_id: Mapped[str] = mapped_column(String(64), index=True)
    reason: Mapped[str | None] = mapped_column(Text)
    requested_at: Mapped[datetime] = mapped_column(default=utc_now)
