"""Write a greeting for every name in the input file."""

from __future__ import annotations

import argparse
import time
from pathlib import Path


def say_hello(inputfile: Path, outputfile: Path, greeting: str, sleeptime: float) -> None:
    """Wait ``sleeptime`` seconds, then write ``<greeting>, <name>!`` for every name."""
    time.sleep(sleeptime)
    names = [line.strip() for line in inputfile.read_text(encoding="utf-8").splitlines()]
    outputfile.parent.mkdir(parents=True, exist_ok=True)
    with outputfile.open("w", encoding="utf-8") as out:
        for name in names:
            if name:
                out.write(f"{greeting}, {name}!\n")


def main() -> None:
    """Parse the command line and write the greetings."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--inputfile", type=Path, required=True)
    parser.add_argument("--outputfile", type=Path, required=True)
    parser.add_argument("--greeting", default="Hello")
    parser.add_argument("--sleeptime", type=float, default=0.0)
    args = parser.parse_args()
    say_hello(args.inputfile, args.outputfile, args.greeting, args.sleeptime)


if __name__ == "__main__":
    main()
