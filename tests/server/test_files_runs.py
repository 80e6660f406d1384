"""Uploads, runs, logs and downloads over HTTP (in process)."""

from __future__ import annotations

import io
import json
import tarfile
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest
from runs_helpers import PY, step
from serverutil import Login, count_rows, stored_files

from flowserv_async import LocalAPIFactory
from flowserv_async.db.models import Run, UploadedFile
from flowserv_async.services.stored import upload_key

NAMES = b"Alice\nBob\n"


@pytest.fixture
async def team(
    client: httpx.AsyncClient, workflow_id: str, login: Login
) -> tuple[str, dict[str, str]]:
    """Alice's group of the helloworld workflow, and her headers."""
    _, headers = await login("alice")
    r = await client.post(f"workflows/{workflow_id}/groups", json={"name": "team"}, headers=headers)
    return r.json()["id"], headers


async def upload(
    client: httpx.AsyncClient, group_id: str, headers: dict[str, str], field: str = "file"
) -> dict[str, Any]:
    r = await client.post(
        f"uploads/{group_id}/files", files={field: ("names.txt", NAMES)}, headers=headers
    )
    assert r.status_code == 201, r.text
    return dict(r.json())


def names_argument(file_id: str) -> list[dict[str, Any]]:
    return [
        {"name": "names", "value": {"type": "$file", "value": {"fileId": file_id}}},
        {"name": "sleeptime", "value": 0},
    ]


@pytest.mark.parametrize("field", ["file", "files"])
async def test_upload_list_download_delete(
    client: httpx.AsyncClient,
    factory: LocalAPIFactory,
    team: tuple[str, dict[str, str]],
    field: str,
) -> None:
    group_id, headers = team
    before = await stored_files(factory.settings.api_dir)
    handle = await upload(client, group_id, headers, field)
    assert handle["name"] == "names.txt"
    assert handle["size"] == len(NAMES)  # the real size (robflask says 0)
    r = await client.get(f"uploads/{group_id}/files", headers=headers)
    assert r.json() == {"files": [handle]}
    r = await client.get(f"uploads/{group_id}/files/{handle['id']}", headers=headers)
    assert r.status_code == 200
    assert r.content == NAMES
    assert r.headers["content-disposition"] == 'attachment; filename="names.txt"'
    assert r.headers["content-type"].startswith("text/plain")
    assert "content-encoding" not in r.headers
    # The token may also come in the URL (browsers follow links without headers).
    r = await client.get(f"uploads/{group_id}/files/{handle['id']}", params=headers)
    assert r.content == NAMES
    r = await client.delete(f"uploads/{group_id}/files/{handle['id']}", headers=headers)
    assert r.status_code == 204
    assert await count_rows(factory, UploadedFile) == 0
    assert await stored_files(factory.settings.api_dir) == before
    r = await client.get(f"uploads/{group_id}/files/{handle['id']}", headers=headers)
    assert r.status_code == 404


async def test_a_lost_stored_file_is_404_naming_the_file_not_where_it_was_kept(
    client: httpx.AsyncClient,
    factory: LocalAPIFactory,
    workflow_id: str,
    team: tuple[str, dict[str, str]],
) -> None:
    group_id, headers = team
    file_id = (await upload(client, group_id, headers))["id"]
    # The file store lost the file (an operator removed it): the row is still there.
    await factory.volume.delete(upload_key(workflow_id, group_id, file_id))
    r = await client.get(f"uploads/{group_id}/files/{file_id}", headers=headers)
    assert r.status_code == 404
    assert r.json() == {"message": "unknown file 'names.txt'"}


async def test_download_needs_a_members_token_by_default(
    client: httpx.AsyncClient, team: tuple[str, dict[str, str]], login: Login
) -> None:
    group_id, headers = team
    file_id = (await upload(client, group_id, headers))["id"]
    _, bob = await login("bob")
    for other in ({}, {"api_key": "null"}, bob):
        r = await client.get(f"uploads/{group_id}/files/{file_id}", headers=other)
        assert r.status_code == 403


