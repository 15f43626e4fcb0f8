"""Publishing events: :class:`EventProducer` (one KafkaProducer, typed methods, keys per topic).

Example
-------
>>> with EventProducer("127.0.0.1:19092") as producer:          # doctest: +SKIP
...     producer.publish_item(ItemListed(item_id="sku-1", title="Red kettle", seller_id="s1",
...                                      listed_at=now_utc()))
...     producer.flush()
"""

from __future__ import annotations

from types import TracebackType
from typing import Any

from kafka import KafkaProducer
from kafka.errors import KafkaError
from pydantic import BaseModel

from coldstart.contracts import Interaction, ItemListed, encode_event
from coldstart.decisions import Decision
from coldstart.errors import BrokerError
from coldstart.topics import DECISIONS, INTERACTIONS, ITEMS_LISTED
from stream.config import KafkaSettings


class EventProducer:
    """A thin typed layer over ``kafka.KafkaProducer`` (thread-safe, ``acks="all"``).

    Parameters
    ----------
    bootstrap_servers
        Kafka address.
    settings
        Producer knobs (client id, linger, batch size, compression, request timeout); defaults when ``None``.
    """

    def __init__(self, bootstrap_servers: str, settings: KafkaSettings | None = None) -> None:

        cfg = settings or KafkaSettings()
        try:
            self._producer = KafkaProducer(
                bootstrap_servers=bootstrap_servers,
                client_id=f"{cfg.client_id}-producer",
                acks="all",
                linger_ms=cfg.producer_linger_ms,
                batch_size=cfg.producer_batch_bytes,
                request_timeout_ms=cfg.request_timeout_ms,
                retries=5,
                max_in_flight_requests_per_connection=1,
                # no idempotent producer: its producer id dies with the broker's state (a restarted
                # embedded broker answered InitProducerId with UnknownError until the process was
                # restarted); consumers de-duplicate by event id and idempotent writes instead
                enable_idempotence=False,
                reconnect_backoff_max_ms=1000,
                allow_auto_create_topics=False,  # topics are created with kafka.partitions (ensure_topics)
                max_block_ms=cfg.producer_max_block_ms,
                compression_type=None if cfg.producer_compression == "none" else cfg.producer_compression,
            )
        except KafkaError as exc:
            raise BrokerError(f"cannot connect a producer to {bootstrap_servers}: {exc}") from exc

    def send(self, topic: str, key: str | bytes | None, value: bytes, *, partition: int | None = None) -> Any:
        """Send raw bytes (asynchronous). Returns kafka-python's future: ``.get(timeout)`` gives the
        record metadata (topic, partition, offset) or raises."""
        key_bytes = key.encode("utf-8") if isinstance(key, str) else key
        return self._producer.send(topic, key=key_bytes, value=value, partition=partition)

    def publish(self, topic: str, key: str, event: BaseModel) -> Any:
        """Send one event as JSON, keyed by ``key``."""
        return self.send(topic, key, encode_event(event))

    def publish_item(self, event: ItemListed) -> Any:
        """``items.listed``, key ``item_id``."""
        return self.publish(ITEMS_LISTED, event.item_id, event)

    def publish_interaction(self, event: Interaction) -> Any:
        """``interactions``, key ``user_id``."""
        return self.publish(INTERACTIONS, event.user_id, event)

    def publish_decision(self, decision: Decision) -> Any:
        """``decisions``, key ``user_id``."""
        return self.publish(DECISIONS, decision.user_id, decision)

    def flush(self, timeout_s: float | None = None) -> None:
        """Block until every sent record is acknowledged (or raise :class:`BrokerError`)."""

        try:
            self._producer.flush(timeout=timeout_s)
        except KafkaError as exc:
            raise BrokerError(f"flush failed: {exc}") from exc

    def close(self, timeout_s: float = 10.0) -> None:
        """Flush and close."""
        self._producer.close(timeout=timeout_s)

    def __enter__(self) -> EventProducer:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()
