"""Dead-letter queues: records a consumer gives up on go to ``<topic>.dlq`` with their reason.

Each :class:`DeadLetter` keeps the original key and value bytes and the source topic / partition /
offset, so nothing is lost and the record can be replayed after a fix.

Exactly once per source record. A consumer flushes its dead letters *before* committing the offsets
they stand for; a crash in between would re-deliver those records and dead-letter them twice. To
prevent that, the dead letters of source partition ``p`` go to DLQ partition ``p`` (when the DLQ has
enough partitions) and each offset commit carries, in its metadata, the next DLQ offset
(:meth:`DeadLetterQueue.commit_metadata`). When a partition is assigned, :meth:`DeadLetterQueue.recover`
reads the DLQ partition from that offset and remembers which uncommitted source offsets were already
dead-lettered; :meth:`DeadLetterQueue.send` then skips them. A broker that drops commit metadata
(Tansu does) makes the recovery read the DLQ partition from its start: still exact, slower when the
DLQ is large.
"""

from __future__ import annotations

import base64
import json
import logging
import threading
from collections.abc import Iterable
from typing import Any

from coldstart.errors import BrokerError
from stream.contracts import DeadLetter, EventDecodeError, decode_event, encode_event, now_utc
from stream.producer import EventProducer
from stream.topics import dlq_topic

log = logging.getLogger(__name__)

_META_KEY = "dlq_next"


