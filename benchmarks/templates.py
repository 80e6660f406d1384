"""Workflow templates of the scenarios, written into temporary folders.

Both sides read the same folder. The format is flowserv 0.9.4's serial workflow
(``workflow: {files, parameters, steps: [{name, files, action: {environment, commands}}]}``,
parameters with ``name``/``dtype``), which flowserv-async accepts unchanged. Commands are
quoted strings: an unquoted ``true`` is a YAML boolean, which flowserv chokes on.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

SPECFILE = "benchmark.yaml"

NAMES = "Alice\nBob\nClaire\nDave\nEve\nFrank\nGrace\nHeidi\n"


def one_step(command: str) -> dict[str, Any]:
    """A workflow with one container step running ``command``."""
    return {
        "workflow": {
            "steps": [
                {"name": "main", "action": {"environment": "ubuntu", "commands": [command]}},
            ],
        },
    }


def hello_world() -> dict[str, Any]:
    """Two steps (greet, then count), a file parameter and a string parameter.

    Modelled on flowserv's hello-world benchmark, with shell tools instead of Python
    scripts so that the numbers measure the service and not interpreter start-up. The
    commands avoid ``$`` other than ``${var}``: flowserv expands them with
    ``string.Template.substitute``, which rejects any other ``$``.
    """
    greet = "mkdir -p results && sed 's/^/${greeting} /' ${inputfile} > results/greetings.txt"
    count = "wc -l results/greetings.txt > results/count.txt"
    return {
        "workflow": {
            "files": {
                "inputs": ["data/names.txt"],
                "outputs": ["results/greetings.txt", "results/count.txt"],
            },
            "parameters": {"inputfile": "$[[names]]", "greeting": "$[[greeting]]"},
            "steps": [
                {
                    "name": "say_hello",
                    "files": {"inputs": ["data/names.txt"], "outputs": ["results/greetings.txt"]},
                    "action": {"environment": "ubuntu", "commands": [greet]},
                },
                {
                    "name": "count",
                    "files": {
                        "inputs": ["results/greetings.txt"],
                        "outputs": ["results/count.txt"],
                    },
                    "action": {"environment": "ubuntu", "commands": [count]},
                },
            ],
        },
        "parameters": [
            {"name": "names", "label": "Names file", "dtype": "file", "target": "data/names.txt"},
            {"name": "greeting", "label": "Greeting", "dtype": "string", "defaultValue": "Hello"},
        ],
        "outputs": [
            {"source": "results/greetings.txt", "key": "greetings", "title": "Greetings"},
            {"source": "results/count.txt", "key": "count", "title": "Line count"},
        ],
    }


TEMPLATES: dict[str, dict[str, Any]] = {
    "sleep": one_step("sleep 0.5"),
    "noop": one_step("true"),
    "cancel": one_step("sleep 30"),
    "storm": one_step("sleep 300"),
    # A shell step that forks a grandchild and a grandchild in a session of its own.
    "forks": one_step("sh -c 'sleep 300 & setsid sleep 300 & wait'"),
    "helloworld": hello_world(),
}


def write_template(kind: str, folder: Path) -> Path:
    """Write the template ``kind`` into ``folder`` (created) and return the folder."""
    folder.mkdir(parents=True, exist_ok=True)
    text = yaml.safe_dump(TEMPLATES[kind], sort_keys=False, default_style=None)
    (folder / SPECFILE).write_text(text, encoding="utf-8")
    return folder
