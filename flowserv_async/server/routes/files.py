"""A group's uploaded files: list, streamed upload, download, delete."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request, Response, status
from fastapi.responses import StreamingResponse

import flowserv_async.server.models as models
from flowserv_async.server._caller import CallerDep, DownloaderDep
from flowserv_async.server._download import download, download_responses
from flowserv_async.server._multipart import FilePart

router = APIRouter(prefix="/uploads", tags=["files"], route_class=models.ShapedRoute)

_UPLOAD_BODY = {
    "requestBody": {
        "required": True,
        "content": {
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "properties": {"file": {"type": "string", "format": "binary"}},
                    "required": ["file"],
                }
            }
        },
    }
}


@router.get("/{group_id}/files", response_model=models.FileListing)
async def list_files(caller: CallerDep, group_id: str) -> dict[str, Any]:
    """The group's files in upload order."""
    async with caller.session(login=True) as api:
        return await api.uploads().list_uploaded_files(group_id)


@router.post(
    "/{group_id}/files",
    status_code=status.HTTP_201_CREATED,
    response_model=models.FileHandle,
    openapi_extra=_UPLOAD_BODY,
    responses={413: {"model": models.ErrorMessage, "description": "file too large"}},
)
async def upload_file(caller: CallerDep, group_id: str, request: Request) -> dict[str, Any]:
    """Store the multipart part ``file`` (or ``files``), streamed into the file store.

    Over ``FLOWSERV_MAX_UPLOAD_SIZE`` bytes: 413, and neither file nor row is kept.
    """
    async with caller.session(login=True) as api:
        part = FilePart(
            request.headers.get("content-type"),
            request.stream(),
            caller.factory.settings.max_upload_size or None,
        )
        name = await part.open()
        return await api.uploads().upload_file(group_id, part.chunks(), name)


@router.get(
    "/{group_id}/files/{file_id}", response_class=StreamingResponse, responses=download_responses()
)
async def download_file(caller: DownloaderDep, group_id: str, file_id: str) -> StreamingResponse:
    """The file's content (members, or anyone with ``FLOWSERV_ANONYMOUS_DOWNLOADS``)."""
    return await download(caller, lambda api: api.uploads().get_uploaded_file(group_id, file_id))


@router.delete(
    "/{group_id}/files/{file_id}", status_code=status.HTTP_204_NO_CONTENT, response_class=Response
)
async def delete_file(caller: CallerDep, group_id: str, file_id: str) -> Response:
    """Delete the file."""
    async with caller.session(login=True) as api:
        await api.uploads().delete_file(group_id, file_id)
    return Response(status_code=status.HTTP_204_NO_CONTENT)
