"""Run the bundled hello-world workflow end to end and print its results.

The template itself is the folder ``helloworld`` beside this module.

``python -m flowserv_async.examples.run_helloworld [--basedir DIR] [--greeting TEXT]
[--names FILE]`` installs the workflow (once) in the base folder, uploads the names
file, runs the workflow, waits for it and prints the result files and the leaderboard.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

import anyio

from flowserv_async import LocalAPIFactory

HERE = Path(__file__).parent / "helloworld"


async def main(basedir: Path, names: Path, greeting: str) -> int:
    """Install (or reuse) the workflow, run it once, print what it produced."""
    env = {"FLOWSERV_API_DIR": str(basedir), "FLOWSERV_AUTH": "open"}
    async with LocalAPIFactory(env=env) as factory:
        async with factory() as api:
            listing = (await api.workflows().list_workflows())["workflows"]
            workflow = next((w for w in listing if w["name"] == "Hello World"), None)
            if workflow is None:
                workflow = await api.workflows().create_workflow(source=str(HERE))
            groups = (await api.groups().list_groups(workflow_id=workflow["id"]))["groups"]
            group = groups[0] if groups else None
            if group is None:
                group = await api.groups().create_group(workflow["id"], "local")
            content = await anyio.Path(names).read_bytes()
            upload = await api.uploads().upload_file(group["id"], content, names.name)
            arguments: list[dict[str, Any]] = [
                {"name": "names", "value": {"type": "$file", "value": {"fileId": upload["id"]}}},
                {"name": "greeting", "value": greeting},
            ]
            run = await api.runs().start_run(group["id"], arguments)
        run = await factory.wait_run(run["id"], timeout=300)
        print(f"run {run['id']}: {run['state']}")
        if run["state"] != "SUCCESS":
            for message in run.get("messages", []):
                print(f"  {message}")
            return 1
        # The success may have started a post-processing run over the new ranking: let it
        # finish, since closing the factory would cancel it.
        async with factory() as api:
            postproc = (await api.workflows().get_workflow(workflow["id"])).get("postproc")
        if postproc is not None:
            await factory.wait_run(postproc["id"], timeout=300)
        async with factory() as api:
            for file in run["files"]:
                handle = await api.runs().get_result_file(run["id"], file["id"])
                text = (await handle.read()).decode("utf-8", "replace")
                print(f"--- {file['name']} ({file.get('title', '')})\n{text.rstrip()}")
            ranking = await api.workflows().get_ranking(workflow["id"])
        if ranking is not None:
            print("--- leaderboard")
            for pos, entry in enumerate(ranking["ranking"], start=1):
                values = ", ".join(f"{r['name']}={r['value']}" for r in entry["results"])
                print(f"{pos}. {entry['group']['name']} {entry['run']['id']}: {values}")
    return 0


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--basedir", type=Path, default=Path(".flowserv"))
    parser.add_argument("--names", type=Path, default=HERE / "data" / "names.txt")
    parser.add_argument("--greeting", default="Hello")
    args = parser.parse_args()
    sys.exit(anyio.run(main, args.basedir.absolute(), args.names, args.greeting))
