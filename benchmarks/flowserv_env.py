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
ROBFLASK_VENV_DIR = Path(__file__).resolve().parent / ".venv-robflask"
ROBFLASK_REQUIREMENTS = (
    "flowserv-core==0.9.4",
    "pyyaml-include<2",
    "psutil",
    "rob-flask==0.6.0",
    "Flask==2.0.3",
    "Werkzeug==2.0.3",
    "flask-cors==3.0.10",
    "gunicorn",
)
_STAMP = ".benchmark-requirements"


class FlowservEnvError(RuntimeError):
    """The flowserv-core virtualenv could not be built or does not work."""


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
    return ensure_venv(VENV_DIR, REQUIREMENTS, log)


def ensure_robflask_venv(log: bool = True) -> tuple[Path, str]:
    """The same for rob-flask 0.6.0 on flowserv-core 0.9.4 (REST.md pins its Flask)."""
    return ensure_venv(ROBFLASK_VENV_DIR, ROBFLASK_REQUIREMENTS, log)


def ensure_venv(venv_dir: Path, requirements: tuple[str, ...], log: bool) -> tuple[Path, str]:
    """Return a venv's interpreter and flowserv version, building the venv if needed."""
    python = venv_dir / "bin" / "python"
    stamp = venv_dir / _STAMP
    wanted = "\n".join(requirements)
    if python.exists() and stamp.exists() and stamp.read_text(encoding="utf-8") == wanted:
        try:
            return python, flowserv_version(python)
        except FlowservEnvError:
            pass  # broken (e.g. the base interpreter moved): rebuild below
    if log:
        print(f"Building {venv_dir} ({', '.join(requirements)}) ...", flush=True)
    if venv_dir.exists():
        shutil.rmtree(venv_dir)
    _run([sys.executable, "-m", "venv", str(venv_dir)], "python -m venv")
    _run(
        [
            str(python),
            *("-m", "pip", "install", "--quiet", "--disable-pip-version-check"),
            *requirements,
        ],
        "pip install " + " ".join(requirements),
    )
    version = flowserv_version(python)
    stamp.write_text(wanted, encoding="utf-8")
    return python, version
