"""Poison pills never stop a partition: each hostile record is dead-lettered once, good ones are stored.

Against the embedded broker (Tansu): an oversized event, invalid UTF-8, a null key with non-JSON, a
10,000-key attributes map and JSON nested 10,000 deep, each followed by good events.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

import pytest
from kafka import KafkaProducer

from coldstart.contracts import encode_event
from coldstart.topics import ITEMS_LISTED
from stream.config import KafkaSettings
from stream.dlq import DLQ_KEEP_BYTES
from stream.encode_worker import EncodeWorker
from tests.stream.helpers import T0, good_event, read_dlq

pytestmark = pytest.mark.integration


def _poison() -> list[tuple[str, bytes | None, bytes]]:
    """(name, key, value) of each planted record."""
    big = json.dumps(
        {"item_id": "p-big", "title": "x" * 1_500_000, "seller_id": "s", "listed_at": T0.isoformat()}
    ).encode()
    # under the record limit, but its letter (base64, +33%) would not fit a message
    long_title = json.dumps(
        {"item_id": "p-long", "title": "y" * 900_000, "seller_id": "s", "listed_at": T0.isoformat()}
    ).encode()
    wide = json.dumps(
        {
            "item_id": "p-wide",
            "title": "wide",
            "seller_id": "s",
            "listed_at": T0.isoformat(),
            "attributes": {f"k{i}": "v" for i in range(10_000)},
        }
    ).encode()
    deep = b'{"item_id": "p-deep", "title": ' + b"[" * 10_000 + b"]" * 10_000 + b"}"
    return [
        ("oversized", b"p-big", big),
        ("long_title", b"p-long", long_title),
        ("invalid_utf8", b"p-utf8", b'{"item_id": "\xff\xfe\xfa", "title": "x"}'),
        ("null_key_non_json", None, b"\x00\x01 not json at all"),
        ("wide_attributes", b"p-wide", wide),
        ("deep_nesting", b"p-deep", deep),
    ]


def test_poison_pills_are_dead_lettered_once_and_the_partition_moves_on(
    kafka: KafkaSettings, encoder: Any, store: Any
) -> None:
    bootstrap = kafka.bootstrap_servers or ""
    poison = _poison()
    good: list[str] = []
    # a client nobody here wrote: a plain producer allowed to send 4 MB records
    raw = KafkaProducer(bootstrap_servers=bootstrap, max_request_size=4 * 1024 * 1024, acks="all")
    try:
        for j, (_, key, value) in enumerate(poison):
            # one partition for everything: each poison record sits in front of good ones
            raw.send(ITEMS_LISTED, key=key, value=value, partition=0)
            for i in range(3):
                event = good_event(f"after-{j}", i, None)
                good.append(event.item_id)
                raw.send(ITEMS_LISTED, key=event.item_id.encode(), value=encode_event(event), partition=0)
        raw.flush()
    finally:
        raw.close()

    worker = EncodeWorker(bootstrap, kafka, encoder, store)
    worker.run(idle_exit_s=3.0)  # returns only when idle: an exception here is a worker crash

    stored = store.get_items(good)
    assert sorted(stored) == sorted(good)
    letters = read_dlq(bootstrap)
    assert len(letters) == len(poison)  # each exactly once
    by_sha = {letter.payload_sha256: letter for letter in letters}
    for name, key, value in poison:
        letter = by_sha[hashlib.sha256(value).hexdigest()]
        assert letter.payload_bytes == len(value), name
        assert letter.reason and letter.error, name
        assert letter.source_topic == ITEMS_LISTED and letter.source_partition == 0
        if letter.truncated:
            assert len(letter.payload()) == DLQ_KEEP_BYTES and value.startswith(letter.payload())
        else:
            assert letter.payload() == value and letter.key() == key, name
    assert by_sha[hashlib.sha256(poison[0][2]).hexdigest()].truncated
    reasons = {name: by_sha[hashlib.sha256(value).hexdigest()] for name, _, value in poison}
    assert "larger than" in reasons["oversized"].reason
    assert reasons["long_title"].truncated and "title" in reasons["long_title"].reason
    assert "UTF-8" in reasons["invalid_utf8"].reason
    assert "attributes" in reasons["wide_attributes"].reason
    assert "nested" in reasons["deep_nesting"].reason
    snap = worker.metrics.snapshot()
    assert snap["dead_lettered"] == len(poison) and snap["written"] == len(good)


class _FlakyProducer:
    """A real producer whose first ``fail`` sends are refused (a broker that is away for a while)."""

    def __init__(self, inner: Any, fail: int) -> None:
        self.inner = inner
        self.fail = fail
        self.attempts = 0

    def send(self, topic: str, key: Any, value: bytes, *, partition: int | None = None) -> Any:
        self.attempts += 1
        if self.attempts <= self.fail:
            raise RuntimeError("broker unavailable (injected)")
        return self.inner.send(topic, key, value, partition=partition)

    def flush(self, timeout_s: float | None = None) -> None:
        self.inner.flush(timeout_s)


def test_dead_letter_publish_failures_are_retried_with_backoff(kafka: KafkaSettings) -> None:
    import threading
    import time
    from types import SimpleNamespace

    from stream.dlq import DeadLetterQueue
    from stream.producer import EventProducer

    bootstrap = kafka.bootstrap_servers or ""
    with EventProducer(bootstrap, kafka) as inner:
        flaky = _FlakyProducer(inner, fail=3)
        dlq = DeadLetterQueue(flaky, bootstrap, "g", ITEMS_LISTED, backoff_s=(0.05, 0.2))  # type: ignore[arg-type]
        record = SimpleNamespace(topic=ITEMS_LISTED, partition=1, offset=7, key=b"k", value=b"nope")
        assert dlq.send(record, "invalid_json", "not JSON")  # refused, kept for flush: no exception
        start = time.monotonic()
        dlq.flush()  # retries until the broker takes it
        assert flaky.attempts == 4 and dlq.retries == 3
        assert time.monotonic() - start >= 0.05 + 0.1 + 0.2 - 0.01  # backoff doubles up to its cap
        # a stop request ends the retries without acknowledging (the caller then commits nothing)
        flaky.fail, flaky.attempts = 10**6, 0
        dlq.send(SimpleNamespace(topic=ITEMS_LISTED, partition=1, offset=8, key=None, value=b"x"), "e", "r")
        stop = threading.Event()
        stop.set()
        with pytest.raises(Exception, match="not written"):
            dlq.flush(stop)
    letters = read_dlq(bootstrap)
    assert [(x.source_partition, x.source_offset, x.payload()) for x in letters] == [(1, 7, b"nope")]
