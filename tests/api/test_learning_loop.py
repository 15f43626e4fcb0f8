"""End to end on a real Tansu broker: slots → decisions topic, interactions → learner → new model
version → the API hot-reloads it; and POST /v1/items lands on items.listed."""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from api.main import create_app
from coldstart.contracts import ItemListed, decode_event
from coldstart.topics import ITEMS_LISTED
from exploration.model_store import LocalModelStore
from exploration.sinks import ProcessKafkaDecisionSink
from stream.admin import ensure_topics
from stream.broker import TansuBroker
from stream.learn_worker import LearnWorker
from stream.online_learner import OnlineLearner
from tests.api.conftest import KEY, seeded_settings

pytestmark = pytest.mark.integration


@pytest.fixture
def broker() -> Iterator[TansuBroker]:
    with TansuBroker(partitions=2) as b:
        ensure_topics(b.bootstrap_servers, 2)
        yield b


def test_rewards_on_the_stream_train_a_model_the_api_reloads(tmp_path: Path, broker: TansuBroker) -> None:
    group = f"learn-{uuid.uuid4().hex[:8]}"
    settings = seeded_settings(
        tmp_path,
        api={
            "api_keys": ["test-key"],
            "connect_kafka": True,
            "decision_log_linger_ms": 100,
            "decision_log_max_batch": 8,
        },
        kafka={"bootstrap_servers": broker.bootstrap_servers, "partitions": 2},
        exploration={
            "reload_interval_s": 0.2,
            "checkpoint_interval_s": 0.5,
            "rewards": {"window_s": 3.0},
            "learner_group_id": group,
        },
    )
    store = LocalModelStore(tmp_path / "model_store")
    learner = OnlineLearner(settings.exploration, store)
    worker = LearnWorker(broker.bootstrap_servers, settings.kafka, learner, group)
    result: dict[str, object] = {}
    thread = threading.Thread(target=lambda: result.update(stats=worker.run(max_s=60)))
    thread.start()
    try:
        app = create_app(settings)
        with TestClient(app) as c:
            assert c.get("/readyz").json()["checks"]["kafka"] is True
            (sink,) = [
                s for s in app.state.coldstart.service.sinks if isinstance(s, ProcessKafkaDecisionSink)
            ]
            assert (sink.linger_s, sink.max_batch) == (0.1, 8)  # from settings.api
            clicked = 0
            for n in range(10):
                out = c.post(
                    "/v1/exploration/slots", json={"user_id": f"user-{n % 3}", "k": 3}, headers=KEY
                ).json()
                assert out["model_version"] == "v000000"
                slot = out["slots"][0]
                r = c.post(
                    "/v1/interactions",
                    json={
                        "user_id": f"user-{n % 3}",
                        "item_id": slot["item_id"],
                        "kind": "click",
                        "decision_id": out["decision_id"],
                        "position": 0,
                    },
                    headers=KEY,
                )
                assert r.status_code == 202, r.text
                clicked += 1
            r = c.post(
                "/v1/items", json={"item_id": "new-1", "title": "Red kettle", "seller_id": "s1"}, headers=KEY
            )
            assert r.status_code == 202 and r.json() == {
                "status": "accepted",
                "topic": ITEMS_LISTED,
                "key": "new-1",
            }
            # the learner learns the clicks at once and the rest when the 3 s windows close
            deadline = time.monotonic() + 40
            version = "v000000"
            while time.monotonic() < deadline:
                version = c.post(
                    "/v1/exploration/slots", json={"user_id": "user-0", "k": 1}, headers=KEY
                ).json()["model_version"]
                if version != "v000000" and learner.stats.learned >= 30:
                    break
                time.sleep(0.3)
            assert version != "v000000", learner.stats
            metrics = c.get("/metrics", headers=KEY).text
            assert "coldstart_model_reloads_total" in metrics
    finally:
        worker.stop()
        thread.join(timeout=30)
    stats = learner.stats
    assert stats.decisions >= 10 and stats.interactions == clicked
    assert stats.rewards["max_reward"] == clicked  # each click finalised its slot immediately
    assert stats.learned >= 30  # 10 decisions x 3 slots (+ the polling requests as windows close)
    latest = store.latest()
    assert latest is not None and latest.n_learned == stats.learned
    # the ItemListed event is on the topic
    from kafka import KafkaConsumer

    consumer = KafkaConsumer(
        ITEMS_LISTED,
        bootstrap_servers=broker.bootstrap_servers,
        auto_offset_reset="earliest",
        consumer_timeout_ms=3000,
    )
    events = [decode_event(m.value, ItemListed) for m in consumer]
    consumer.close()
    assert [e.item_id for e in events] == ["new-1"]
