"""The encoder worker: ``items.listed`` → image fetch → ONNX encoder → feature store (+ pool index).

One worker is one member of the ``encode.group_id`` consumer group; scale out by starting more
workers (up to the topic's partition count). Per micro-batch:

1. decode and validate every event; a poison event goes to ``items.listed.dlq`` with its reason;
2. fetch the images concurrently (URL / path / base64); an image that cannot be fetched or decoded
   gives a text-only vector (``image_ok=false``), not a dead letter;
3. encode the batch with the models/ encoder (one call; on failure the batch is retried item by item
   and only the items that still fail are dead-lettered);
4. write the rows to the feature store (online + offline history) with ``listed_at`` as the row's
   event timestamp, then upsert them into the pool index when one is attached;
5. commit the offsets (after the dead letters are flushed).

Re-delivery (after a crash) writes the same rows again: vectors are deterministic and the event
timestamp is the event's ``listed_at``. A row the store already holds with a *newer* timestamp
(warmed up, or re-listed later) is not overwritten by a re-delivered old listing (the store's rule).
Replaying the topic from the start (a consumer-group reset) would upsert long-graduated items into
this process's pool again; the pool's owner re-applies statuses at its next rebuild.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any, Protocol

import numpy as np

from coldstart.contracts import ItemListed, decode_event, now_utc
from coldstart.errors import ColdstartError
from coldstart.topics import ITEMS_LISTED
from exploration.pool.base import CandidatePool, PoolEntry, PoolSpace, entry_from_item
from feature_repo.base import FeatureStore
from feature_repo.records import StoredItem
from models.records import ItemContent, ItemEmbedding
from stream.base import BatchSettings, Envelope, MicroBatchConsumer, Rejection
from stream.config import KafkaSettings
from stream.dlq import DeadLetterQueue
from stream.images import FetchResult, ImageFetcher
from stream.producer import EventProducer

log = logging.getLogger(__name__)


class Encoder(Protocol):
    """What the worker needs of a models/ encoder (``models.load_encoder(...)``)."""

    @property
    def version(self) -> str:
        """The artifact's version string."""
        ...

    def encode(self, items: Sequence[ItemContent]) -> list[ItemEmbedding]:
        """One embedding per item, in order."""
        ...


@dataclass
class StageTimes:
    """Seconds the worker spent per pipeline stage, summed over batches (thread-safe; profiling).

    ``image_wait_s``: the compute thread blocked on image fetches; ``encode_s``: encoder calls;
    ``store_s``: ``FeatureStore.write_items``; ``announce_s``: pool upsert and ``on_stored``;
    ``computed`` / ``writes``: batches encoded / store write calls (batches waiting for the writer
    are written together).
    """

    computed: int = 0
    writes: int = 0
    image_wait_s: float = 0.0
    encode_s: float = 0.0
    store_s: float = 0.0
    announce_s: float = 0.0
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def add(self, **deltas: float) -> None:
        """Increment stage counters by name."""
        with self._lock:
            for name, value in deltas.items():
                setattr(self, name, getattr(self, name) + value)

    def snapshot(self) -> dict[str, float]:
        """The counters, plus per-batch means (``*_per_batch_s``), rounded to milliseconds."""
        with self._lock:
            out: dict[str, float] = {
                "computed": self.computed,
                "writes": self.writes,
                "image_wait_s": round(self.image_wait_s, 3),
                "encode_s": round(self.encode_s, 3),
                "store_s": round(self.store_s, 3),
                "announce_s": round(self.announce_s, 3),
            }
            for name, n in (("image_wait", self.computed), ("encode", self.computed)):
                out[f"{name}_per_batch_s"] = round(getattr(self, f"{name}_s") / max(n, 1), 3)
            for name, n in (("store", self.writes), ("announce", self.writes)):
                out[f"{name}_per_batch_s"] = round(getattr(self, f"{name}_s") / max(n, 1), 3)
            return out


