"""Outages degrade and recover by themselves, and /readyz tells the truth: the broker killed and
restarted empty under the running API, and the API SIGKILLed with its decision-log child."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from api.main import create_app
from coldstart.topics import DECISIONS, ITEMS_LISTED
from stream.broker import TansuBroker, free_port
from tests.api.conftest import KEY, seeded_settings
from tests.faults import kill_broker, topic_values, wait_for

pytestmark = [pytest.mark.integration, pytest.mark.timeout(180)]

ITEM = {"item_id": "outage-1", "title": "a kettle", "seller_id": "s"}


def _decision_ids(bootstrap: str) -> set[str]:
    return topic_values(bootstrap, DECISIONS, "decision_id")


def test_broker_outage_degrades_and_recovers_without_restart(tmp_path: Path) -> None:
    port = free_port()
    broker = TansuBroker(port, partitions=2).start()
    settings = seeded_settings(
        tmp_path,
        kafka={"bootstrap_servers": broker.bootstrap_servers, "partitions": 2},
        # the child at normal priority: an idle-class child gets no CPU while other work saturates the
        # machine, and this test is about reconnecting, not scheduling
        api={
            "api_keys": ["test-key"],
            "connect_kafka": True,
            "decision_log_linger_ms": 50,
            "decision_log_idle_class": False,
        },
    )
    try:
        with TestClient(create_app(settings)) as client:
            assert client.post("/v1/items", json=ITEM, headers=KEY).status_code == 202
            assert client.get("/readyz").json()["checks"]["kafka"] is True

            kill_broker(broker)
            wait_for(lambda: client.get("/readyz").json()["checks"]["kafka"] is False, 1.5)
            start = time.monotonic()
            r = client.post("/v1/items", json=ITEM, headers=KEY)
            assert r.status_code == 503 and time.monotonic() - start < 1.0
            r = client.post(
                "/v1/interactions", json={"user_id": "u", "item_id": "i", "kind": "click"}, headers=KEY
            )
            assert r.status_code == 503 and r.json()["error"] == "unavailable"
            start = time.monotonic()
            assert (
                client.post(
                    "/v1/exploration/slots", json={"user_id": "user-1", "k": 3}, headers=KEY
                ).status_code
                == 200
            )
            assert time.monotonic() - start < 0.5  # slots never wait for the broker

            # a fresh embedded broker: same address, no topics, no producer ids, no offsets
            broker = TansuBroker(port, partitions=2).start(create_topics=False)
            took = wait_for(
                lambda: client.post("/v1/items", json=ITEM, headers=KEY).status_code == 202, 30.0, 0.5
            )
            assert took < 30.0
            assert client.get("/readyz").json()["checks"]["kafka"] is True
            from kafka import KafkaConsumer

            meta = KafkaConsumer(bootstrap_servers=broker.bootstrap_servers)
            try:
                assert {ITEMS_LISTED, DECISIONS} <= set(meta.topics())
            finally:
                meta.close()

            # the decision-log child reconnected too: new decisions reach the new topic (a burst
            # sent before its producer was replaced may be lost; the ones after it are not)
            def slots() -> str:
                r = client.post("/v1/exploration/slots", json={"user_id": "user-1", "k": 3}, headers=KEY)
                return str(r.json()["decision_id"])

            sent: set[str] = set()
            wait_for(
                lambda: bool(
                    sent.update({slots(), slots()}) or sent & _decision_ids(broker.bootstrap_servers)
                ),
                30.0,
                1.0,
            )
            later = {slots() for _ in range(5)}
            wait_for(lambda: later <= _decision_ids(broker.bootstrap_servers), 15.0, 1.0)
    finally:
        broker.stop()


def test_decision_log_child_dies_with_a_sigkilled_api(tmp_path: Path) -> None:
    import psutil

    settings = seeded_settings(tmp_path)  # writes the store the server reads
    with TansuBroker(partitions=2) as broker:
        env = dict(os.environ)
        env.update(
            {
                "COLDSTART_DATA_DIR": str(settings.data_dir),
                "COLDSTART_KAFKA__BOOTSTRAP_SERVERS": broker.bootstrap_servers,
                "COLDSTART_API__API_KEYS": '["test-key"]',
                "COLDSTART_API__PORT": str(free_port()),
            }
        )
        api = subprocess.Popen(
            [sys.executable, "-m", "cli.main", "api", "serve"],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            parent = psutil.Process(api.pid)
            wait_for(lambda: len(parent.children(recursive=True)) >= 1, 120.0, 0.5)
            children = parent.children(recursive=True)
            api.send_signal(signal.SIGKILL)
            api.wait()
            wait_for(
                lambda: not any(c.is_running() and c.status() != psutil.STATUS_ZOMBIE for c in children), 10.0
            )
        finally:
            if api.poll() is None:
                api.kill()
