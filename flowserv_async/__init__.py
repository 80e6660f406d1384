"""flowserv-async: an asyncio-native reproducible workflow service.

The entry points are :class:`LocalAPIFactory` (sessions: ``async with factory() as api``),
:func:`init_db` and :func:`init_backend`.
"""

from flowserv_async.api import API
from flowserv_async.config import Settings
from flowserv_async.controller import WorkflowController
from flowserv_async.db import DB, init_db
from flowserv_async.local import LocalAPIFactory, SessionManager, init_backend
from flowserv_async.version import __version__

__all__ = [
    "API",
    "DB",
    "LocalAPIFactory",
    "SessionManager",
    "Settings",
    "WorkflowController",
    "__version__",
    "init_backend",
    "init_db",
]
