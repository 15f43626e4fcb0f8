"""The encoder worker end to end: Tansu → fetch → tiny ONNX encoder → Feast store (+ pool), DLQ."""

from __future__ import annotations

import time
from typing import Any

import numpy as np
import pytest

from coldstart.contracts import ImageRef, ItemListed
from coldstart.errors import StoreError
from coldstart.topics import ITEMS_LISTED
from models.records import ItemContent
from stream.config import KafkaSettings
from stream.encode_worker import EncodeWorker
from stream.image_server import ImageServer
from stream.images import ImageFetcher
from stream.producer import EventProducer
from tests.stream.conftest import POSTERS, poster_paths
from tests.stream.helpers import WorkerThread, good_event, publish_mixed, read_dlq

pytestmark = pytest.mark.integration


def expected_vectors(encoder: Any, events: list[ItemListed], kafka: KafkaSettings) -> dict[str, np.ndarray]:
    fetcher = ImageFetcher(kafka.images)
    try:
        images = fetcher.fetch_many([e.image for e in events])
    finally:
        fetcher.close()
    embs = encoder.encode(
        [ItemContent(e.item_id, e.text(), r.data) for e, r in zip(events, images, strict=True)]
    )
    return {e.item_id: emb.content_vector for e, emb in zip(events, embs, strict=True)}


def test_worker_stores_good_items_and_dead_letters_poison(
    kafka: KafkaSettings, encoder: Any, store: Any
) -> None:
    posters = poster_paths(8)
    with ImageServer(POSTERS) as server, EventProducer(kafka.bootstrap_servers or "", kafka) as producer:
        pub = publish_mixed(producer, "w1", 60, bad_every=10, images=posters, image_url=server.url)
        broken = good_event("w1-broken", 0, ImageRef(url=f"{server.base_url}/missing.jpg"))
        producer.publish_item(broken)
        producer.flush()
        worker = EncodeWorker(kafka.bootstrap_servers or "", kafka, encoder, store)
        worker.run(idle_exit_s=2.0)
        want = expected_vectors(encoder, list(pub.good.values()), kafka)
    snap = worker.metrics.snapshot()
    assert snap["records"] == 61 and snap["dead_lettered"] == 6 and snap["written"] == 55
    assert snap["image_failures"] == {"http_status": 1}

    stored = store.get_items([*pub.good, broken.item_id])
    assert set(stored) == {*pub.good, broken.item_id}
    assert stored[broken.item_id].image_ok is False and stored[broken.item_id].text_ok is True
    for item_id, vec in want.items():
        row = stored[item_id]
        assert row.image_ok and row.text_ok and row.encoder_version == encoder.version
        assert row.updated_at == pub.good[item_id].listed_at == row.listed_at
        np.testing.assert_allclose(row.content_vector, vec, atol=1e-5)

    letters = read_dlq(kafka.bootstrap_servers or "")
    assert sorted(letter.payload() for letter in letters) == sorted(pub.bad)
    assert {letter.error for letter in letters} == {"invalid_json", "invalid_event", "unsupported_version"}
    assert all(letter.consumer == kafka.encode.group_id for letter in letters)
    assert any("listed_at" in letter.reason for letter in letters)
    assert any("image" in letter.reason and "exactly one" in letter.reason for letter in letters)
    for letter in letters:  # the source coordinates point at the original record
        assert letter.source_topic == "items.listed" and letter.source_offset >= 0


def test_redelivery_rewrites_the_same_row(kafka: KafkaSettings, encoder: Any, store: Any) -> None:
    posters = poster_paths(2)
    event = good_event("w2", 1, ImageRef(path=str(posters[0])))
    with EventProducer(kafka.bootstrap_servers or "", kafka) as producer:
        producer.publish_item(event)
        producer.flush()
        EncodeWorker(kafka.bootstrap_servers or "", kafka, encoder, store).run(idle_exit_s=1.0)
        first = store.get_items([event.item_id])[event.item_id]
        producer.publish_item(event)  # the same event again (as after a crash before the commit)
        producer.flush()
        again = EncodeWorker(kafka.bootstrap_servers or "", kafka, encoder, store)
        again.run(idle_exit_s=1.0)
    second = store.get_items([event.item_id])[event.item_id]
    assert again.metrics.snapshot()["records"] == 1
    np.testing.assert_array_equal(first.content_vector, second.content_vector)
    np.testing.assert_array_equal(first.item_vector, second.item_vector)
    assert first.updated_at == second.updated_at == event.listed_at


