"""A whole session of flowserv-core 0.9.4's remote client (run by its own venv).

Usage: python remote_session.py URL. Prints one JSON document of what it saw.
"""

import io
import json
import os
import sys
import tarfile
import time
from urllib.parse import urlsplit

from flowserv.model.template.schema import SortColumn
from flowserv.service.api import API
from flowserv.service.descriptor import ServiceDescriptor
from flowserv.service.files.remote import RemoteUploadFileService
from flowserv.service.group.remote import RemoteWorkflowGroupService
from flowserv.service.run.remote import RemoteRunService
from flowserv.service.user.remote import RemoteUserService
from flowserv.service.workflow.remote import RemoteWorkflowService
from flowserv.volume.base import IOBuffer


def client(url):
    parts = urlsplit(url)
    env = {
        "FLOWSERV_API_PROTOCOL": parts.scheme,
        "FLOWSERV_API_HOST": parts.hostname,
        "FLOWSERV_API_PORT": parts.port,
        "FLOWSERV_API_PATH": parts.path,
    }
    d = ServiceDescriptor.from_config(env)
    return API(
        service=d,
        workflow_service=RemoteWorkflowService(d),
        group_service=RemoteWorkflowGroupService(d),
        upload_service=RemoteUploadFileService(d),
        run_service=RemoteRunService(d),
        user_service=RemoteUserService(d),
    )


def wait(api, run_id):
    for _ in range(600):
        run = api.runs().get_run(run_id)
        if run["state"] not in ("PENDING", "RUNNING"):
            return run
        time.sleep(0.1)
    raise TimeoutError(run_id)


def main(url):
    api = client(url)
    seen = {}
    bob = api.users().register_user("remote-bob", "pw")
    api.users().register_user("remote-alice", "pw")
    seen["login"] = api.users().login_user("remote-alice", "pw")["username"]
    seen["token_set"] = bool(os.environ.get("FLOWSERV_ACCESS_TOKEN"))
    seen["whoami"] = api.users().whoami_user(None)["username"]
    workflow_id = api.workflows().list_workflows()["workflows"][0]["id"]
    seen["workflow"] = api.workflows().get_workflow(workflow_id)["name"]
    group = api.groups().create_group(workflow_id, "remote-team", members=[bob["id"]])
    group_id = group["id"]
    seen["groups"] = [g["name"] for g in api.groups().list_groups()["groups"]]
    seen["group_members"] = sorted(
        m["username"] for m in api.groups().get_group(group_id)["members"]
    )
    seen["renamed"] = api.groups().update_group(group_id, name="remote-renamed")["name"]
    names = b"Ada\nGrace\n"
    upload = api.uploads().upload_file(group_id, IOBuffer(io.BytesIO(names)), "names.txt")
    seen["upload_size"] = upload["size"]
    seen["files"] = [f["name"] for f in api.uploads().list_uploaded_files(group_id)["files"]]
    seen["uploaded_content"] = (
        api.uploads().get_uploaded_file(group_id, upload["id"]).read().decode()
    )
    arguments = [
        {"name": "names", "value": {"type": "$file", "value": {"fileId": upload["id"]}}},
        {"name": "sleeptime", "value": 0},
    ]
    run = api.runs().start_run(group_id, arguments)
    run = wait(api, run["id"])
    seen["run_state"] = run["state"]
    seen["runs"] = [r["state"] for r in api.runs().list_runs(group_id)["runs"]]
    greetings = next(f for f in run["files"] if f["name"] == "greetings")
    seen["greetings"] = api.runs().get_result_file(run["id"], greetings["id"]).read().decode()
    archive = api.runs().get_result_archive(run["id"]).read()
    with tarfile.open(fileobj=io.BytesIO(archive), mode="r:gz") as tar:
        seen["archive"] = sorted(tar.getnames())
    ranking = api.workflows().get_ranking(workflow_id)
    seen["ranking"] = [e["run"]["id"] == run["id"] for e in ranking["ranking"]]
    ordered = api.workflows().get_ranking(
        workflow_id,
        order_by=[SortColumn("max_len", sort_desc=True), SortColumn("avg_count", False)],
        include_all=True,
    )
    seen["ranking_ordered"] = len(ordered["ranking"])
    slow = dict(arguments[1], value=10)
    long_run = api.runs().start_run(group_id, [arguments[0], slow])
    seen["canceled"] = api.runs().cancel_run(long_run["id"])["state"]
    other = api.runs().start_run(group_id, [arguments[0], slow])
    seen["cancel_reason"] = api.runs().cancel_run(other["id"], reason="stop")["messages"]
    api.runs().delete_run(long_run["id"])
    api.uploads().delete_file(group_id, upload["id"])
    seen["files_after_delete"] = api.uploads().list_uploaded_files(group_id)["files"]
    api.groups().delete_group(group_id)
    seen["groups_after_delete"] = api.groups().list_groups()["groups"]
    seen["logout"] = api.users().logout_user(None)["username"]
    print(json.dumps(seen))


if __name__ == "__main__":
    main(sys.argv[1])
