"""The ASGI app: flowserv's REST API over a :class:`~flowserv_async.LocalAPIFactory`."""

from __future__ import annotations

import logging
import re
import tempfile
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.middleware.cors import CORSMiddleware
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException

import flowserv_async.server.models as models
from flowserv_async.errors import (
    ConstraintViolationError,
    EventsExpiredError,
    FlowservError,
    InvalidConfigurationError,
    MissingConfigurationError,
    UnauthenticatedAccessError,
    UnauthorizedAccessError,
    UnknownObjectError,
    UnknownParameterError,
)
from flowserv_async.local import LocalAPIFactory
from flowserv_async.server._caller import CallerDep, app_factory
from flowserv_async.server._multipart import UploadError
from flowserv_async.server.routes import files, groups, runs, users, workflows
from flowserv_async.version import __version__
from flowserv_async.volume.fs import FileSystemVolume

logger = logging.getLogger(__name__)

_CORS_METHODS = ["DELETE", "GET", "HEAD", "OPTIONS", "PATCH", "POST", "PUT"]

_ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
    status: {"model": models.ErrorMessage, "description": description}
    for status, description in (
        (400, "bad request"),
        (403, "not logged in or not authorized"),
        (404, "unknown object"),
    )
}


def error_status(exc: FlowservError) -> int:
    """The HTTP status of a service error (flowserv's server, REST.md "Errors")."""
    if isinstance(exc, UnauthenticatedAccessError | UnauthorizedAccessError):
        return 403  # flowserv's clients know no 401
    if isinstance(exc, EventsExpiredError):
        return 410  # a Last-Event-ID older than the events kept: start a new stream
    if isinstance(exc, UnknownParameterError):
        return 400  # an unknown name in a run's arguments: a bad request body
    if isinstance(exc, UnknownObjectError):
        return 404
    if isinstance(
        exc, ConstraintViolationError | InvalidConfigurationError | MissingConfigurationError
    ):
        return 400
    return 500


def _error(status: int, message: str, headers: Mapping[str, str] | None = None) -> JSONResponse:
    return JSONResponse({"message": message}, status_code=status, headers=headers)


# A storage key: "{workflow}/groups/...", "{workflow}/runs/...", "{workflow}/static/...".
_STORAGE_KEY = re.compile(r"\b[A-Za-z0-9_]{1,32}/(?:groups|runs|static)/")

_GENERIC_MESSAGES = {400: "bad request", 403: "not authorized", 404: "unknown object"}


def client_message(message: str, status: int, factory: LocalAPIFactory) -> str:
    """The message of a 4xx error body: the service's, unless it shows server internals.

    The services name objects by their identifiers; a message that names a server folder
    (the base folder, the file store, the temporary folder) or a storage key is replaced
    by a generic one for its status, so that no client learns where files are kept.
    """
    folders = {str(factory.settings.api_dir), tempfile.gettempdir()}
    if isinstance(factory.volume, FileSystemVolume):
        folders.add(str(factory.volume.basedir))
    if any(folder in message for folder in folders) or _STORAGE_KEY.search(message):
        return _GENERIC_MESSAGES.get(status, "request failed")
    return message


async def _service_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, FlowservError)
    status = error_status(exc)
    if status == 500:
        # Database and file store failures: the message may show internals.
        logger.error("request %s %s failed", request.method, request.url.path, exc_info=exc)
        return _error(500, "internal server error")
    message = client_message(exc.message, status, app_factory(request))
    if message != exc.message:
        logger.warning("request %s %s: %s", request.method, request.url.path, exc.message)
    return _error(status, message)


async def _http_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, HTTPException)
    return _error(exc.status_code, str(exc.detail), exc.headers)


async def _validation_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    problems = "; ".join(
        f"{'.'.join(str(p) for p in err.get('loc', ()))}: {err.get('msg')}" for err in exc.errors()
    )
    return _error(400, f"invalid request: {problems}")


async def _upload_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, UploadError)
    return _error(exc.status, exc.message)


async def _unexpected_error(request: Request, exc: Exception) -> JSONResponse:
    logger.error("request %s %s failed", request.method, request.url.path, exc_info=exc)
    return _error(500, "internal server error")


async def _service_descriptor(caller: CallerDep) -> dict[str, Any]:
    """Name, version, base URL and route patterns; ``username`` with a valid token."""
    async with caller.session() as api:
        return api.server().to_dict()


def _document_errors_as_served(app: FastAPI) -> None:
    """Drop FastAPI's 422 from the OpenAPI document: invalid requests get a 400."""
    generate = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            doc = generate()
            for operations in doc.get("paths", {}).values():
                for operation in operations.values():
                    operation.get("responses", {}).pop("422", None)
            schemas = doc.get("components", {}).get("schemas", {})
            for name in ("HTTPValidationError", "ValidationError"):
                schemas.pop(name, None)
            app.openapi_schema = doc
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]


def create_app(
    factory: LocalAPIFactory | None = None, *, env: Mapping[str, Any] | None = None
) -> FastAPI:
    """Return the REST API as a FastAPI (ASGI) app.

    Without ``factory`` the app owns a :class:`LocalAPIFactory` built from ``env`` (and
    the process's ``FLOWSERV_*`` variables): its lifespan opens and closes it. A given
    factory is opened by the lifespan if needed and never closed: its owner closes it.

    Routes are served under ``FLOWSERV_API_PATH``, with the OpenAPI document at
    ``{path}/openapi.json`` and interactive docs at ``{path}/docs``. CORS follows
    ``FLOWSERV_CORS_ORIGINS``.

    Raises:
        ValueError: both ``factory`` and ``env`` given, or a factory with a default user
            (every request would act as that user).

    """
    if factory is not None and env is not None:
        raise ValueError("give either a factory or env, not both")
    if factory is not None and factory.user_id is not None:
        raise ValueError(
            f"the factory's default user {factory.user_id!r} would be every request's user"
        )
    owned = factory is None
    service = factory if factory is not None else LocalAPIFactory(env=env)
    settings = service.settings
    base = "/" + settings.api_path.strip("/")

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        if owned:
            async with service:
                yield
        else:
            await service.open()
            yield

    app = FastAPI(
        title=settings.api_name,
        version=__version__,
        lifespan=lifespan,
        openapi_url=f"{base}/openapi.json",
        docs_url=f"{base}/docs",
        redoc_url=None,
        responses=_ERROR_RESPONSES,
    )
    app.state.flowserv_factory = service
    # flowserv's clients request the base URL with its trailing slash; answer both.
    for path, in_schema in ((f"{base}/", True), (base, False)):
        app.add_api_route(
            path,
            _service_descriptor,
            methods=["GET"],
            tags=["service"],
            response_model=models.ServiceDescriptor,
            response_model_exclude_unset=True,
            include_in_schema=in_schema,
        )
    for module in (users, workflows, groups, files, runs):
        app.include_router(module.router, prefix=base)
    app.add_exception_handler(FlowservError, _service_error)
    app.add_exception_handler(HTTPException, _http_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(UploadError, _upload_error)
    app.add_exception_handler(Exception, _unexpected_error)
    _document_errors_as_served(app)
    if settings.cors_origins:
        app.add_middleware(
            CORSMiddleware,
            allow_origins=list(settings.cors_origins),
            allow_methods=_CORS_METHODS,
            allow_headers=["api_key", "content-type"],
        )
    return app