def test_two_workers_split_partitions(kafka: KafkaSettings, encoder: Any, store: Any) -> None:
    workers = [EncodeWorker(kafka.bootstrap_servers or "", kafka, encoder, store) for _ in range(2)]
    threads = [WorkerThread(w) for w in workers]
    for t in threads:
        t.start()
    deadline = time.monotonic() + 60
    while not (
        all(w.assigned_partitions for w in workers)
        and workers[0].assigned_partitions | workers[1].assigned_partitions == {0, 1, 2, 3}
    ):
        assert time.monotonic() < deadline, "the group never settled"
        time.sleep(0.05)
    assert not workers[0].assigned_partitions & workers[1].assigned_partitions  # a split, no overlap
    with EventProducer(kafka.bootstrap_servers or "", kafka) as producer:
        pub = publish_mixed(producer, "w3", 200)
    deadline = time.monotonic() + 120
    while sum(w.metrics.written for w in workers) < 200:
        assert time.monotonic() < deadline and all(t.error is None for t in threads)
        time.sleep(0.05)
    for w in workers:
        w.stop()
    for t in threads:
        t.join(60)
        assert not t.is_alive() and t.error is None
    counts = [w.metrics.snapshot()["records"] for w in workers]
    assert all(c > 0 for c in counts), counts  # both took part
    assert sum(w.metrics.snapshot()["written"] for w in workers) >= 200
    assert set(store.get_items(list(pub.good))) == set(pub.good)


def test_pool_follows_items_stored(kafka: KafkaSettings, encoder: Any, store: Any) -> None:
    from exploration.pool import ExactPool, ItemPools
    from stream.freshness import FreshnessProbe
    from stream.pool_feed import PoolFeed, StoredAnnouncer

    bootstrap = kafka.bootstrap_servers or ""
    content = ExactPool()
    pools = ItemPools(content=content)
    with EventProducer(bootstrap, kafka) as producer:
        worker = EncodeWorker(
            bootstrap, kafka, encoder, store, producer=producer, on_stored=StoredAnnouncer(producer)
        )
        thread = WorkerThread(worker)
        with (
            PoolFeed(bootstrap, pools.upsert_items) as feed,
            FreshnessProbe(store, content, contains=content.__contains__) as probe,
        ):
            thread.start()
            events = [good_event("w4", i, None) for i in range(40)]
            for event in events:
                probe.expect(event.item_id, event.listed_at)
                producer.publish_item(event)
            producer.flush()
            assert probe.wait(90), f"{probe.pending} items never became visible"
            worker.stop()
            thread.join(60)
        assert thread.error is None
    assert {e.item_id for e in events} <= set(content.ids())
    assert feed.received >= 40 and len(probe.latencies) == 40
    row = store.get_items([events[0].item_id])[events[0].item_id]
    np.testing.assert_array_equal(content.get(events[0].item_id).vector, row.content_vector)


class _CrashAtCommitError(Exception):
    pass


def test_dead_letters_are_not_repeated_after_a_crash_before_commit(
    kafka: KafkaSettings, encoder: Any, store: Any
) -> None:
    """A crash after the dead letters were flushed but before the commit re-delivers the batch; the
    next owner finds those letters (from the DLQ offset stored in the last commit's metadata) and
    does not send them again. (Tansu drops commit metadata, so there the DLQ partition is read from
    its start; Kafka keeps it.)"""
    bootstrap = kafka.bootstrap_servers or ""
    kafka.encode.max_batch_size = 10
    kafka.encode.pipeline_depth = 1
    with EventProducer(bootstrap, kafka) as producer:
        pub = publish_mixed(producer, "w5", 80, bad_every=4)

    class Crashing(EncodeWorker):
        commits = 0

        def _commit(self, offsets: dict[Any, int]) -> None:
            Crashing.commits += 1
            if Crashing.commits == 3:  # two batches committed, the third one's letters are flushed
                raise _CrashAtCommitError
            super()._commit(offsets)

    first = Crashing(bootstrap, kafka, encoder, store)
    with pytest.raises(_CrashAtCommitError):
        first.run()
    assert first.metrics.dead_lettered > 0
    second = EncodeWorker(bootstrap, kafka, encoder, store)
    second.run(idle_exit_s=2.0)
    assert second.metrics.dead_letters_deduplicated > 0

    letters = read_dlq(bootstrap)
    assert sorted(letter.payload() for letter in letters) == sorted(pub.bad)
    assert set(store.get_items(list(pub.good))) == set(pub.good)


class _FailingStore:
    """The session's real store, except that its ``fail_on``-th ``write_items`` call raises."""

    def __init__(self, inner: Any, fail_on: int) -> None:
        self.inner = inner
        self.fail_on = fail_on
        self.calls = 0
        self.failed_ids: list[str] = []

    def write_items(self, items: Any, mode: Any = "full") -> None:
        self.calls += 1
        if self.calls == self.fail_on:
            self.failed_ids = [it.item_id for it in items]
            raise StoreError("injected write failure")
        self.inner.write_items(items, mode)


