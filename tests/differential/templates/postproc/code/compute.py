"""compute.py X: the square of X as value and metrics."""

import json
import sys

x = float(sys.argv[1])
with open("results/value.txt", "w") as f:
    f.write(f"{x * x:.3f}\n")
with open("results/metrics.json", "w") as f:
    json.dump({"square": x * x, "sign": "neg" if x < 0 else "pos"}, f)
