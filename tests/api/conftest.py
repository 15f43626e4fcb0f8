"""Fixtures of the API tests: the real app (lifespan, embedded SQLite feature store, the project's
pool) served through FastAPI's TestClient."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from api.main import create_app
from coldstart.settings import Settings
from feature_repo import open_store
from tests.exploration.slot_env import make_items, make_users, settings_for

KEY = {"X-API-Key": "test-key"}


@pytest.fixture(scope="session")
def tiny_artifact(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from models.testing import build_tiny_artifact

    out: Path = build_tiny_artifact(tmp_path_factory.mktemp("artifact"), seed=0)
    return out


def seeded_settings(tmp_path: Path, n_items: int = 40, **overrides: object) -> Settings:
    settings = settings_for(tmp_path, **overrides)
    store = open_store(settings)
    store.write_items(make_items(n_items))
    store.users().write_users(make_users(3))
    store.close()
    return settings


@pytest.fixture
def client(tmp_path: Path) -> Iterator[TestClient]:
    settings = seeded_settings(tmp_path)
    with TestClient(create_app(settings)) as c:
        yield c
