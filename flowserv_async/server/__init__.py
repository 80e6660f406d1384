"""flowserv's REST API as an ASGI app (the optional ``server`` extra).

``create_app()`` returns a FastAPI app serving every route of flowserv 0.9.4's REST API
(REST.md), so that flowserv's remote client, rob-ui and scripts work against it::

    uvicorn --factory flowserv_async.server:create_app

Importing :mod:`flowserv_async` never imports this package or its dependencies.
"""

from __future__ import annotations

from flowserv_async.server.app import create_app

__all__ = ["create_app"]
