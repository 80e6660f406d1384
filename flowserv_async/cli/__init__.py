"""The ``flowserv-async`` command-line interface for local use.

``flowserv-async run <template folder> --file names=names.txt`` installs a workflow,
runs it with live progress and writes its result files; ``flowserv-async --help``
lists every command. Run it as ``python -m flowserv_async.cli`` too.
"""

from flowserv_async.cli.app import cli, main

__all__ = ["cli", "main"]
