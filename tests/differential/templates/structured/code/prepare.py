"""prepare.py OPTS WEIGHTS FAST: write the arguments as the step received them."""

import sys

with open("results/prepared.txt", "w") as f:
    f.write("\n".join(sys.argv[1:]) + "\n")
with open("results/out.txt", "w") as f:
    f.write("no model\n")