@dataclass
class _Prepared:
    envelopes: list[Envelope[ItemListed]]
    images: list[Future[FetchResult]]


@dataclass
class _Computed:
    rows: list[StoredItem]
    attributes: dict[str, dict[str, str]]


def to_stored_item(event: ItemListed, emb: ItemEmbedding) -> StoredItem:
    """The feature-store row of a freshly encoded item (event timestamp = ``listed_at``)."""
    item_vector = np.asarray(emb.item_vector, dtype=np.float32)
    return StoredItem(
        item_id=event.item_id,
        content_vector=np.asarray(emb.content_vector, dtype=np.float32),
        item_vector=item_vector,
        image_ok=emb.image_ok,
        text_ok=emb.text_ok,
        encoder_version=emb.encoder_version,
        listed_at=event.listed_at,
        updated_at=event.listed_at,
        category=event.category,
        seller_id=event.seller_id,
        status="cold",
        content_item_vector=item_vector.copy(),
    )


class EncodeWorker(MicroBatchConsumer[ItemListed, _Prepared, _Computed]):
    """Consumes ``items.listed`` and writes content embeddings (see the module docstring).

    Parameters
    ----------
    bootstrap_servers
        Kafka address.
    kafka
        Stream settings (group, batch size, linger, pipeline depth, image fetching).
    encoder
        A models/ encoder (``.encode``, ``.version``).
    store
        The feature store (``write_items`` online + offline, idempotent).
    pool
        The in-process cold-pool index to keep up to date, if this process has one.
    pool_vector
        Which vector the pool indexes: ``item`` (recommendation space) or ``content`` (shared space).
    on_stored
        Called with each batch's written rows after the write, e.g. ``ItemPools.upsert_items`` to
        keep both pool spaces of this process in step.
    """

    def __init__(
        self,
        bootstrap_servers: str,
        kafka: KafkaSettings,
        encoder: Encoder,
        store: FeatureStore,
        *,
        pool: CandidatePool | None = None,
        pool_vector: PoolSpace = "item",
        on_stored: Callable[[Sequence[StoredItem]], None] | None = None,
        producer: EventProducer | None = None,
    ) -> None:
        cfg = kafka.encode
        self._own_producer = producer is None
        self._producer = producer or EventProducer(bootstrap_servers, kafka)
        dlq = DeadLetterQueue(self._producer, bootstrap_servers, cfg.group_id, ITEMS_LISTED)
        batch = BatchSettings(
            group_id=cfg.group_id,
            max_batch_size=cfg.max_batch_size,
            linger_ms=cfg.linger_ms,
            pipeline_depth=max(cfg.pipeline_depth, cfg.compute_threads + 1),
            compute_threads=cfg.compute_threads,
            max_poll_interval_ms=cfg.max_poll_interval_ms,
            fetch_max_wait_ms=cfg.fetch_max_wait_ms,
        )
        super().__init__(bootstrap_servers, ITEMS_LISTED, kafka, batch, dlq)
        self.encoder = encoder
        self.store = store
        self.pool = pool
        self.pool_vector = pool_vector
        self.on_stored = on_stored
        self.fetcher = ImageFetcher(kafka.images)
        self.stages = StageTimes()

    def _parse(self, record: Any) -> ItemListed:
        return decode_event(record.value, ItemListed)

    def _prepare(self, batch: list[Envelope[ItemListed]]) -> _Prepared:
        return _Prepared(batch, self.fetcher.submit([env.event.image for env in batch]))

    def _compute(self, prepared: _Prepared) -> tuple[_Computed, list[Rejection]]:
        # the latest listing of an item wins within a batch (same key = same partition = in order)
        latest: dict[str, int] = {}
        for i, env in enumerate(prepared.envelopes):
            prev = latest.get(env.event.item_id)
            if prev is None or env.event.listed_at >= prepared.envelopes[prev].event.listed_at:
                latest[env.event.item_id] = i
        keep = sorted(latest.values())
        start = time.perf_counter()
        fetched_all = [prepared.images[i].result() for i in keep]
        self.stages.add(image_wait_s=time.perf_counter() - start)
        contents: list[ItemContent] = []
        for i, fetched in zip(keep, fetched_all, strict=True):
            event = prepared.envelopes[i].event
            if event.image is not None and not fetched.ok:
                self.metrics.image_failed(fetched.error or "unknown")
                log.info("item %s: image unavailable (%s), encoding text only", event.item_id, fetched.detail)
            contents.append(ItemContent(item_id=event.item_id, text=event.text(), image=fetched.data))
        start = time.perf_counter()
        embeddings, rejections = self._encode(contents, [prepared.envelopes[i] for i in keep])
        encode_s = time.perf_counter() - start
        self.metrics.add(encode_s=encode_s)
        self.stages.add(encode_s=encode_s, computed=1)
        rows: list[StoredItem] = []
        attributes: dict[str, dict[str, str]] = {}
        for i, emb in zip(keep, embeddings, strict=True):
            if emb is None:
                continue
            event = prepared.envelopes[i].event
            rows.append(to_stored_item(event, emb))
            attributes[event.item_id] = dict(event.attributes)
            if event.image is not None and not emb.image_ok:
                self.metrics.add(text_only=1)
        return _Computed(rows, attributes), rejections

    def _encode(
        self, contents: list[ItemContent], envelopes: list[Envelope[ItemListed]]
    ) -> tuple[list[ItemEmbedding | None], list[Rejection]]:
        if not contents:
            return [], []
        try:
            out: list[ItemEmbedding | None] = list(self.encoder.encode(contents))
            if len(out) == len(contents):
                return out, []
            log.error(
                "encoder returned %d embeddings for %d items; retrying one by one", len(out), len(contents)
            )
        except Exception as exc:
            log.warning("batch encode failed (%s); retrying item by item", exc)
        results: list[ItemEmbedding | None] = []
        rejections: list[Rejection] = []
        for content, env in zip(contents, envelopes, strict=True):
            try:
                results.append(self.encoder.encode([content])[0])
            except Exception as exc:
                kind = "invalid_event" if isinstance(exc, ColdstartError) else "encode_failed"
                rejections.append(
                    Rejection(env.record, kind, f"encoder failed on item {content.item_id!r}: {exc}")
                )
                results.append(None)
        return results, rejections

    def _write(self, computed: list[_Computed]) -> None:
        # consecutive batches: a later listing of the same item wins
        latest = {r.item_id: r for c in computed for r in c.rows}
        rows = list(latest.values())
        attributes = {k: v for c in computed for k, v in c.attributes.items()}
        if not rows:
            return
        start = time.perf_counter()
        # the store keeps the newer row when it has one (warmed up, or re-listed later): a re-delivered
        # old listing does not overwrite it
        self.store.write_items(rows, mode="content")
        stored = time.perf_counter()
        if self.pool is not None:
            self.pool.upsert([self._pool_entry(r, attributes.get(r.item_id, {})) for r in rows])
        if self.on_stored is not None:
            self.on_stored(rows)
        written_at = now_utc()
        end = time.perf_counter()
        self.metrics.add(written=len(rows), write_s=end - start)
        self.stages.add(writes=1, store_s=stored - start, announce_s=end - stored)
        self.metrics.observe_freshness([_seconds(r.listed_at, written_at) for r in rows])

    def _pool_entry(self, row: StoredItem, attributes: dict[str, str]) -> PoolEntry:
        entry = entry_from_item(row, self.pool_vector)
        return replace(entry, attrs={**attributes, **entry.attrs})

    def _close(self) -> None:
        self.fetcher.close()
        if self._own_producer:
            self._producer.close()


def _seconds(start: datetime, end: datetime) -> float:
    return (end - start).total_seconds()