class DeadLetterQueue:
    """The dead-letter side of one consumer of ``source_topic``.

    Parameters
    ----------
    producer
        Where dead letters are sent (shared with the rest of the process, thread-safe).
    bootstrap_servers
        Kafka address (for reading the DLQ back in :meth:`recover`).
    consumer
        Name of the consumer (its group id), recorded in every dead letter.
    source_topic
        The topic this consumer reads; dead letters go to ``source_topic + ".dlq"``.
    """

    def __init__(
        self, producer: EventProducer, bootstrap_servers: str, consumer: str, source_topic: str
    ) -> None:
        from stream.topics import partition_count

        self._producer = producer
        self._bootstrap = bootstrap_servers
        self.consumer = consumer
        self.source_topic = source_topic
        self.topic = dlq_topic(source_topic)
        self._partitions = partition_count(bootstrap_servers, self.topic)
        self._lock = threading.Lock()
        self._pending: list[tuple[int, Any]] = []
        self._next: dict[int, int] = {}  # source partition -> next DLQ offset known to hold its letters
        self._already: set[tuple[int, int]] = set()  # (source partition, offset) dead-lettered, uncommitted
        self.sent = 0
        self.skipped = 0

    def _dlq_partition(self, source_partition: int) -> int:
        return source_partition % self._partitions

    def send(self, record: Any, error: str, reason: str) -> bool:
        """Dead-letter one source record (a kafka-python ``ConsumerRecord``).

        Returns ``False`` when it was already dead-lettered before a crash (nothing is sent again).
        """
        coords = (int(record.partition), int(record.offset))
        letter = DeadLetter(
            reason=reason,
            error=error,
            consumer=self.consumer,
            source_topic=str(record.topic),
            source_partition=coords[0],
            source_offset=coords[1],
            source_timestamp_ms=getattr(record, "timestamp", None),
            key_b64=None if record.key is None else base64.b64encode(record.key).decode("ascii"),
            payload_b64=base64.b64encode(record.value or b"").decode("ascii"),
            failed_at=now_utc(),
        )
        with self._lock:
            if coords in self._already:
                self.skipped += 1
                return False
            fut = self._producer.send(
                self.topic, record.key, encode_event(letter), partition=self._dlq_partition(coords[0])
            )
            self._pending.append((coords[0], fut))
            self._already.add(coords)
            self.sent += 1
        log.warning("dead-lettered %s[%d]@%d: %s", record.topic, coords[0], coords[1], reason)
        return True

    def flush(self) -> None:
        """Wait until every dead letter sent so far is acknowledged (call before committing).

        Raises
        ------
        BrokerError
            A dead letter could not be written; the caller must not commit.
        """
        with self._lock:
            pending, self._pending = self._pending, []
        if not pending:
            return
        self._producer.flush()
        for source_partition, fut in pending:
            try:
                meta = fut.get(timeout=30)
            except Exception as exc:
                raise BrokerError(f"dead letter not written to {self.topic}: {exc}") from exc
            with self._lock:
                nxt = int(meta.offset) + 1
                if nxt > self._next.get(source_partition, -1):
                    self._next[source_partition] = nxt

    def commit_metadata(self, source_partition: int) -> str:
        """Metadata to store with the offset commit of ``source_partition`` (call after :meth:`flush`)."""
        with self._lock:
            nxt = self._next.get(source_partition)
        return "" if nxt is None else json.dumps({_META_KEY: nxt})

    def committed(self, source_partition: int, committed_offset: int) -> None:
        """Forget the dead-lettered offsets below a new commit (they can no longer be re-delivered)."""
        with self._lock:
            self._already = {c for c in self._already if c[0] != source_partition or c[1] >= committed_offset}

    def recover(self, assigned: Iterable[tuple[int, int | None, str]], *, idle_ms: int = 300) -> int:
        """Learn which uncommitted records of newly assigned partitions were already dead-lettered.

        Parameters
        ----------
        assigned
            ``(source partition, committed offset or None, commit metadata)`` per assigned partition.
        idle_ms
            The DLQ partition is read until a poll returns nothing for this long.

        Returns
        -------
        int
            How many already-dead-lettered records were found.
        """
        from kafka import KafkaConsumer
        from kafka.structs import TopicPartition

        wanted: dict[int, int] = {}  # source partition -> committed offset
        starts: dict[int, int] = {}  # dlq partition -> first offset to read
        for source_partition, committed, metadata in assigned:
            wanted[source_partition] = committed or 0
            start = 0
            if metadata:
                try:
                    start = int(json.loads(metadata).get(_META_KEY, 0))
                except (ValueError, AttributeError):
                    start = 0
            dlq_p = self._dlq_partition(source_partition)
            starts[dlq_p] = min(starts.get(dlq_p, start), start)
            with self._lock:
                self._next.setdefault(source_partition, start)
        if not starts:
            return 0
        reader = KafkaConsumer(
            bootstrap_servers=self._bootstrap,
            client_id=f"{self.consumer}-dlq-recover",
            enable_auto_commit=False,
            fetch_max_wait_ms=50,
        )
        found = 0
        try:
            tps = [TopicPartition(self.topic, p) for p in starts]
            reader.assign(tps)
            for tp in tps:
                reader.seek(tp, starts[tp.partition])
            while True:
                batch = reader.poll(timeout_ms=idle_ms)
                if not batch:
                    break
                for records in batch.values():
                    for rec in records:
                        try:
                            letter = decode_event(rec.value, DeadLetter)
                        except EventDecodeError:
                            continue
                        src_p = letter.source_partition
                        if letter.source_topic != self.source_topic or src_p not in wanted:
                            continue
                        with self._lock:
                            if rec.offset + 1 > self._next.get(src_p, -1):
                                self._next[src_p] = rec.offset + 1
                            if letter.source_offset >= wanted[src_p]:
                                self._already.add((src_p, letter.source_offset))
                                found += 1
        finally:
            reader.close()
        if found:
            log.info(
                "%d records of %s were dead-lettered before a restart; not sending them again",
                found,
                self.topic,
            )
        return found


def read_dead_letters(bootstrap_servers: str, source_topic: str, *, idle_ms: int = 1000) -> list[DeadLetter]:
    """Every dead letter of ``source_topic``, read from the beginning of its DLQ until idle.

    Undecodable DLQ records (not written by coldstart) are skipped.
    """
    from kafka import KafkaConsumer

    reader = KafkaConsumer(
        dlq_topic(source_topic),
        bootstrap_servers=bootstrap_servers,
        client_id="coldstart-dlq-reader",
        auto_offset_reset="earliest",
        enable_auto_commit=False,
        group_id=None,
        fetch_max_wait_ms=100,
    )
    letters: list[DeadLetter] = []
    try:
        while True:
            polled = reader.poll(timeout_ms=idle_ms)
            if not polled:
                break
            for records in polled.values():
                for rec in records:
                    try:
                        letters.append(decode_event(rec.value, DeadLetter))
                    except EventDecodeError:
                        continue
    finally:
        reader.close()
    return letters
