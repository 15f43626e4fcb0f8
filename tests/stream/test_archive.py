"""The offline store converges to the topics: decisions and interactions from a running API,
the API SIGKILLed under 20 requests/s, the archive consumer committing after its writes."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import pytest

from coldstart.settings import Settings
from coldstart.topics import DECISIONS, INTERACTIONS
from feature_repo import open_offline_log
from stream.archive_worker import run_archive
from stream.broker import TansuBroker, free_port
from stream.config import ArchiveSettings, KafkaSettings
from tests.api.conftest import KEY, seeded_settings
from tests.faults import topic_values

pytestmark = [pytest.mark.integration, pytest.mark.timeout(240)]

LINGER_MS = 250


def test_offline_store_converges_to_the_topics_after_an_api_sigkill(tmp_path: Path) -> None:
    settings = seeded_settings(tmp_path)
    port = free_port()
    with TansuBroker(partitions=2) as broker:
        env = dict(os.environ)
        env.update(
            {
                "COLDSTART_DATA_DIR": str(settings.data_dir),
                "COLDSTART_KAFKA__BOOTSTRAP_SERVERS": broker.bootstrap_servers,
                "COLDSTART_API__API_KEYS": '["test-key"]',
                "COLDSTART_API__PORT": str(port),
                "COLDSTART_API__DECISION_LOG_LINGER_MS": str(LINGER_MS),
            }
        )
        api = subprocess.Popen(
            [sys.executable, "-m", "cli.main", "api", "serve"],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        answered: list[tuple[str, float]] = []
        accepted: list[str] = []
        try:
            base = f"http://127.0.0.1:{port}"
            with httpx.Client(base_url=base, headers=KEY, timeout=5.0) as http:
                deadline = time.monotonic() + 120
                while time.monotonic() < deadline:
                    try:
                        if http.get("/readyz").status_code == 200:
                            break
                    except httpx.TransportError:
                        pass
                    time.sleep(0.3)
                next_t = time.monotonic()
                for n in range(80):  # 20 requests/s for 4 s
                    r = http.post("/v1/exploration/slots", json={"user_id": f"user-{n % 3}", "k": 2})
                    assert r.status_code == 200, r.text
                    answered.append((r.json()["decision_id"], time.monotonic()))
                    if n % 8 == 0:
                        slot = r.json()["slots"][0]["item_id"]
                        event_id = f"ev-{n}"
                        body = {
                            "event_id": event_id,
                            "user_id": f"user-{n % 3}",
                            "item_id": slot,
                            "kind": "click",
                            "decision_id": r.json()["decision_id"],
                            "position": 0,
                        }
                        assert http.post("/v1/interactions", json=body).status_code == 202
                        accepted.append(event_id)
                    next_t += 0.05
                    time.sleep(max(0.0, next_t - time.monotonic()))
            api.send_signal(signal.SIGKILL)
            killed_at = time.monotonic()
            api.wait()
        finally:
            if api.poll() is None:
                api.kill()

        on_topic = topic_values(broker.bootstrap_servers, DECISIONS, "decision_id")
        lost = {d for d, t in answered if d not in on_topic}
        # what a SIGKILL can lose: the decisions of the last linger window (and the hand-over)
        assert all(killed_at - t <= LINGER_MS / 1000.0 + 0.5 for d, t in answered if d in lost)
        assert len(on_topic) >= len(answered) - 20

        kafka = KafkaSettings(
            bootstrap_servers=broker.bootstrap_servers,
            archive=ArchiveSettings(group_id="archive-test", linger_ms=100),
        )
        offline = open_offline_log(Settings(data_dir=settings.data_dir))
        stop = threading.Event()
        thread = threading.Thread(
            target=run_archive, args=(broker.bootstrap_servers, kafka, offline, stop), daemon=True
        )
        thread.start()
        try:
            deadline = time.monotonic() + 30
            stored: set[str] = set()
            while time.monotonic() < deadline:
                stored = {d.decision_id for d in offline.read_decisions()}
                if on_topic <= stored:
                    break
                time.sleep(0.5)
            assert stored == on_topic  # every decision on the topic, nothing else
            events = {i.event_id for i in offline.read_interactions()}
            assert set(accepted) <= events
            assert set(accepted) <= topic_values(broker.bootstrap_servers, INTERACTIONS, "event_id")
        finally:
            stop.set()
            thread.join(60)
