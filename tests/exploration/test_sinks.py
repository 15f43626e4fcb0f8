"""The Kafka decision sink: non-blocking hand-over, bursts on a real Tansu broker, bounded queue."""

from __future__ import annotations

import functools
import os
import threading
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import pytest

from coldstart.contracts import decode_event
from coldstart.decisions import Candidate, Decision, Slot
from coldstart.errors import InvalidInputError
from coldstart.topics import DECISIONS
from exploration.sinks import KafkaDecisionSink, ProcessKafkaDecisionSink
from stream.admin import ensure_topics
from stream.broker import TansuBroker
from stream.producer import EventProducer


def decision(n: int) -> Decision:
    return Decision(
        decision_id=uuid.uuid4().hex,
        ts=datetime.now(UTC),
        user_id=f"user-{n % 7}",
        context={"device": "mobile", "has_user": 1.0},
        policy="vw-squarecb",
        model_version="v000000",
        candidates=[
            Candidate(item_id=f"i{j}", probability=0.25, score=0.25, features={"dot": 0.1 * j, "age": 1.0})
            for j in range(4)
        ],
        slots=[Slot(item_id="i2", position=0, propensity=0.25, score=0.25)],
    )


@pytest.fixture
def broker() -> Iterator[TansuBroker]:
    with TansuBroker(partitions=2) as b:
        ensure_topics(b.bootstrap_servers, 2)
        yield b


def _published(broker: TansuBroker) -> dict[str, Decision]:
    """Every decision on the decisions topic, by id."""
    from kafka import KafkaConsumer

    consumer = KafkaConsumer(
        DECISIONS,
        bootstrap_servers=broker.bootstrap_servers,
        auto_offset_reset="earliest",
        consumer_timeout_ms=3000,
    )
    got = {d.decision_id: d for d in (decode_event(m.value, Decision) for m in consumer)}
    consumer.close()
    return got


@pytest.mark.integration
def test_every_decision_reaches_the_topic_in_bursts(broker: TansuBroker) -> None:

    producer = EventProducer(broker.bootstrap_servers)
    sink = KafkaDecisionSink(producer, max_batch=16, linger_s=0.05)
    sent = [decision(n) for n in range(40)]
    for d in sent:
        sink.publish(d)
    sink.close()
    producer.close()
    assert sink.published == 40 and sink.dropped == 0 and sink.errors == 0
    assert _published(broker) == {d.decision_id: d for d in sent}


@pytest.mark.integration
def test_process_sink_publishes_every_decision_from_a_child_process(broker: TansuBroker) -> None:

    sink = ProcessKafkaDecisionSink(functools.partial(EventProducer, broker.bootstrap_servers), DECISIONS)
    sent = [decision(n) for n in range(30)]
    for d in sent:
        sink.publish(d)
    sink.flush()
    assert sink.published == 30 and sink.dropped == 0 and sink.errors == 0
    if hasattr(os, "SCHED_IDLE"):  # the child lowered its priority before it produced anything
        assert sink.pid is not None and os.sched_getscheduler(sink.pid) == os.SCHED_IDLE
    sink.close()
    assert _published(broker) == {d.decision_id: d for d in sent}


@pytest.mark.integration
def test_process_sink_child_runs_at_nice_10_without_the_idle_class(broker: TansuBroker) -> None:
    sink = ProcessKafkaDecisionSink(
        functools.partial(EventProducer, broker.bootstrap_servers), DECISIONS, idle_class=False, niceness=10
    )
    try:
        sink.publish(decision(0))
        sink.flush()
        assert sink.published == 1 and sink.errors == 0 and sink.pid is not None
        if hasattr(os, "SCHED_IDLE"):
            assert os.sched_getscheduler(sink.pid) == os.SCHED_OTHER
        assert os.getpriority(os.PRIO_PROCESS, sink.pid) == os.getpriority(os.PRIO_PROCESS, 0) + 10
    finally:
        sink.close()


@pytest.mark.integration
def test_process_sink_hands_over_full_bursts_at_once_and_a_partial_one_after_its_linger(
    broker: TansuBroker,
) -> None:
    sink = ProcessKafkaDecisionSink(
        functools.partial(EventProducer, broker.bootstrap_servers), DECISIONS, max_batch=4, linger_s=0.3
    )
    try:
        sent = [decision(n) for n in range(10)]
        for d in sent[:8]:  # two full bursts: handed over by publish itself
            sink.publish(d)
        assert sink.published == 8
        for d in sent[8:]:  # a partial burst: waits for its linger, no flush called
            sink.publish(d)
        assert sink.published == 8
        deadline = time.monotonic() + 10.0
        while sink.published < 10 and time.monotonic() < deadline:
            time.sleep(0.02)
        assert sink.published == 10 and sink.dropped == 0
        got: dict[str, Decision] = {}
        while len(got) < 10 and time.monotonic() < deadline:
            got = _published(broker)
        assert got == {d.decision_id: d for d in sent}
    finally:
        sink.close()
    assert sink.errors == 0


def test_process_sink_rejects_a_bad_burst_size() -> None:
    with pytest.raises(InvalidInputError, match="max_batch"):
        ProcessKafkaDecisionSink(functools.partial(EventProducer, "127.0.0.1:1"), DECISIONS, max_batch=0)


class _StalledProducer:
    """A producer whose ``send`` blocks until released (a broker whose buffer is full)."""

    def __init__(self) -> None:
        self.release = threading.Event()
        self.sent: list[Any] = []

    def publish_decision(self, decision: Any) -> None:
        self.release.wait(10.0)
        self.sent.append(decision)

    def flush(self, timeout_s: float | None = None) -> None:
        return None


def test_a_stalled_producer_never_blocks_publish_and_drops_are_counted() -> None:
    producer = _StalledProducer()
    sink = KafkaDecisionSink(producer, max_queue=5, max_batch=1, linger_s=0.0)
    for n in range(20):  # returns at once although nothing can be sent
        sink.publish(decision(n))
    # one decision is held by the stalled send, five wait in the queue, the rest are dropped
    assert 14 <= sink.dropped <= 15
    producer.release.set()
    sink.close()
    assert len(producer.sent) + sink.dropped == 20
