"""The feature-store section is a discriminated union: each store's fields, and only those."""

from __future__ import annotations

import re
import subprocess
import sys

import pytest

from coldstart.errors import ConfigError
from coldstart.settings import get_settings
from feature_repo.cli import feast_cli_env
from feature_repo.config import EmbeddedStoreConfig, ProductionStoreConfig


def test_the_type_selects_the_store_and_absent_means_embedded(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("TYPE", "PROJECT", "REDIS_URL", "PG_SCHEMA"):
        monkeypatch.delenv(f"COLDSTART_FEAST__{name}", raising=False)
    assert isinstance(get_settings().feast, EmbeddedStoreConfig)
    monkeypatch.setenv("COLDSTART_FEAST__PROJECT", "shop_a")
    embedded = get_settings().feast
    assert isinstance(embedded, EmbeddedStoreConfig) and embedded.project == "shop_a"
    monkeypatch.setenv("COLDSTART_FEAST__TYPE", "production")
    monkeypatch.setenv("COLDSTART_FEAST__PG_SCHEMA", "shop_a_offline")
    production = get_settings().feast
    assert isinstance(production, ProductionStoreConfig)
    assert (production.project, production.pg_schema) == ("shop_a", "shop_a_offline")


@pytest.mark.parametrize(
    "feast",
    [
        {"type": "staging"},
        {"type": "embedded", "redis_url": "redis://127.0.0.1:6379/0"},  # a production field
        {"type": "production", "repo_path": "/tmp/x"},  # an embedded field
        {"profile": "production"},  # not a field of either
        {"type": "production", "redis_url": "http://127.0.0.1:6379"},
        {"type": "production", "pg_schema": "x; DROP TABLE y"},
        {"project": "a-b"},
    ],
)
def test_a_field_of_the_other_store_or_a_bad_value_is_refused(feast: dict[str, str]) -> None:
    with pytest.raises(ConfigError, match="feast"):
        get_settings(feast=feast)


@pytest.mark.parametrize(
    ("env", "hint"),
    [
        ({"COLDSTART_FEAST__PROFILE": "production"}, "feast.type (COLDSTART_FEAST__TYPE)"),
        ({"COLDSTART_API__KAFKA": "false"}, "api.connect_kafka (COLDSTART_API__CONNECT_KAFKA)"),
    ],
)
def test_a_renamed_setting_is_refused_with_its_new_name(
    env: dict[str, str], hint: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    with pytest.raises(ConfigError, match=re.escape(hint)):
        get_settings()


def test_the_cli_reports_invalid_settings_in_one_message_and_exit_code_2(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("COLDSTART_FEAST__TYPE", "staging")
    res = subprocess.run(
        [sys.executable, "-m", "cli.main", "store", "env"], capture_output=True, text=True, timeout=120
    )
    assert res.returncode == 2, res.stderr
    assert "invalid settings" in res.stderr and "staging" in res.stderr
    assert "Traceback" not in res.stderr


def test_feast_cli_env_of_the_other_store_keeps_the_configured_project(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    for name in ("TYPE", "PG_SCHEMA", "REDIS_URL"):
        monkeypatch.delenv(f"COLDSTART_FEAST__{name}", raising=False)
    monkeypatch.setenv("COLDSTART_FEAST__PROJECT", "shop_a")
    env = feast_cli_env("production")
    assert env["COLDSTART_FEAST__TYPE"] == "production" and env["CS_FEAST_PROJECT"] == "shop_a"
    assert env["COLDSTART_FEAST__PG_SCHEMA"] == "coldstart"  # the production default
    assert feast_cli_env("embedded") == {"COLDSTART_FEAST__TYPE": "embedded"}