@pytest.mark.parametrize("server_env", [{"FLOWSERV_ANONYMOUS_DOWNLOADS": "true"}])
async def test_anonymous_downloads_setting_restores_flowservs_downloads(
    client: httpx.AsyncClient, team: tuple[str, dict[str, str]]
) -> None:
    group_id, headers = team
    file_id = (await upload(client, group_id, headers))["id"]
    r = await client.get(f"uploads/{group_id}/files/{file_id}")
    assert r.status_code == 200
    assert r.content == NAMES
    # Only downloads: listing the files still needs a member.
    assert (await client.get(f"uploads/{group_id}/files")).status_code == 403


@pytest.mark.parametrize(
    ("request_kwargs", "message"),
    [
        ({"files": {"other": ("a.txt", b"x")}}, "no file request"),
        ({"data": {"file": "not a file"}}, "no file request"),
        ({"json": {"file": "x"}}, "no file request"),
        ({"files": {"file": ("", b"x")}}, "no file request"),
        ({"files": {"file": ("../up.txt", b"x")}}, "invalid file name"),
        (
            {
                "content": b"--b\r\nContent-Disposition: form-data; name=file; filename=a\r\n\r\nx",
                "headers": {"content-type": "multipart/form-data; boundary=b"},
            },
            "ended inside the file",
        ),
    ],
)
async def test_bad_uploads_are_400_and_leave_nothing(
    client: httpx.AsyncClient,
    factory: LocalAPIFactory,
    team: tuple[str, dict[str, str]],
    request_kwargs: dict[str, Any],
    message: str,
) -> None:
    group_id, headers = team
    before = await stored_files(factory.settings.api_dir)
    extra = request_kwargs.pop("headers", {})
    r = await client.post(
        f"uploads/{group_id}/files", headers={**headers, **extra}, **request_kwargs
    )
    assert r.status_code == 400
    assert message in r.json()["message"]
    assert await count_rows(factory, UploadedFile) == 0
    assert await stored_files(factory.settings.api_dir) == before


@pytest.mark.parametrize("server_env", [{"FLOWSERV_MAX_UPLOAD_SIZE": "8"}])
async def test_upload_over_the_limit_is_413_and_leaves_nothing(
    client: httpx.AsyncClient, factory: LocalAPIFactory, team: tuple[str, dict[str, str]]
) -> None:
    group_id, headers = team
    before = await stored_files(factory.settings.api_dir)
    r = await client.post(
        f"uploads/{group_id}/files", files={"file": ("a.txt", b"x" * 9)}, headers=headers
    )
    assert r.status_code == 413
    assert r.json() == {"message": "the file exceeds the upload limit of 8 bytes"}
    assert await count_rows(factory, UploadedFile) == 0
    assert await stored_files(factory.settings.api_dir) == before
    r = await client.post(
        f"uploads/{group_id}/files", files={"file": ("a.txt", b"x" * 8)}, headers=headers
    )
    assert r.status_code == 201


async def test_upload_to_unknown_group_is_404(
    client: httpx.AsyncClient, factory: LocalAPIFactory, team: tuple[str, dict[str, str]]
) -> None:
    _, headers = team
    r = await client.post("uploads/unknown/files", files={"file": ("a", b"x")}, headers=headers)
    assert r.status_code == 404
    assert await count_rows(factory, UploadedFile) == 0


