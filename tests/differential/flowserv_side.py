"""The reference side of the differential tests: runs templates on flowserv-core 0.9.4.

Run with the interpreter of ``benchmarks/.venv-flowserv`` (it imports flowserv and the
standard library only)::

    python flowserv_side.py PLAN.json

``PLAN.json`` is ``{"basedir": str, "templates": [{"name", "source", "runs": [{"group",
"arguments"}]}]}``; an argument is ``{"name", "value"}``, ``{"name", "file": text,
"target"?}`` (uploaded, then passed as a file) or ``{"name", "actor": step}``. The last
line on stdout is the JSON outcome per template name (see ``outcome`` in
``test_differential.py``, which builds the same shape from flowserv-async).
"""

from __future__ import annotations

import io
import json
import os
import sys
from typing import Any

from flowserv.config import Config
from flowserv.model.parameter.actor import ActorValue
from flowserv.service.local import LocalAPIFactory
from flowserv.volume.base import IOBuffer
from flowserv.volume.fs import FStore


def text(handle: Any) -> str:
    """The content of a file handle returned by the service API."""
    with handle.open() as stream:
        data = stream.read()
    return data.decode() if isinstance(data, bytes) else str(data)


def argument(api: Any, group_id: str, arg: dict[str, Any]) -> dict[str, Any]:
    if "file" in arg:
        buffer = IOBuffer(io.BytesIO(arg["file"].encode()))
        upload = api.uploads().upload_file(group_id=group_id, file=buffer, name="input.txt")
        value: dict[str, Any] = {"fileId": upload["id"]}
        if "target" in arg:
            value["targetPath"] = arg["target"]
        return {"name": arg["name"], "value": {"type": "$file", "value": value}}
    if "actor" in arg:
        return {"name": arg["name"], "value": ActorValue(spec=arg["actor"])}
    return {"name": arg["name"], "value": arg["value"]}


def run_files(api: Any, handle: dict[str, Any]) -> dict[str, str]:
    return {
        f["name"]: text(api.runs().get_result_file(handle["id"], f["id"]))
        for f in handle.get("files", [])
    }


def run_template(factory: LocalAPIFactory, doc: dict[str, Any]) -> dict[str, Any]:
    with factory() as api:
        wf = api.workflows().create_workflow(source=doc["source"], name=doc["name"])
    groups: dict[str, str] = {}
    runs = []
    for case in doc["runs"]:
        with factory() as api:
            if case["group"] not in groups:
                groups[case["group"]] = api.groups().create_group(wf["id"], case["group"])["id"]
            group_id = groups[case["group"]]
            arguments = [argument(api, group_id, arg) for arg in case["arguments"]]
            handle = api.runs().start_run(group_id, arguments)
        with factory() as api:
            handle = api.runs().get_run(handle["id"])
            runs.append(
                {
                    "group": case["group"],
                    "state": handle["state"],
                    "files": run_files(api, handle) if handle["state"] == "SUCCESS" else {},
                }
            )
    with factory() as api:
        workflow = api.workflows().get_workflow(wf["id"])
        outcome: dict[str, Any] = {
            "parameters": workflow["parameters"],
            "runs": runs,
            "ranking": None,
            "postproc": None,
        }
        board = api.workflows().get_ranking(wf["id"]) if doc.get("ranked") else None
        if board is not None:
            outcome["ranking"] = [
                {
                    "group": entry["group"]["name"],
                    "results": {r["name"]: r["value"] for r in entry["results"]},
                }
                for entry in board["ranking"]
            ]
            post = board.get("postproc")
            if post is not None:
                outcome["postproc"] = {
                    "state": post["state"],
                    "files": {
                        f["name"]: text(api.workflows().get_result_file(wf["id"], f["id"]))
                        for f in post.get("files", [])
                    },
                }
    return outcome


def main(plan_file: str) -> None:
    with open(plan_file, encoding="utf-8") as stream:
        plan = json.load(stream)
    basedir = plan["basedir"]
    env = Config().basedir(basedir).volume(FStore(basedir=basedir)).open_access().run_sync()
    factory = LocalAPIFactory(env=env)
    outcomes = {}
    for doc in plan["templates"]:
        try:
            outcomes[doc["name"]] = run_template(factory, doc)
        except Exception as exc:  # reported, not raised: the other templates still run
            outcomes[doc["name"]] = {"error": f"{type(exc).__name__}: {exc}"}
    sys.stdout.write("\n" + json.dumps(outcomes) + "\n")


if __name__ == "__main__":
    os.environ.setdefault("FLOWSERV_LOGLEVEL", "ERROR")
    main(sys.argv[1])
