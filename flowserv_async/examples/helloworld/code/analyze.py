"""Compute line statistics of the greetings file as the run's result document."""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def analyze(inputfile: Path, outputfile: Path) -> None:
    """Write ``{avg_count, max_len, max_line}`` of the lines in ``inputfile``."""
    lines = [line.strip() for line in inputfile.read_text(encoding="utf-8").splitlines()]
    lines = [line for line in lines if line]
    longest = max(lines, key=len, default="")
    result: dict[str, float | int | str] = {
        "avg_count": sum(len(line) for line in lines) / len(lines) if lines else 0.0,
        "max_len": len(longest),
    }
    if longest:
        result["max_line"] = longest
    outputfile.parent.mkdir(parents=True, exist_ok=True)
    outputfile.write_text(json.dumps(result, indent=4), encoding="utf-8")


def main() -> None:
    """Parse the command line and write the statistics."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--inputfile", type=Path, required=True)
    parser.add_argument("--outputfile", type=Path, required=True)
    args = parser.parse_args()
    analyze(args.inputfile, args.outputfile)


if __name__ == "__main__":
    main()
