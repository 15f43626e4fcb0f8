"""Feeding an in-process pool index from the stream (``items.stored``), in any process.

The encoder worker announces each written row on ``items.stored`` (:class:`~coldstart.contracts.ItemStored`,
vectors included). A process that serves from an in-process pool (the API) runs a :class:`PoolFeed`:

1. :meth:`PoolFeed.start` pins the feed to the current end of every partition (no consumer group:
   every process sees every item);
2. the caller then rebuilds its pool from the store (``ItemPools.rebuild_from_store``): anything
   stored after step 1 arrives through the feed, so nothing falls between the two;
3. a background thread upserts each announced row into the pool.

Upserts are idempotent, so re-reading a few records is harmless.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Sequence
from types import TracebackType
from typing import Any

import numpy as np

from coldstart.contracts import EventDecodeError, ItemStored, decode_event, now_utc
from coldstart.topics import ITEMS_STORED
from feature_repo.records import StoredItem
from stream.producer import EventProducer

log = logging.getLogger(__name__)


def stored_event(row: StoredItem) -> ItemStored:
    """The ``items.stored`` announcement of a written row."""
    return ItemStored(
        item_id=row.item_id,
        listed_at=row.listed_at,
        stored_at=now_utc(),
        encoder_version=row.encoder_version,
        image_ok=row.image_ok,
        text_ok=row.text_ok,
        category=row.category,
        seller_id=row.seller_id,
        status=row.status,
        content_vector=np.asarray(row.content_vector, dtype=np.float32).tolist(),
        item_vector=np.asarray(row.item_vector, dtype=np.float32).tolist(),
    )


def stored_item(event: ItemStored) -> StoredItem:
    """The row an announcement describes (``updated_at`` = ``listed_at``, as the worker wrote it)."""
    item_vector = np.asarray(event.item_vector, dtype=np.float32)
    return StoredItem(
        item_id=event.item_id,
        content_vector=np.asarray(event.content_vector, dtype=np.float32),
        item_vector=item_vector,
        image_ok=event.image_ok,
        text_ok=event.text_ok,
        encoder_version=event.encoder_version,
        listed_at=event.listed_at,
        updated_at=event.listed_at,
        category=event.category,
        seller_id=event.seller_id,
        status=event.status,
        content_item_vector=item_vector,
    )


class StoredAnnouncer:
    """Publishes :class:`ItemStored` for written rows.

    ``wait=True`` (the encoder) returns once the broker acknowledged them; ``wait=False`` (the
    learner's warm-up) does not wait on its freshness path: announcements are notifications, not the
    record (the feature store is), and one lost in a crash is healed by the pools' periodic sync from
    the store. :meth:`flush` waits for what was sent.
    """

    def __init__(self, producer: EventProducer, *, wait: bool = True) -> None:
        self._producer = producer
        self.wait = wait

    def __call__(self, rows: Sequence[StoredItem]) -> None:
        for row in rows:
            self._producer.publish(ITEMS_STORED, row.item_id, stored_event(row))
        if self.wait:
            self._producer.flush()

    def flush(self) -> None:
        """Wait until every announcement is acknowledged."""
        self._producer.flush()


class PoolFeed:
    """Follow ``items.stored`` and hand the rows to ``upsert`` (e.g. ``ItemPools.upsert_items``).

    Parameters
    ----------
    bootstrap_servers
        Kafka address.
    upsert
        Called with each polled batch of rows, from the feed's thread.
    fetch_max_wait_ms
        The longest an announcement waits for the next fetch, ms (``KafkaSettings.follow_fetch_wait_ms``).
    poll_ms
        How long one ``poll`` of the feed's loop waits for records, ms: records are handed over as
        soon as a fetch returns them; this only bounds how long :meth:`stop` waits for the loop (each
        empty poll also costs the Kafka client's bookkeeping: at 100 ms, ~1% of a core per feed).
    """

    def __init__(
        self,
        bootstrap_servers: str,
        upsert: Callable[[Sequence[StoredItem]], None],
        *,
        fetch_max_wait_ms: int = 100,
        poll_ms: int = 1000,
    ) -> None:
        self.bootstrap_servers = bootstrap_servers
        self.fetch_max_wait_ms = fetch_max_wait_ms
        self.poll_ms = poll_ms
        self.upsert = upsert
        self.received = 0
        self.error: BaseException | None = None
        self._stop = threading.Event()
        self._consumer: Any = None
        self._thread = threading.Thread(target=self._loop, name="pool-feed", daemon=True)

    def start(self) -> PoolFeed:
        """Pin to the current end of ``items.stored`` and start following it."""
        from kafka import KafkaConsumer
        from kafka.structs import TopicPartition

        self._consumer = KafkaConsumer(
            bootstrap_servers=self.bootstrap_servers,
            client_id="coldstart-pool-feed",
            group_id=None,
            enable_auto_commit=False,
            allow_auto_create_topics=False,
            fetch_max_wait_ms=self.fetch_max_wait_ms,
        )
        parts = self._consumer.partitions_for_topic(ITEMS_STORED) or set()
        tps = [TopicPartition(ITEMS_STORED, p) for p in sorted(parts)]
        self._consumer.assign(tps)
        self._consumer.seek_to_end(*tps)
        for tp in tps:
            self._consumer.position(tp)  # resolve now: later announcements are not missed
        self._thread.start()
        return self

    def _loop(self) -> None:
        try:
            while not self._stop.is_set():
                polled = self._consumer.poll(timeout_ms=self.poll_ms)
                rows: list[StoredItem] = []
                for records in polled.values():
                    for rec in records:
                        try:
                            rows.append(stored_item(decode_event(rec.value, ItemStored)))
                        except EventDecodeError as exc:
                            log.warning("skipping an undecodable items.stored record: %s", exc)
                if rows:
                    self.upsert(rows)
                    self.received += len(rows)
        except BaseException as exc:
            self.error = exc
            log.exception("the pool feed stopped")
        finally:
            self._consumer.close()

    def stop(self) -> None:
        """Stop following."""
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(10)

    def __enter__(self) -> PoolFeed:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()
