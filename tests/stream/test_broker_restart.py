"""An encoder worker keeps running through a broker restart (a fresh, empty embedded broker) and
stores what is published after it, without a process restart."""

from __future__ import annotations

import signal
import time
import uuid
from typing import Any

import pytest

from stream.broker import TansuBroker, free_port
from stream.config import EncodeWorkerSettings, KafkaSettings
from stream.encode_worker import EncodeWorker
from stream.producer import EventProducer
from tests.stream.helpers import WorkerThread, good_event

pytestmark = [pytest.mark.integration, pytest.mark.timeout(180)]


def _stored_within(store: Any, item_id: str, timeout_s: float) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if store.get_items([item_id]):
            return True
        time.sleep(0.2)
    return False


def test_encoder_worker_recovers_from_a_broker_restart(encoder: Any, store: Any) -> None:
    port = free_port()
    broker = TansuBroker(port, partitions=4).start()
    kafka = KafkaSettings(
        bootstrap_servers=broker.bootstrap_servers,
        partitions=4,
        encode=EncodeWorkerSettings(group_id=f"enc-{uuid.uuid4().hex[:8]}", linger_ms=20),
    )
    worker = EncodeWorker(broker.bootstrap_servers, kafka, encoder, store)
    thread = WorkerThread(worker)
    thread.start()
    prefix = uuid.uuid4().hex[:6]
    try:
        with EventProducer(broker.bootstrap_servers, kafka) as producer:
            first = good_event(prefix, 0, None)
            producer.publish_item(first)
            producer.flush()
        assert _stored_within(store, first.item_id, 60)

        proc = broker._proc
        assert proc is not None
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        broker._proc = None
        time.sleep(2)
        broker = TansuBroker(port, partitions=4).start()  # empty: topics recreated, no offsets, no groups
        with EventProducer(broker.bootstrap_servers, kafka) as producer:
            after = good_event(prefix, 1, None)
            producer.publish_item(after)
            producer.flush()
        assert _stored_within(store, after.item_id, 30), "not stored within 30 s of the broker's return"
        assert thread.is_alive() and thread.error is None
    finally:
        worker.stop()
        thread.join(60)
        broker.stop()
    assert thread.error is None
