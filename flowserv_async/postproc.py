"""Read the input folder of a post-processing step (for template authors).

A post-processing step gets a folder (``runs/`` by default) with one sub-folder per
ranked run holding the files named in the template's ``postproc.inputs.files``, and
``runs.json`` listing the runs in rank order (flowserv's layout)::

    from flowserv_async.postproc import Runs

    runs = Runs("runs")
    for run in runs:                      # best first
        text = run.get_file("results/greetings.txt").read_text()
    winner = runs.at_rank(0)
    same = runs.get_run(winner.id)

The reader is synchronous: post-processing steps are plain scripts.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

RUNS_FILE = "runs.json"


@dataclass(frozen=True)
class RunResult:
    """One ranked run: its id, its group's name, and its files in the folder."""

    id: str
    name: str
    files: tuple[str, ...]
    folder: Path

    def get_file(self, key: str) -> Path:
        """The local path of one of the run's files.

        Raises:
            KeyError: the run has no such file (it was not produced or not requested).

        """
        if key not in self.files:
            raise KeyError(f"run {self.id} has no file {key!r}")
        return self.folder / key


class Runs:
    """The ranked runs of a post-processing input folder, in rank order.

    Raises:
        ValueError: ``runs.json`` is missing or malformed.

    """

    def __init__(self, basedir: str | Path) -> None:
        self.basedir = Path(basedir)
        try:
            doc = json.loads((self.basedir / RUNS_FILE).read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise ValueError(f"cannot read {self.basedir / RUNS_FILE}: {exc}") from exc
        if not isinstance(doc, list):
            raise ValueError(f"{self.basedir / RUNS_FILE} is not a list of runs")  # noqa: TRY004
        self._runs = [self._entry(item) for item in doc]

    def _entry(self, item: Any) -> RunResult:
        """One ``{id, name, files}`` entry; the folder holds ``{id}/{file}``."""
        run_id = item.get("id") if isinstance(item, dict) else None
        name = item.get("name") if isinstance(item, dict) else None
        files = item.get("files") if isinstance(item, dict) else None
        if (
            not isinstance(run_id, str)
            or not run_id
            or not isinstance(name, str)
            or not isinstance(files, list)
            or not all(isinstance(f, str) for f in files)
        ):
            raise ValueError(
                f"malformed entry {item!r} in {self.basedir / RUNS_FILE}: expected"
                " {id: string, name: string, files: [string]}"
            )
        return RunResult(run_id, name, tuple(files), self.basedir / run_id)

    def __iter__(self) -> Iterator[RunResult]:
        return iter(self._runs)

    def __len__(self) -> int:
        return len(self._runs)

    def at_rank(self, index: int) -> RunResult:
        """The run at a 0-based rank.

        Raises:
            IndexError: there are not that many runs.

        """
        return self._runs[index]

    def get_run(self, run_id: str) -> RunResult:
        """The run with an id.

        Raises:
            KeyError: no such run in the folder.

        """
        for run in self._runs:
            if run.id == run_id:
                return run
        raise KeyError(f"unknown run {run_id!r}")
