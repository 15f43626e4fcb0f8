"""Helpers of the stream tests: publishing mixed good/bad events, reading a DLQ, running a worker."""

from __future__ import annotations

import base64
import json
import threading
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from coldstart.contracts import DeadLetter, ImageRef, ItemListed, decode_event, encode_event
from coldstart.topics import ITEMS_LISTED, dlq_topic
from stream.producer import EventProducer

T0 = datetime(2026, 1, 1, tzinfo=UTC)


@dataclass
class Published:
    """What a test published: good events by id, and the raw bytes of the planted bad ones."""

    good: dict[str, ItemListed] = field(default_factory=dict)
    bad: list[bytes] = field(default_factory=list)


def good_event(prefix: str, i: int, image: ImageRef | None) -> ItemListed:
    return ItemListed(
        item_id=f"{prefix}-{i:05d}",
        title=f"Item {i} of {prefix}",
        description=f"A description of item {i}, with words {i % 7} and {i % 11}.",
        category=f"cat-{i % 5}",
        attributes={"size": str(i % 3)},
        image=image,
        seller_id=f"seller-{i % 13}",
        listed_at=T0 + timedelta(seconds=i),
    )


def bad_payload(prefix: str, i: int, kind: int) -> bytes:
    """One of four kinds of poison event (``kind`` modulo 4)."""
    kind %= 4
    if kind == 0:
        return b"{this is not json" + str(i).encode()
    if kind == 1:  # naive timestamp
        return json.dumps(
            {
                "item_id": f"{prefix}-bad-{i}",
                "title": "x",
                "seller_id": "s",
                "listed_at": "2026-01-01T00:00:00",
            }
        ).encode()
    if kind == 2:  # two image sources
        return json.dumps(
            {
                "item_id": f"{prefix}-bad-{i}",
                "title": "x",
                "seller_id": "s",
                "listed_at": T0.isoformat(),
                "image": {"url": "http://127.0.0.1:1/a.jpg", "path": "/a.jpg"},
            }
        ).encode()
    return json.dumps({"item_id": f"{prefix}-bad-{i}", "schema_version": 9}).encode()


def publish_mixed(
    producer: EventProducer,
    prefix: str,
    n: int,
    *,
    bad_every: int = 0,
    images: list[Path] | None = None,
    image_url: Any = None,
) -> Published:
    """Publish ``n`` events; every ``bad_every``-th one is a planted poison event."""
    out = Published()
    for i in range(n):
        if bad_every and i % bad_every == bad_every - 1:
            raw = bad_payload(prefix, i, len(out.bad))
            out.bad.append(raw)
            producer.send(ITEMS_LISTED, f"{prefix}-bad-{i}", raw)
            continue
        image = None
        if images:
            path = images[i % len(images)]
            if image_url is not None:
                image = ImageRef(url=image_url(path))
            elif i % 2:
                image = ImageRef(path=str(path))
            else:
                image = ImageRef(base64=base64.b64encode(path.read_bytes()).decode())
        event = good_event(prefix, i, image)
        out.good[event.item_id] = event
        producer.send(ITEMS_LISTED, event.item_id, encode_event(event))
    producer.flush()
    return out


def read_dlq(bootstrap: str, source_topic: str = ITEMS_LISTED, idle_ms: int = 1500) -> list[DeadLetter]:
    """Every dead letter of ``source_topic`` (read from the beginning until idle)."""
    from kafka import KafkaConsumer

    consumer = KafkaConsumer(
        dlq_topic(source_topic), bootstrap_servers=bootstrap, auto_offset_reset="earliest", group_id=None
    )
    letters: list[DeadLetter] = []
    try:
        while True:
            polled = consumer.poll(timeout_ms=idle_ms)
            if not polled:
                break
            for records in polled.values():
                letters.extend(decode_event(r.value, DeadLetter) for r in records)
    finally:
        consumer.close()
    return letters


class WorkerThread(threading.Thread):
    """Run ``worker.run(idle_exit_s=...)`` in a thread and keep its result or error."""

    def __init__(self, worker: Any, idle_exit_s: float | None = None) -> None:
        super().__init__(daemon=True)
        self.worker = worker
        self.idle_exit_s = idle_exit_s
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            self.worker.run(idle_exit_s=self.idle_exit_s)
        except BaseException as exc:
            self.error = exc


def module_store_fixtures() -> tuple[Any, Any]:
    """``store_dir`` and ``store`` fixtures for a test module's OWN embedded store (module scope).

    Use as ``store_dir, store = module_store_fixtures()`` at module level: they override the session
    store of tests/stream, which holds other tests' items of other vector sizes that a pool rebuilt from
    the whole store cannot take.
    """

    @pytest.fixture(scope="module", name="store_dir")
    def _store_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
        return tmp_path_factory.mktemp("module-store")

    @pytest.fixture(scope="module", name="store")
    def _store(store_dir: Path) -> Any:
        from coldstart.settings import Settings
        from feature_repo import open_store
        from feature_repo.feast_store import FeastFeatureStore

        opened = open_store(Settings(data_dir=store_dir))
        assert isinstance(opened, FeastFeatureStore)
        return opened

    return _store_dir, _store
