"""The users service: registration, login tokens, activation and password resets."""

from __future__ import annotations

import hmac
import secrets
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from sqlalchemy import bindparam, delete, select
from sqlalchemy.exc import IntegrityError

from flowserv_async._util import new_id, utc_now
from flowserv_async.config import DEFAULT_USER
from flowserv_async.db.models import APIKey, PasswordRequest, User
from flowserv_async.errors import (
    ConstraintViolationError,
    DuplicateUserError,
    UnauthenticatedAccessError,
    UnknownRequestError,
    UnknownUserError,
)
from flowserv_async.services.base import Executor, Service, paged
from flowserv_async.services.passwords import hash_password, verify_password

MAX_NAME_LENGTH = 512
_SELECTOR_LENGTH = 16


def new_token() -> str:
    """Return a new access token: 256 random bits as 64 hex characters."""
    return secrets.token_hex(32)


@dataclass(frozen=True, slots=True)
class TokenOwner:
    """The user that an access token authenticates."""

    user_id: str
    name: str


_KEYS, _USERS = APIKey.__table__.c, User.__table__.c

# Built once, from the tables' columns: every request runs it, and an ORM statement that
# loads two entities cost more CPU than the lookup itself.
_TOKEN_OWNER = (
    select(_KEYS.value, _KEYS.expires_at, _USERS.user_id, _USERS.name, _USERS.active)
    .join_from(APIKey.__table__, User.__table__, _USERS.user_id == _KEYS.user_id)
    .where(_KEYS.selector == bindparam("selector"))
)


def authenticate(executor: Executor, token: str | None) -> TokenOwner | None:
    """Return the active user that owns an unexpired token, else None.

    A read (see :meth:`~flowserv_async.services.base.ServiceContext.read`).
    """
    if not token or len(token) <= _SELECTOR_LENGTH:
        return None
    row = (executor.execute(_TOKEN_OWNER, {"selector": token[:_SELECTOR_LENGTH]})).first()
    if row is None:
        return None
    if not hmac.compare_digest(row.value.encode(), token.encode()):
        return None
    if row.expires_at <= utc_now() or not row.active:
        return None
    return TokenOwner(row.user_id, row.name)


def user_dict(user: User | TokenOwner, token: str | None = None) -> dict[str, Any]:
    """Serialize a user as ``{id, username, token?}``."""
    doc: dict[str, Any] = {"id": user.user_id, "username": user.name}
    if token is not None:
        doc["token"] = token
    return doc


def _check_password(password: str) -> None:
    if not isinstance(password, str) or not password.strip():
        raise ConstraintViolationError("password must not be blank")


def _check_username(username: str) -> str:
    if not isinstance(username, str):
        raise ConstraintViolationError(f"user name must be a string, not {username!r}")
    name = username.strip()
    if not 0 < len(name) <= MAX_NAME_LENGTH:
        raise ConstraintViolationError(
            f"user name must have 1 to {MAX_NAME_LENGTH} characters, got {len(name)}"
        )
    return name


