"""A prepared run as bytes in the database, and back: what a queued run carries.

A :class:`~flowserv_async.engine.job.RunJob` is a tree of frozen dataclasses (the parsed
workflow, the merged engine configuration, the result schema), so it is pickled whole:
the process that claims the run executes exactly what the creating process validated,
even if the template, group or engine configuration changed meanwhile. Reading back
admits only classes of this package: a row of the queue can name no other callable.
"""

from __future__ import annotations

import io
import pickle
from typing import Any

from flowserv_async.engine.job import RunJob
from flowserv_async.errors import FlowservError

_PACKAGE = "flowserv_async."


class _JobUnpickler(pickle.Unpickler):
    """An unpickler that finds only classes of flowserv_async."""

    def find_class(self, module: str, name: str) -> Any:
        if module.startswith(_PACKAGE):
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"a queued run may not name {module}.{name}")


def encode_job(job: RunJob) -> bytes:
    """The job as bytes for the queue."""
    return pickle.dumps(job, protocol=pickle.HIGHEST_PROTOCOL)


def decode_job(data: bytes) -> RunJob:
    """The job that :func:`encode_job` stored.

    Raises:
        FlowservError: the bytes are no job of this version of flowserv-async.

    """
    try:
        job = _JobUnpickler(io.BytesIO(data)).load()
    except (pickle.UnpicklingError, AttributeError, EOFError, ImportError, TypeError) as exc:
        raise FlowservError(f"cannot read a queued run: {exc}") from exc
    if not isinstance(job, RunJob):
        raise FlowservError(f"cannot read a queued run: it holds a {type(job).__name__}")
    return job
