"""Settings: read from the process environment and a mapping, parsed and validated."""

from __future__ import annotations

from pathlib import Path

import pytest

from flowserv_async.config import Settings, merge_env
from flowserv_async.errors import InvalidConfigurationError


def test_defaults(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(merge_env()):
        monkeypatch.delenv(name)
    s = Settings.from_env(merge_env())
    assert s.auth == "default" and not s.open_access
    assert s.auth_ttl == 86400
    assert s.async_engine is True
    assert (s.max_concurrent_runs, s.step_timeout, s.cancel_grace) == (0, 0.0, 5.0)
    assert s.api_dir.is_absolute() and "flowserv_async" in str(s.api_dir)
    assert s.api_url == "http://localhost:5000/flowserv/api/v1"
    assert s.database is None and s.access_token is None


def test_mapping_wins_over_process_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FLOWSERV_AUTH_TTL", "10")
    monkeypatch.setenv("FLOWSERV_MAX_CONCURRENT_RUNS", "3")
    s = Settings.from_env(merge_env({"FLOWSERV_AUTH_TTL": "20"}))
    assert s.auth_ttl == 20
    assert s.max_concurrent_runs == 3


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("true", True),
        ("TRUE", True),
        ("1", True),
        ("Yes", True),
        ("false", False),
        ("0", False),
        ("NO", False),
        (False, False),
    ],
)
def test_booleans(text: object, expected: bool) -> None:
    assert Settings.from_env({"FLOWSERV_ASYNCENGINE": text}).async_engine is expected


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("FLOWSERV_ASYNCENGINE", "maybe"),
        ("FLOWSERV_AUTH_TTL", "-1"),
        ("FLOWSERV_AUTH_TTL", "ten"),
        ("FLOWSERV_MAX_CONCURRENT_RUNS", "1.5"),
        ("FLOWSERV_STEP_TIMEOUT", "-2"),
        ("FLOWSERV_STEP_TIMEOUT", "nan"),
        ("FLOWSERV_CANCEL_GRACE", "inf"),
        ("FLOWSERV_API_PORT", "0"),
        ("FLOWSERV_API_PORT", "70000"),
        ("FLOWSERV_MAX_UPLOAD_SIZE", "big"),
        ("FLOWSERV_MAX_LOG_SIZE", "0"),
        ("FLOWSERV_MAX_LOG_SIZE", "-5"),
        ("FLOWSERV_CONTAINMENT", "cgroups"),
        ("FLOWSERV_RUN_QUEUE", "redis"),
    ],
)
def test_malformed_values_name_the_variable(name: str, value: str) -> None:
    with pytest.raises(InvalidConfigurationError, match=name):
        Settings.from_env({name: value})


def test_url_and_paths(tmp_path: Path) -> None:
    s = Settings.from_env(
        {
            "FLOWSERV_API_DIR": str(tmp_path),
            "FLOWSERV_API_PORT": "80",
            "FLOWSERV_API_PATH": "api/",
            "FLOWSERV_API_HOST": "example.org",
            "FLOWSERV_AUTH": "OPEN",
            "FLOWSERV_STEP_TIMEOUT": "2.5",
        }
    )
    assert s.api_dir == tmp_path
    assert s.api_url == "http://example.org/api"
    assert s.open_access
    assert s.step_timeout == 2.5


def test_any_other_auth_value_is_the_default_policy() -> None:
    assert Settings.from_env({"FLOWSERV_AUTH": "whatever"}).auth == "default"


def test_each_setting_is_read_from_its_own_variable() -> None:
    from dataclasses import fields

    from flowserv_async.config import VARIABLES

    names = [f.name for f in fields(Settings)]
    assert sorted(Settings.variable(n) for n in names) == list(VARIABLES)
    assert len(set(VARIABLES)) == len(names)
    assert Settings.variable("engine_config") == "FLOWSERV_SERIAL_ENGINECONFIG"
    env = {Settings.variable("api_port"): "8080", Settings.variable("api_dir"): "  "}
    settings = Settings.from_env(env)
    assert settings.api_port == 8080 and settings.api_dir.is_absolute()
    with pytest.raises(KeyError):
        Settings.variable("nope")
