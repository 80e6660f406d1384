"""summarize.py RUNSDIR OUT: one line per ranked run, in rank order."""

import json
import os
import sys

rundir, out = sys.argv[1:3]
with open(os.path.join(rundir, "runs.json")) as f:
    runs = json.load(f)
with open(out, "w") as f:
    for rank, run in enumerate(runs, start=1):
        with open(os.path.join(rundir, run["id"], "results", "value.txt")) as vf:
            f.write(f"{rank},{run['name']},{vf.read().strip()}\n")
