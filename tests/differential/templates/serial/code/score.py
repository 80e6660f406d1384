"""score.py NUMBERS FACTOR SCALE LABEL MODE LIMIT VERBOSE: write results/score.json."""

import json
import sys

path, factor, scale, label, mode, limit, verbose = sys.argv[1:8]
with open(path) as f:
    numbers = [float(line) for line in f if line.strip()]
total = sum(numbers) if mode == "sum" else max(numbers)
value = min(total * int(factor) * float(scale), float(limit))
with open("results/score.json", "w") as f:
    json.dump({"value": value, "count": len(numbers), "label": label}, f)
with open("results/report.txt", "w") as f:
    f.write(f"{label}: {mode} of {len(numbers)} numbers is {total} ({verbose}, limit {limit})\n")
