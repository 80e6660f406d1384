"""What every service shares.

The session context, authorization checks, and the one boundary where database and OS
errors become :class:`~flowserv_async.errors.FlowservError`.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, TypeVar, TypeVarTuple, Unpack

from sqlalchemy import Select, select
from sqlalchemy.exc import IntegrityError, SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import Session

from flowserv_async.config import Settings
from flowserv_async.db.database import Reader
from flowserv_async.db.models import GroupMember, User
from flowserv_async.errors import (
    ConstraintViolationError,
    FlowservError,
    InvalidArgumentError,
    UnauthenticatedAccessError,
    UnauthorizedAccessError,
)

if TYPE_CHECKING:
    from flowserv_async.local import LocalAPIFactory

T = TypeVar("T")
Ts = TypeVarTuple("Ts")

Executor = Reader | Session
"""What a read runs its statements on (all have ``execute(statement, params)``)."""


@contextmanager
def translate_errors() -> Iterator[None]:
    """Turn SQLAlchemy and OS errors into :class:`FlowservError` (chained)."""
    try:
        yield
    except FlowservError:
        raise
    except IntegrityError as exc:
        raise ConstraintViolationError(f"constraint violated: {exc.orig}") from exc
    except SQLAlchemyError as exc:
        raise FlowservError(f"database error: {exc}") from exc
    except OSError as exc:
        raise FlowservError(f"file store error: {exc}") from exc


@dataclass
class ServiceContext:
    """State shared by the services of one API session.

    Attributes:
        settings: the factory's settings.
        factory: the factory that opened the session (engine, file store).
        user_id: the resolved user, or None for anonymous.
        token_given: True when the caller presented an access token (valid or not).
        after_commit: coroutines run once the session's transaction has committed.
        on_rollback: coroutines run if the session's transaction rolls back.
        leave_admission: gives the session's admission slot (``DB.admission``) back;
            :meth:`commit` calls it, since what follows a commit in the middle of a
            session is waiting for the engine, not database work.

    """

    settings: Settings
    factory: LocalAPIFactory
    user_id: str | None
    token_given: bool
    after_commit: list[Callable[[], Awaitable[None]]] = field(default_factory=list)
    on_rollback: list[Callable[[], Awaitable[None]]] = field(default_factory=list)
    leave_admission: Callable[[], None] = field(default=lambda: None)
    _session: AsyncSession | None = field(default=None, init=False)

    @property
    def session(self) -> AsyncSession:
        """The session's only ``AsyncSession``, created when first used."""
        if self._session is None:
            self._session = self.factory.db.session_factory()
        return self._session

    @property
    def opened_session(self) -> AsyncSession | None:
        """The ``AsyncSession`` if something used it, else None."""
        return self._session

    async def read(self, read: Callable[[Executor, Unpack[Ts]], T], *args: *Ts) -> T:
        """Run ``read(executor, *args)``, the statements of a read, in one call.

        Before the session is used, on a connection of its own outside a transaction
        (:meth:`DB.read`): a call that only reads never creates its ``AsyncSession``.
        After, in the session, so that the read sees the session's own work.
        """
        if self._session is None:
            return await self.factory.db.read(read, *args)
        return await self._session.run_sync(read, *args)

    async def begin_write(self) -> None:
        """Called by every service method that writes, before its first statement.

        On SQLite this makes the transaction wait for the write lock up front instead
        of failing on a lock upgrade; reading sessions never take the lock.
        """
        await self.factory.db.begin_write(self.session)

    async def commit(self) -> None:
        """Commit the work so far (used where an outside party must see it now).

        The after-commit actions run at once; rollback actions of the committed work
        are dropped.
        """
        if self._session is not None:
            await self._session.commit()
        self.leave_admission()
        self.on_rollback.clear()
        hooks, self.after_commit = self.after_commit, []
        for hook in hooks:
            await hook()

    def require_user(self) -> str:
        """Return the caller's user id, or raise if the caller is anonymous."""
        if self.user_id is None:
            raise UnauthenticatedAccessError()
        return self.user_id

    async def require_admin(self) -> None:
        """Allow library-level admin operations (SPEC 2).

        Allowed under open access and in sessions opened with neither a token nor a
        user (local use); any other caller, one given by token or by ``user_id``, must
        be an admin.
        """
        if self.settings.open_access or (not self.token_given and self.user_id is None):
            return
        user_id = self.require_user()
        user = await self.session.get(User, user_id)
        if user is None or not user.is_admin:
            raise UnauthorizedAccessError(f"user '{user_id}' is not an administrator")

    async def is_member(self, group_id: str) -> bool:
        """True when the caller may act for the group (always under open access)."""
        if self.settings.open_access:
            return True
        if self.user_id is None:
            return False
        stmt = select(GroupMember.user_id).where(
            GroupMember.group_id == group_id, GroupMember.user_id == self.user_id
        )
        return (await self.session.execute(stmt)).first() is not None

    async def require_member(self, group_id: str) -> str | None:
        """Raise unless the caller is a member of the group; return the caller's id."""
        if not self.settings.open_access:
            self.require_user()
        self.check_member(group_id, await self.is_member(group_id))
        return self.user_id

    async def require_downloader(self, group_id: str) -> None:
        """Raise unless the caller may download the group's files.

        Members only, unless ``FLOWSERV_ANONYMOUS_DOWNLOADS`` restores flowserv's
        downloads by identifier for everyone.
        """
        if not self.settings.anonymous_downloads:
            await self.require_member(group_id)

    def check_member(self, group_id: str, is_member: bool) -> None:
        """:meth:`require_member` with membership already read (``is_member``)."""
        if not self.settings.open_access:
            self.require_user()
            if not is_member:
                raise UnauthorizedAccessError(
                    f"user '{self.user_id}' is not a member of group '{group_id}'"
                )


def paged(stmt: Select[Any], limit: int | None, offset: int | None) -> Select[Any]:
    """Apply a listing's optional ``limit`` and ``offset``.

    Raises:
        InvalidArgumentError: for a negative or non-integer value.

    """
    check_page(limit, offset)
    return stmt.limit(limit).offset(offset)


def check_page(limit: int | None, offset: int | None) -> None:
    """Refuse a ``limit`` or ``offset`` that is not a non-negative integer or None.

    Raises:
        InvalidArgumentError: naming the bad value.

    """
    for name, value in (("limit", limit), ("offset", offset)):
        if value is not None and (
            not isinstance(value, int) or isinstance(value, bool) or value < 0
        ):
            raise InvalidArgumentError(f"{name} must be a non-negative integer, got {value!r}")


def _translated(method: Callable[..., Awaitable[Any]]) -> Callable[..., Awaitable[Any]]:
    @functools.wraps(method)
    async def wrapper(*args: Any, **kwargs: Any) -> Any:
        with translate_errors():
            return await method(*args, **kwargs)

    return wrapper


class Service:
    """Base of the service components; every public coroutine method translates errors."""

    def __init__(self, ctx: ServiceContext) -> None:
        self.ctx = ctx

    @property
    def session(self) -> AsyncSession:
        """The session's ``AsyncSession`` (created when first used)."""
        return self.ctx.session

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        for name, member in list(vars(cls).items()):
            if not name.startswith("_") and inspect.iscoroutinefunction(member):
                setattr(cls, name, _translated(member))
