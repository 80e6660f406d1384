"""Each request's way into the service: its token and one session per request."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Annotated

from fastapi import Depends, Request, Security
from fastapi.security import APIKeyHeader, APIKeyQuery

from flowserv_async.api import API
from flowserv_async.errors import UnauthenticatedAccessError
from flowserv_async.local import LocalAPIFactory

#: flowserv's token header (``HEADER_TOKEN``); there is no ``Authorization`` header.
TOKEN_HEADER = "api_key"

_header_token = APIKeyHeader(name=TOKEN_HEADER, auto_error=False)
_query_token = APIKeyQuery(name=TOKEN_HEADER, auto_error=False)


class Caller:
    """The sender of a request, as the service sees it.

    A request without a valid token is anonymous. Its session is opened with the token
    it sent, or an empty one: a session given a token is never a local library session,
    so no request passes the admin check without an administrator's token.
    """

    def __init__(self, factory: LocalAPIFactory, token: str | None) -> None:
        self.factory = factory
        self.token = token or ""

    @asynccontextmanager
    async def session(self, *, login: bool = False, public: bool = False) -> AsyncIterator[API]:
        """One API session (one transaction); ``login``: refuse anonymous callers.

        ``public``: the answer is the same for every caller, so the token is not looked
        up (an anonymous session, one database read less).

        Raises:
            UnauthenticatedAccessError: ``login`` and the caller has no valid token.

        """
        async with self.factory(access_token="" if public else self.token) as api:
            if login and api.user_id is None:
                raise UnauthenticatedAccessError("not logged in")
            yield api


def app_factory(request: Request) -> LocalAPIFactory:
    """The factory of the app that serves the request."""
    factory: LocalAPIFactory = request.app.state.flowserv_factory
    return factory


async def _caller(
    request: Request, token: Annotated[str | None, Security(_header_token)]
) -> Caller:
    return Caller(app_factory(request), token)


async def _downloader(
    request: Request,
    header: Annotated[str | None, Security(_header_token)],
    query: Annotated[str | None, Security(_query_token)],
) -> Caller:
    # Browsers follow download links without headers: the token may be in the URL.
    return Caller(app_factory(request), header or query)


CallerDep = Annotated[Caller, Depends(_caller)]
"""A route's caller, with the token from the ``api_key`` header."""

DownloaderDep = Annotated[Caller, Depends(_downloader)]
"""A download's caller, with the token from the ``api_key`` header or query parameter."""