def _offsets_by_item(bootstrap: str) -> dict[str, tuple[int, int]]:
    """``item_id -> (partition, offset)`` of every record on items.listed."""
    from kafka import KafkaConsumer
    from kafka.structs import TopicPartition

    consumer = KafkaConsumer(bootstrap_servers=bootstrap, group_id=None, enable_auto_commit=False)
    try:
        tps = [TopicPartition(ITEMS_LISTED, p) for p in sorted(consumer.partitions_for_topic(ITEMS_LISTED))]
        consumer.assign(tps)
        consumer.seek_to_beginning(*tps)
        out: dict[str, tuple[int, int]] = {}
        while polled := consumer.poll(timeout_ms=1500):
            for records in polled.values():
                out.update({r.key.decode(): (r.partition, r.offset) for r in records})
        return out
    finally:
        consumer.close()


def _committed(bootstrap: str, group_id: str) -> dict[int, int]:
    from kafka import KafkaConsumer
    from kafka.structs import TopicPartition

    probe = KafkaConsumer(bootstrap_servers=bootstrap, group_id=group_id, enable_auto_commit=False)
    try:
        return {p: probe.committed(TopicPartition(ITEMS_LISTED, p)) or 0 for p in range(4)}
    finally:
        probe.close()


def test_a_failed_write_commits_nothing_for_its_batch_and_is_redelivered(
    kafka: KafkaSettings, encoder: Any, store: Any
) -> None:
    """With several batches in flight, a store write that fails stops the worker with that error; no
    offset of a record in the failed write (or after it) is committed, every committed record is in
    the store, and a restarted worker gets the rest re-delivered and writes them."""
    bootstrap = kafka.bootstrap_servers or ""
    kafka.encode.max_batch_size = 8
    kafka.encode.pipeline_depth = 4
    with EventProducer(bootstrap, kafka) as producer:
        pub = publish_mixed(producer, "wf", 120)
    failing = _FailingStore(store, fail_on=3)
    with pytest.raises(StoreError, match="injected write failure"):
        EncodeWorker(bootstrap, kafka, encoder, failing).run()
    assert failing.failed_ids

    where = _offsets_by_item(bootstrap)
    assert set(where) == set(pub.good)
    committed = _committed(bootstrap, kafka.encode.group_id)
    assert sum(committed.values()) < len(pub.good)
    for item_id in failing.failed_ids:  # the failed write's records stay uncommitted
        partition, offset = where[item_id]
        assert offset >= committed[partition], (item_id, partition, offset, committed)
    done = [i for i, (p, off) in where.items() if off < committed[p]]
    assert set(store.get_items(done)) == set(done)  # committed only after written
    assert not set(store.get_items(failing.failed_ids))

    again = EncodeWorker(bootstrap, kafka, encoder, store)
    again.run(idle_exit_s=2.0)
    assert again.metrics.records >= len(pub.good) - len(done)  # the uncommitted rest, re-delivered
    assert set(store.get_items(list(pub.good))) == set(pub.good)
    assert sum(_committed(bootstrap, kafka.encode.group_id).values()) == len(pub.good)


def test_worker_writes_the_artifacts_served_blocks(
    kafka: KafkaSettings, store: Any, tmp_path_factory: pytest.TempPathFactory
) -> None:
    """An artifact that serves tower + lexical blocks: the worker stores exactly the encoder's served
    vector (tower output and the event text's lexical block, weighted), nothing torch-side."""
    import models
    from models.lexical import LexicalModel
    from models.representation import BlockSpec, Representation
    from models.testing import TINY_ITEM_DIM, build_tiny_artifact

    events = [good_event("blocks", i, None) for i in range(6)]
    lexical = LexicalModel(dim=4).fit([e.text() for e in events])
    rep = Representation(
        [BlockSpec("tower", TINY_ITEM_DIM, 1.0, 1.0), BlockSpec("lexical", lexical.out_dim, 2.0, 0.5)],
        lexical=lexical,
    )
    artifact = build_tiny_artifact(tmp_path_factory.mktemp("blocks"), representation=rep)
    encoder = models.load_encoder(artifact, providers=["CPUExecutionProvider"])  # type: ignore[attr-defined]
    assert encoder.item_dim == TINY_ITEM_DIM + lexical.out_dim
    with EventProducer(kafka.bootstrap_servers or "", kafka) as producer:
        for event in events:
            producer.publish_item(event)
        producer.flush()
        EncodeWorker(kafka.bootstrap_servers or "", kafka, encoder, store).run(idle_exit_s=1.5)
    stored = store.get_items([e.item_id for e in events])
    want = encoder.encode([ItemContent(e.item_id, e.text(), None) for e in events])
    for event, emb in zip(events, want, strict=True):
        row = stored[event.item_id].item_vector
        assert row.shape == (encoder.item_dim,)
        np.testing.assert_allclose(row, emb.item_vector, atol=1e-5)
        lexical_part = row[TINY_ITEM_DIM:]
        np.testing.assert_allclose(np.linalg.norm(lexical_part), 4.0, rtol=1e-4)  # unit block x 2 / 0.5
