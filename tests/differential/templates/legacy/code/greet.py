"""greet.py NAMES GREETING REPEAT: greet every name REPEAT times; line statistics."""

import json
import os
import sys

names_file, greeting, repeat = sys.argv[1], sys.argv[2], int(sys.argv[3])
with open(names_file) as f:
    names = [line.strip() for line in f if line.strip()]
lines = [f"{greeting}, {name}!" for name in names for _ in range(repeat)]
os.makedirs("results", exist_ok=True)
with open("results/greetings.txt", "w") as f:
    f.write("\n".join(lines) + "\n")
with open("results/stats.json", "w") as f:
    json.dump({"lines": len(lines), "avg_len": sum(map(len, lines)) / len(lines)}, f)