class UserService(Service):
    """Register, activate, log in and out, and reset passwords of users."""

    async def register_user(
        self, username: str, password: str, verify: bool = False
    ) -> dict[str, Any]:
        """Create a user; with ``verify=True`` the user is inactive until activated.

        Raises:
            ConstraintViolationError: the name is blank or too long, or the password blank.
            DuplicateUserError: the name is taken.

        """
        name = _check_username(username)
        _check_password(password)
        # Hash before the first query: on SQLite the first statement takes the write
        # lock, which should not be held while scrypt runs.
        secret = await hash_password(password)
        await self.ctx.begin_write()
        if await self._find_by_name(name) is not None:
            raise DuplicateUserError(name)
        user = User(user_id=new_id(), name=name, secret=secret, active=not verify)
        self.session.add(user)
        try:
            await self.session.flush()
        except IntegrityError as exc:
            # Registered by a concurrent session since the check above.
            raise DuplicateUserError(name) from exc
        return user_dict(user)

    async def activate_user(self, user_id: str) -> dict[str, Any]:
        """Activate a user (an admin operation).

        Raises:
            UnknownUserError: no such user.

        """
        await self.ctx.require_admin()
        await self.ctx.begin_write()
        user = await self.session.get(User, user_id)
        if user is None:
            raise UnknownUserError(user_id)
        user.active = True
        await self.session.flush()
        return user_dict(user)

    async def list_users(
        self, query: str | None = None, limit: int | None = None, offset: int | None = None
    ) -> dict[str, Any]:
        """List active users (not the default user) ordered by name; ``query`` is a prefix."""
        await self.ctx.require_admin()
        stmt = select(User).where(User.active.is_(True), User.user_id != DEFAULT_USER)
        if query:
            escaped = query.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
            stmt = stmt.where(User.name.like(f"{escaped}%", escape="\\"))
        stmt = paged(stmt.order_by(User.name, User.user_id), limit, offset)
        users = (await self.session.scalars(stmt)).all()
        return {"users": [user_dict(u) for u in users]}

    async def login_user(self, username: str, password: str) -> dict[str, Any]:
        """Log in an active user and return it with its access token.

        An unexpired token is reused with its expiry extended.

        Raises:
            UnknownUserError: unknown name, inactive user or wrong password (one error
                for all, so that accounts cannot be probed).

        """
        name = username.strip() if isinstance(username, str) else ""
        user = await self._find_by_name(name) if name else None
        valid = await verify_password(
            password if isinstance(password, str) else "",
            user.secret if user is not None and user.active else None,
        )
        if user is None or not valid:
            raise UnknownUserError(name)
        # Verified while only reading; now take the write lock for the token. On
        # PostgreSQL that lock is per row: lock the user, so that concurrent logins of
        # one user take turns instead of both inserting its token.
        await self.ctx.begin_write()
        await self.session.execute(
            select(User.user_id).where(User.user_id == user.user_id).with_for_update()
        )
        now = utc_now()
        expires = now + timedelta(seconds=self.ctx.settings.auth_ttl)
        key = await self.session.get(APIKey, user.user_id, populate_existing=True)
        if key is not None and key.expires_at > now:
            key.expires_at = expires
            token = key.value
        else:
            token = new_token()
            if key is None:
                key = APIKey(user_id=user.user_id)
                self.session.add(key)
            key.selector, key.value, key.expires_at = token[:_SELECTOR_LENGTH], token, expires
        await self.session.flush()
        return user_dict(user, token=token)

    async def logout_user(self, api_key: str) -> dict[str, Any]:
        """Invalidate an access token.

        Raises:
            UnauthenticatedAccessError: the token is unknown or expired.

        """
        await self.ctx.begin_write()
        user = await self.ctx.read(authenticate, api_key)
        if user is None:
            raise UnauthenticatedAccessError("invalid or expired access token")
        await self.session.execute(delete(APIKey).where(APIKey.user_id == user.user_id))
        return user_dict(user)

    async def whoami_user(self, api_key: str) -> dict[str, Any]:
        """Return the user that owns a valid token.

        Raises:
            UnauthenticatedAccessError: the token is unknown or expired.

        """
        user = await self.ctx.read(authenticate, api_key)
        if user is None:
            raise UnauthenticatedAccessError("invalid or expired access token")
        return user_dict(user)

    async def request_password_reset(self, username: str) -> dict[str, Any]:
        """Start a password reset; always returns a fresh ``{requestId}``.

        Only an active user's request is recorded (it replaces any earlier one); the
        answer is the same for unknown names, so accounts cannot be probed.
        """
        request_id = new_id()
        await self.ctx.begin_write()
        name = username.strip() if isinstance(username, str) else ""
        user = await self._find_by_name(name) if name else None
        if user is not None and user.active:
            await self.session.execute(
                delete(PasswordRequest).where(PasswordRequest.user_id == user.user_id)
            )
            expires = utc_now() + timedelta(seconds=self.ctx.settings.auth_ttl)
            self.session.add(
                PasswordRequest(request_id=request_id, user_id=user.user_id, expires_at=expires)
            )
            await self.session.flush()
        return {"requestId": request_id}

    async def reset_password(self, request_id: str, password: str) -> dict[str, Any]:
        """Set a new password for the user of a reset request and log the user out.

        Raises:
            ConstraintViolationError: the password is blank.
            UnknownRequestError: the request is unknown or expired.

        """
        _check_password(password)
        secret = await hash_password(password)
        await self.ctx.begin_write()
        request = await self.session.get(PasswordRequest, request_id)
        if request is None or request.expires_at <= utc_now():
            raise UnknownRequestError(request_id)
        user = await self.session.get(User, request.user_id)
        if user is None:
            raise UnknownRequestError(request_id)
        user.secret = secret
        await self.session.execute(delete(APIKey).where(APIKey.user_id == user.user_id))
        await self.session.delete(request)
        await self.session.flush()
        return user_dict(user)

    async def _find_by_name(self, name: str) -> User | None:
        stmt = select(User).where(User.name == name)
        return (await self.session.scalars(stmt)).first()
