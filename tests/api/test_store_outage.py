"""The production online store (Redis) killed under the running API: slots degrade instead of
failing, item reads fail fast, /readyz says so, and everything recovers when Redis is back."""

from __future__ import annotations

import shutil
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
from fastapi.testclient import TestClient

from api.main import create_app
from coldstart.settings import get_settings
from feature_repo import open_store
from stream.broker import free_port
from tests.api.conftest import KEY
from tests.exploration.slot_env import make_items, make_users
from tests.faults import pg_database

pytestmark = [pytest.mark.integration, pytest.mark.timeout(180)]

SLOTS = "/v1/exploration/slots"


class RedisServer:
    """A redis-server of this test's own on a free port (memory only)."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> RedisServer:
        exe = shutil.which("redis-server")
        if exe is None:
            pytest.fail("redis-server is not installed")
        self.proc = subprocess.Popen(
            [exe, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
            stdout=subprocess.DEVNULL,
        )
        client = redis.Redis(port=self.port, socket_connect_timeout=0.2)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                client.ping()
                return self
            except redis.ConnectionError:
                time.sleep(0.05)
        raise AssertionError("redis-server did not start")

    def kill(self) -> None:
        if self.proc is not None:
            self.proc.kill()
            self.proc.wait()
            self.proc = None


@pytest.fixture
def pg_url() -> Iterator[str]:
    """A PostgreSQL database of this test's own (offline store and registry), dropped afterwards."""
    with pg_database("cs_outage") as url:
        yield url


@pytest.fixture
def redis_server() -> Iterator[RedisServer]:
    server = RedisServer(free_port()).start()
    yield server
    server.kill()


def test_online_store_outage_degrades_slots_and_recovers(
    tmp_path: Path, redis_server: RedisServer, pg_url: str
) -> None:
    tag = uuid.uuid4().hex[:10]
    settings = get_settings(
        data_dir=tmp_path,
        feast={
            "type": "production",
            "project": f"t_{tag}",
            "pg_schema": f"s_{tag}",
            "postgres_url": pg_url,
            "redis_url": f"redis://127.0.0.1:{redis_server.port}/0",
        },
        api={"api_keys": ["test-key"], "connect_kafka": False},
    )
    store = open_store(settings)
    store.write_items(make_items(30))
    store.users().write_users(make_users(3))
    store.close()
    try:
        with TestClient(create_app(settings)) as client:
            r = client.post(SLOTS, json={"user_id": "user-0", "k": 3}, headers=KEY)
            assert r.status_code == 200 and "degraded" not in r.json()
            assert client.get("/readyz").json()["checks"]["store"] is True

            redis_server.kill()
            for _ in range(5):
                start = time.monotonic()
                r = client.post(SLOTS, json={"user_id": "user-0", "k": 3}, headers=KEY)
                assert r.status_code == 200, r.text
                assert time.monotonic() - start < 0.25  # the user read gives up within 50 ms
                assert r.json()["degraded"] == "user_store_unavailable" and len(r.json()["slots"]) == 3
            start = time.monotonic()
            r = client.get("/v1/items/item-00001", headers=KEY)
            assert r.status_code == 503 and time.monotonic() - start < 0.5
            ready = client.get("/readyz")
            assert ready.status_code == 200  # slots are still served
            assert ready.json()["checks"]["store"] is False and "store" in ready.json()["degraded"]

            RedisServer(redis_server.port).start()  # back, empty (memory only)
            redis_server.proc = None
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline:
                r = client.post(SLOTS, json={"user_id": "user-0", "k": 3}, headers=KEY)
                if "degraded" not in r.json():
                    break
                time.sleep(0.2)
            assert r.status_code == 200 and "degraded" not in r.json()
            time.sleep(0.6)
            assert client.get("/readyz").json()["checks"]["store"] is True
            assert client.get("/v1/items/item-00001", headers=KEY).status_code == 404  # read, not failed
    finally:
        if _alive(redis_server.port):  # the restarted server is not the fixture's process
            redis.Redis(port=redis_server.port).shutdown(nosave=True)


def _alive(port: int) -> bool:
    try:
        return bool(redis.Redis(port=port, socket_connect_timeout=0.2).ping())
    except redis.ConnectionError:
        return False