async def test_run_to_success_with_downloads_logs_and_leaderboard(
    client: httpx.AsyncClient,
    factory: LocalAPIFactory,
    workflow_id: str,
    team: tuple[str, dict[str, str]],
) -> None:
    group_id, headers = team
    file_id = (await upload(client, group_id, headers))["id"]
    r = await client.post(
        f"groups/{group_id}/runs", json={"arguments": names_argument(file_id)}, headers=headers
    )
    assert r.status_code == 201
    run_id = r.json()["id"]
    assert r.json()["state"] in ("PENDING", "RUNNING")
    await factory.wait_run(run_id, timeout=30)
    run = (await client.get(f"runs/{run_id}", headers=headers)).json()
    assert run["state"] == "SUCCESS"
    assert {"startedAt", "finishedAt", "files"} <= set(run)
    assert "messages" not in run
    files = {f["name"]: f["id"] for f in run["files"]}
    greetings = files["greetings"]  # the output key the template declares
    r = await client.get(f"runs/{run_id}/downloads/files/{greetings}", headers=headers)
    assert r.status_code == 200
    assert r.content == b"Hello, Alice!\nHello, Bob!\n"
    assert r.headers["content-disposition"].startswith("attachment; filename=")
    r = await client.get(f"runs/{run_id}/downloads/archive", headers=headers)
    assert r.status_code == 200
    assert r.headers["content-type"] == "application/gzip"
    assert "content-encoding" not in r.headers
    with tarfile.open(fileobj=io.BytesIO(r.content), mode="r:gz") as tar:
        assert "results/greetings.txt" in tar.getnames()
    assert (await client.get(f"runs/{run_id}/downloads/archive")).status_code == 403
    r = await client.get(f"runs/{run_id}/downloads/files/unknown", headers=headers)
    assert r.status_code == 404
    board = (await client.get(f"workflows/{workflow_id}/leaderboard")).json()
    assert [e["run"]["id"] for e in board["ranking"]] == [run_id]
    assert board["ranking"][0]["group"] == {"id": group_id, "name": "team"}
    assert board["ranking"][0]["run"]["finishedAt"] == run["finishedAt"]
    # Public: a member's token and a bad one see what an anonymous caller sees.
    for caller in (headers, {"api_key": "not-a-token"}):
        r = await client.get(f"workflows/{workflow_id}/leaderboard", headers=caller)
        assert r.json() == board
    runs = (await client.get(f"groups/{group_id}/runs", headers=headers)).json()["runs"]
    assert [(x["id"], x["state"]) for x in runs] == [(run_id, "SUCCESS")]
    for state in ("None", "{state}", "", "bogus"):
        r = await client.get(f"groups/{group_id}/runs", params={"state": state}, headers=headers)
        assert [x["id"] for x in r.json()["runs"]] == [run_id]
    r = await client.get(f"groups/{group_id}/runs?state=ERROR", headers=headers)
    assert r.json() == {"runs": []}
    # Cancelling a finished run is a bad request; deleting it removes it.
    r = await client.put(f"runs/{run_id}", json={}, headers=headers)
    assert r.status_code == 400
    assert (await client.delete(f"runs/{run_id}", headers=headers)).status_code == 204
    assert (await client.get(f"runs/{run_id}", headers=headers)).status_code == 404


