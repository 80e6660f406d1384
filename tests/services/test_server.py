"""Service descriptor: name, version, URL, flowserv's routes."""

from __future__ import annotations

import pytest

from flowserv_async import __version__
from flowserv_async.config import Settings
from flowserv_async.services.server import ROUTES, ServiceDescriptor


def test_descriptor_from_settings() -> None:
    settings = Settings.from_env({"FLOWSERV_API_NAME": "Bench", "FLOWSERV_API_PORT": "8080"})
    doc = ServiceDescriptor(settings).to_dict()
    assert doc["name"] == "Bench"
    assert doc["version"] == __version__
    assert doc["url"] == "http://localhost:8080/flowserv/api/v1"
    assert "username" not in doc
    assert {r["id"]: r["pattern"] for r in doc["routes"]} == ROUTES
    assert ServiceDescriptor(settings, username="alice").to_dict()["username"] == "alice"


def test_urls() -> None:
    d = ServiceDescriptor(Settings.from_env({"FLOWSERV_API_PORT": "80"}))
    assert d.urls("runs:get", runId="r1") == "http://localhost/flowserv/api/v1/runs/r1"
    assert d.urls("service") == "http://localhost/flowserv/api/v1/"
    with pytest.raises(KeyError):
        d.urls("no:such:route")
