"""Users: register, activate, log in and out, who am I, password resets, listing."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, status

import flowserv_async.server.models as models
from flowserv_async.errors import UnauthenticatedAccessError
from flowserv_async.server._caller import CallerDep

router = APIRouter(prefix="/users", tags=["users"], route_class=models.ShapedRoute)


@router.get("", response_model=models.UserListing)
async def list_users(caller: CallerDep, query: str | None = None) -> dict[str, Any]:
    """Active users by name (administrators only; tokens are never shown)."""
    async with caller.session(login=True) as api:
        return await api.users().list_users(query=query)


@router.post("/register", status_code=status.HTTP_201_CREATED, response_model=models.User)
async def register_user(caller: CallerDep, body: models.RegisterBody) -> dict[str, Any]:
    """Create a user: active, or inactive until activated with ``verify: true``."""
    async with caller.session() as api:
        return await api.users().register_user(body.username, body.password, verify=body.verify)


@router.post("/activate", response_model=models.User)
async def activate_user(caller: CallerDep, body: models.ActivateBody) -> dict[str, Any]:
    """Activate a user (administrators only)."""
    async with caller.session(login=True) as api:
        return await api.users().activate_user(body.id)


@router.post("/login", response_model=models.User)
async def login_user(caller: CallerDep, body: models.LoginBody) -> dict[str, Any]:
    """Return the user with an access token for the ``api_key`` header."""
    async with caller.session() as api:
        return await api.users().login_user(body.username, body.password)


@router.post("/logout", response_model=models.User)
async def logout_user(caller: CallerDep) -> dict[str, Any]:
    """Invalidate the caller's token (any body, or none, is ignored)."""
    if not caller.token:
        raise UnauthenticatedAccessError("not logged in")
    async with caller.session() as api:
        return await api.users().logout_user(caller.token)


@router.get("/whoami", response_model=models.User)
async def whoami_user(caller: CallerDep) -> dict[str, Any]:
    """The user that owns the caller's token, with the token."""
    async with caller.session() as api:
        user = await api.users().whoami_user(caller.token)
    return {**user, "token": caller.token}


@router.post("/password/request", response_model=models.PasswordRequest)
async def request_password_reset(
    caller: CallerDep, body: models.PasswordRequestBody
) -> dict[str, Any]:
    """Start a password reset (the same answer for unknown names)."""
    async with caller.session() as api:
        return await api.users().request_password_reset(body.username)


@router.post("/password/reset", response_model=models.User)
async def reset_password(caller: CallerDep, body: models.PasswordResetBody) -> dict[str, Any]:
    """Set a new password with the identifier of a reset request."""
    async with caller.session() as api:
        return await api.users().reset_password(body.requestId, body.password)