async def test_log_pages(
    client: httpx.AsyncClient, factory: LocalAPIFactory, login: Login, tmp_path: Path
) -> None:
    code = "for i in range(5): print(f'line {i}')"
    template = {"workflow": {"steps": [step("talk", f'{PY} -c "{code}"')]}, "parameters": []}
    folder = tmp_path / "talk"
    await anyio.Path(folder).mkdir()
    await anyio.Path(folder, "spec.json").write_text(json.dumps(template))
    async with factory() as api:
        wf = await api.workflows().create_workflow(
            source=str(folder), name="talk", specfile="spec.json"
        )
    _, headers = await login("alice")
    r = await client.post(f"workflows/{wf['id']}/groups", json={"name": "t"}, headers=headers)
    r = await client.post(f"groups/{r.json()['id']}/runs", json={}, headers=headers)
    run_id = r.json()["id"]
    await factory.wait_run(run_id, timeout=30)
    whole = (await client.get(f"runs/{run_id}/logs", headers=headers)).json()
    assert whole["runId"] == run_id and whole["state"] == "SUCCESS"
    texts = [line["text"] for line in whole["lines"]]
    assert [t for t in texts if t.startswith("line")] == [f"line {i}" for i in range(5)]
    first = (await client.get(f"runs/{run_id}/logs?limit=2", headers=headers)).json()
    assert first["lines"] == whole["lines"][:2]
    assert first["next"] == whole["lines"][1]["pos"] + 1
    rest = (
        await client.get(f"runs/{run_id}/logs", params={"offset": first["next"]}, headers=headers)
    ).json()
    assert first["lines"] + rest["lines"] == whole["lines"]
    assert rest["next"] == whole["next"]
    for query in ("offset=-1", "limit=0", "offset=x"):
        r = await client.get(f"runs/{run_id}/logs?{query}", headers=headers)
        assert r.status_code == 400
    assert (await client.get(f"runs/{run_id}/logs")).status_code == 403
    assert (await client.get("runs/unknown/logs", headers=headers)).status_code == 404


@pytest.mark.parametrize("body", [None, {}, {"reason": "enough"}])
async def test_cancel_with_no_body_an_empty_one_or_a_reason(
    client: httpx.AsyncClient,
    factory: LocalAPIFactory,
    team: tuple[str, dict[str, str]],
    body: dict[str, Any] | None,
) -> None:
    group_id, headers = team
    file_id = (await upload(client, group_id, headers))["id"]
    arguments = names_argument(file_id)
    arguments[1]["value"] = 10
    r = await client.post(f"groups/{group_id}/runs", json={"arguments": arguments}, headers=headers)
    run_id = r.json()["id"]
    r = await client.request("PUT", f"runs/{run_id}", json=body, headers=headers)
    assert r.status_code == 200
    assert r.json()["state"] == "CANCELED"
    reason = (body or {}).get("reason", "canceled at user request")
    assert r.json()["messages"] == [reason]
    # Nothing to download from a canceled run.
    assert (
        await client.get(f"runs/{run_id}/downloads/archive", headers=headers)
    ).status_code == 404


@pytest.mark.parametrize(
    ("arguments", "status"),
    [
        ([{"name": "unknown", "value": 1}], 400),
        ([{"name": "sleeptime", "value": 99}], 400),
        ([{"name": "names", "value": {"type": "$file", "value": {"fileId": "nope"}}}], 404),
        ([], 400),  # 'names' is required
        ("not a list", 400),
    ],
)
async def test_bad_run_arguments_start_nothing(
    client: httpx.AsyncClient,
    factory: LocalAPIFactory,
    team: tuple[str, dict[str, str]],
    arguments: Any,
    status: int,
) -> None:
    group_id, headers = team
    r = await client.post(f"groups/{group_id}/runs", json={"arguments": arguments}, headers=headers)
    assert r.status_code == status, r.text
    assert r.json()["message"]
    assert await count_rows(factory, Run) == 0


async def test_runs_of_unknown_ids(
    client: httpx.AsyncClient, team: tuple[str, dict[str, str]]
) -> None:
    _, headers = team
    for method, path in (
        ("GET", "runs/unknown"),
        ("PUT", "runs/unknown"),
        ("DELETE", "runs/unknown"),
        ("GET", "runs/unknown/downloads/archive"),
        ("GET", "runs/unknown/downloads/files/x"),
        ("POST", "groups/unknown/runs"),
        ("GET", "groups/unknown/runs"),
        ("GET", "workflows/unknown/downloads/archive"),
    ):
        r = await client.request(method, path, headers=headers, json={})
        assert r.status_code == 404, (method, path, r.text)
    for method, path in (("GET", "runs/x"), ("PUT", "runs/x"), ("DELETE", "runs/x")):
        assert (await client.request(method, path)).status_code == 403
