"""Fixtures: the embedded store in tmp_path, and the production store on this machine's Redis + PostgreSQL.

The production fixtures isolate every test session: a PostgreSQL database created for the session
(and dropped afterwards), and per test a unique Feast project (which namespaces the Redis keys, deleted
afterwards) and offline schema.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
from sqlalchemy import create_engine, text

from coldstart.settings import Settings, get_settings
from tests.faults import PG_ADMIN_URL, pg_database

REDIS_URL = "redis://127.0.0.1:6379/0"


def _services_up() -> str | None:
    try:
        redis.Redis.from_url(REDIS_URL, socket_connect_timeout=2).ping()
    except Exception as exc:
        return f"Redis at {REDIS_URL} unreachable: {exc}"
    try:
        with create_engine(PG_ADMIN_URL).connect() as c:
            c.execute(text("select 1"))
    except Exception as exc:
        return f"PostgreSQL at {PG_ADMIN_URL} unreachable: {exc}"
    return None


@pytest.fixture(scope="session")
def pg_database_url() -> Iterator[str]:
    """A fresh PostgreSQL database for this test session (dropped at the end)."""
    reason = _services_up()
    if reason:
        pytest.fail(reason)
    with pg_database("cs_h4") as url:
        yield url


def embedded_settings(tmp_path: Path) -> Settings:
    return get_settings(data_dir=tmp_path, feast={"type": "embedded"})


def production_settings(tmp_path: Path, pg_url: str) -> Settings:
    tag = uuid.uuid4().hex[:10]
    return get_settings(
        data_dir=tmp_path,
        feast={
            "type": "production",
            "project": f"t_{tag}",
            "pg_schema": f"s_{tag}",
            "postgres_url": pg_url,
            "redis_url": REDIS_URL,
        },
    )


@pytest.fixture(
    scope="session", params=["embedded", pytest.param("production", marks=pytest.mark.integration)]
)
def settings(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Settings:
    tmp = tmp_path_factory.mktemp(f"store_{request.param}")
    if request.param == "embedded":
        return embedded_settings(tmp)
    pg_url: str = request.getfixturevalue("pg_database_url")
    return production_settings(tmp, pg_url)


@pytest.fixture(scope="session")
def store(settings: Settings) -> Iterator[object]:
    """One store per profile and session (opening applies the Feast objects: seconds on a SQL registry).

    Tests sharing it use unique ids (the ``uid`` fixture) and filter the offline frames by them.
    """
    from feature_repo import open_store

    st = open_store(settings)
    try:
        yield st
    finally:
        st.close()
        if settings.feast.type == "production":
            drop_redis_project(settings.feast.project)


@pytest.fixture
def uid() -> str:
    """A unique id prefix for the rows one test writes."""
    return uuid.uuid4().hex[:8]


def drop_redis_project(project: str) -> int:
    """Delete the Redis keys of a Feast project (Feast's keys end with the project name)."""
    r = redis.Redis.from_url(REDIS_URL)
    n = 0
    for key in r.scan_iter(match=f"*{project}".encode(), count=1000):
        n += int(r.delete(key))
    r.close()
    return n
