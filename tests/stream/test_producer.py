"""EventProducer against a real Tansu broker: large records batched and compressed together."""

from __future__ import annotations

import os

import pytest
from kafka import KafkaConsumer, TopicPartition

from coldstart.topics import DECISIONS
from stream.broker import TansuBroker
from stream.config import KafkaSettings
from stream.producer import EventProducer

pytestmark = pytest.mark.integration


@pytest.mark.parametrize("compression", ["lz4", "none"])
def test_burst_of_large_records_arrives_intact(broker: TansuBroker, compression: str) -> None:
    settings = KafkaSettings(
        bootstrap_servers=broker.bootstrap_servers,
        producer_compression=compression,
        producer_linger_ms=50,
    )
    # ~30 KB values, like a 100-candidate decision: several fit in one 512 KiB batch
    values = [os.urandom(8_000).hex().encode() + b"|" + str(n).encode() for n in range(12)]
    with EventProducer(broker.bootstrap_servers, settings) as producer:
        assert producer._producer.config["batch_size"] == settings.producer_batch_bytes == 512 * 1024
        futures = [producer.send(DECISIONS, "user-1", v) for v in values]
        producer.flush(10.0)
        meta = [f.get(timeout=10) for f in futures]
    assert len({m.partition for m in meta}) == 1  # one key, one partition, consecutive offsets
    offsets = [m.offset for m in meta]
    assert offsets == list(range(offsets[0], offsets[0] + len(values)))

    tp = TopicPartition(DECISIONS, meta[0].partition)
    consumer = KafkaConsumer(bootstrap_servers=broker.bootstrap_servers, enable_auto_commit=False)
    try:
        consumer.assign([tp])
        consumer.seek(tp, offsets[0])
        got: list[bytes] = []
        for _ in range(50):
            for records in consumer.poll(timeout_ms=500).values():
                got.extend(r.value for r in records)
            if len(got) >= len(values):
                break
    finally:
        consumer.close()
    assert got[: len(values)] == values


def test_batch_bytes_is_validated() -> None:
    with pytest.raises(ValueError, match="producer_batch_bytes"):
        KafkaSettings(producer_batch_bytes=10)
