"""numbers.py N: the squares of 1..N, one a line."""

import sys

with open("results/numbers.txt", "w") as f:
    f.write("".join(f"{i * i}\n" for i in range(1, int(sys.argv[1]) + 1)))
