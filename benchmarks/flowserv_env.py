"""The reference environment: a virtualenv with flowserv-core 0.9.4, made once and cached.

``flowserv-core==0.9.4`` does not import with today's ``pyyaml-include`` (2.x changed
its API), hence the pin; papermill and ipykernel run flowserv's notebook steps (the
differential tests use them). The venv is built with the running interpreter
(``sys.executable -m venv``) and ``pip``; nothing else is downloaded.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

VENV_DIR = Path(__file__).resolve().parent / ".venv-flowserv"
# papermill and ipykernel: flowserv's notebook steps (the differential tests run them).
REQUIREMENTS = ("flowserv-core==0.9.4", "pyyaml-include<2", "psutil", "papermill", "ipykernel")
_STAMP = ".benchmark-requirements"


class FlowservEnvError(RuntimeError):
    """The flowserv-core virtualenv could not be built or does not work."""


def _python() -> Path:
    return VENV_DIR / "bin" / "python"


def _run(args: list[str], what: str) -> str:
    proc = subprocess.run(args, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        tail = "\n".join((proc.stderr or proc.stdout).strip().splitlines()[-5:])
        raise FlowservEnvError(f"{what} failed (exit {proc.returncode}): {tail}")
    return proc.stdout


def flowserv_version(python: Path) -> str:
    """The flowserv-core version importable by ``python`` (raises if it does not import)."""
    out = _run(
        [str(python), "-c", "import psutil, flowserv.version as v; print(v.__version__)"],
        "importing flowserv in the benchmark venv",
    )
    return out.strip()


def ensure_flowserv_venv(log: bool = True) -> tuple[Path, str]:
    """Return the venv's interpreter and flowserv version, building the venv if needed."""
    python = _python()
    stamp = VENV_DIR / _STAMP
    wanted = "\n".join(REQUIREMENTS)
    if python.exists() and stamp.exists() and stamp.read_text(encoding="utf-8") == wanted:
        try:
            return python, flowserv_version(python)
        except FlowservEnvError:
            pass  # broken (e.g. the base interpreter moved): rebuild below
    if log:
        print(f"Building {VENV_DIR} ({', '.join(REQUIREMENTS)}) ...", flush=True)
    if VENV_DIR.exists():
        shutil.rmtree(VENV_DIR)
    _run([sys.executable, "-m", "venv", str(VENV_DIR)], "python -m venv")
    _run(
        [
            str(python),
            *("-m", "pip", "install", "--quiet", "--disable-pip-version-check"),
            *REQUIREMENTS,
        ],
        "pip install " + " ".join(REQUIREMENTS),
    )
    version = flowserv_version(python)
    stamp.write_text(wanted, encoding="utf-8")
    return python, version
