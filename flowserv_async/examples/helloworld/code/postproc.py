"""Count the most frequent character 3-grams in the greetings of each ranked run.

Reads the post-processing input folder with :class:`flowserv_async.postproc.Runs`
(``runs.json`` in rank order and ``{id}/results/greetings.txt`` of each run); writes a
CSV with the columns ``rank``, ``run``, ``group``, ``ngram`` and ``count``.
"""

from __future__ import annotations

import argparse
import csv
from collections import Counter
from pathlib import Path

from flowserv_async.postproc import Runs

GREETINGS = "results/greetings.txt"
TOP_K = 5


def ngrams(text: str, size: int = 3) -> Counter[str]:
    """Count the character n-grams of every line (spaces included)."""
    counts: Counter[str] = Counter()
    for line in text.splitlines():
        counts.update(line[pos : pos + size] for pos in range(len(line) - size + 1))
    return counts


def postproc(runsdir: Path, outputfile: Path) -> None:
    """Write the top 3-grams of every run listed in ``runs.json``."""
    outputfile.parent.mkdir(parents=True, exist_ok=True)
    with outputfile.open("w", encoding="utf-8", newline="") as out:
        writer = csv.writer(out)
        writer.writerow(["rank", "run", "group", "ngram", "count"])
        for rank, run in enumerate(Runs(runsdir), start=1):
            if GREETINGS not in run.files:
                continue
            text = run.get_file(GREETINGS).read_text(encoding="utf-8")
            for ngram, count in ngrams(text).most_common(TOP_K):
                writer.writerow([rank, run.id, run.name, ngram, count])


def main() -> None:
    """Parse the command line and write the n-gram counts."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=Path, required=True)
    parser.add_argument("--outputfile", type=Path, required=True)
    args = parser.parse_args()
    postproc(args.runs, args.outputfile)


if __name__ == "__main__":
    main()
