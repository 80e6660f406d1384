"""model.py SUFFIX: the prepared arguments, transformed by the model step."""

import sys

with open("results/prepared.txt") as f:
    lines = f.read().splitlines()
with open("results/out.txt", "w") as f:
    f.write(" | ".join(line.upper() for line in lines) + " " + sys.argv[1] + "\n")
