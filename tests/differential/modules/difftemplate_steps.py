"""The code step of the differential ``codestep`` template (imported by both engines).

flowserv runs a code step with the run folder as working directory; flowserv-async
never changes the working directory and passes the run folder as ``rundir`` instead.
"""

from __future__ import annotations

import os


def repeat(times: int, rundir: str = ".") -> str:
    """Write the seed word ``times`` times to ``results/repeated.txt``; return the text."""
    with open(os.path.join(rundir, "results", "seed.txt"), encoding="utf-8") as f:
        word = f.read()
    text = " ".join([word] * int(times))
    with open(os.path.join(rundir, "results", "repeated.txt"), "w", encoding="utf-8") as f:
        f.write(text)
    return f"{len(text)} characters"
