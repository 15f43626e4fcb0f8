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
import contextlib
import hashlib
import json
import logging
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from kafka import KafkaConsumer
from kafka.structs import TopicPartition

from coldstart.contracts import DeadLetter, EventDecodeError, decode_event, encode_event, now_utc
from coldstart.errors import BrokerError
from coldstart.topics import dlq_topic
from stream.admin import partition_count
from stream.producer import EventProducer

log = logging.getLogger(__name__)

_META_KEY = "dlq_next"
#: Bytes of the original key and value a truncated dead letter keeps.
DLQ_KEEP_BYTES = 64 * 1024
_MAX_REASON = 4096
#: A source key longer than this is not reused as the dead letter's record key (it stays in the letter).
_MAX_KEY = 4096


@dataclass
class _Pending:
    """A dead letter on its way: what to (re)send and the producer's future once sent."""

    source_partition: int
    key: bytes | None
    value: bytes
    dlq_partition: int
    future: Any = None
    error: BaseException | None = None


def _too_large(exc: BaseException | None) -> bool:
    return exc is not None and ("TooLarge" in type(exc).__name__ or "too large" in str(exc).lower())


def _metadata_only(value: bytes) -> bytes:
    """A dead letter without its key and payload bytes (the broker refused even the truncated one)."""
    letter = decode_event(value, DeadLetter, max_bytes=len(value))
    return encode_event(letter.model_copy(update={"payload_b64": "", "key_b64": None, "truncated": True}))


class DeadLetterQueue:
    """The dead-letter side of one consumer of ``source_topic``.

    :meth:`send` never raises: a letter that would be larger than ``max_letter_bytes`` is truncated
    (the first ``keep_bytes`` of the original, its length and SHA-256, ``truncated=true``), and a send
    the producer refuses is kept for :meth:`flush`, which retries every unacknowledged letter with
    exponential backoff until the broker takes it (the source partition waits meanwhile).

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
    max_letter_bytes
        Largest encoded letter sent whole; below the producer's ``max_request_size`` (1 MiB) and a
        broker's default ``message.max.bytes``.
    keep_bytes
        Bytes of the original key and value a truncated letter keeps.
    backoff_s
        First and longest wait between two attempts of :meth:`flush`.
    """

    def __init__(
        self,
        producer: EventProducer,
        bootstrap_servers: str,
        consumer: str,
        source_topic: str,
        *,
        max_letter_bytes: int = 768 * 1024,
        keep_bytes: int = DLQ_KEEP_BYTES,
        backoff_s: tuple[float, float] = (0.2, 10.0),
    ) -> None:
        self._producer = producer
        self._bootstrap = bootstrap_servers
        self.consumer = consumer
        self.source_topic = source_topic
        self.topic = dlq_topic(source_topic)
        self.max_letter_bytes = max_letter_bytes
        self.keep_bytes = keep_bytes
        self.backoff_s = backoff_s
        self._partitions = partition_count(bootstrap_servers, self.topic)
        self._lock = threading.Lock()
        self._pending: list[_Pending] = []
        self._next: dict[int, int] = {}  # source partition -> next DLQ offset known to hold its letters
        self._already: set[tuple[int, int]] = set()  # (source partition, offset) dead-lettered, uncommitted
        self.sent = 0
        self.skipped = 0
        self.truncated = 0
        self.retries = 0

    def _dlq_partition(self, source_partition: int) -> int:
        return source_partition % self._partitions

    def letter(self, record: Any, error: str, reason: str, *, keep: int | None = None) -> DeadLetter:
        """The dead letter of ``record``, whole, or its first ``keep`` bytes when given."""
        value: bytes = record.value or b""
        key: bytes | None = record.key
        cut = keep is not None and (len(value) > keep or (key is not None and len(key) > keep))
        if keep is not None:
            value = value[:keep]
            key = None if key is None else key[:keep]
        return DeadLetter(
            reason=reason[:_MAX_REASON],
            error=error,
            consumer=self.consumer,
            source_topic=str(record.topic),
            source_partition=int(record.partition),
            source_offset=int(record.offset),
            source_timestamp_ms=getattr(record, "timestamp", None),
            key_b64=None if key is None else base64.b64encode(key).decode("ascii"),
            payload_b64=base64.b64encode(value).decode("ascii"),
            failed_at=now_utc(),
            payload_bytes=len(record.value or b""),
            payload_sha256=hashlib.sha256(record.value or b"").hexdigest(),
            truncated=cut,
        )

    def send(self, record: Any, error: str, reason: str) -> bool:
        """Dead-letter one source record (a kafka-python ``ConsumerRecord``); never raises.

        Returns ``False`` when it was already dead-lettered before a crash (nothing is sent again).
        """
        coords = (int(record.partition), int(record.offset))
        with self._lock:
            if coords in self._already:
                self.skipped += 1
                return False
        value = encode_event(self.letter(record, error, reason))
        if len(value) > self.max_letter_bytes:
            value = encode_event(self.letter(record, error, reason, keep=self.keep_bytes))
            self.truncated += 1
        key = record.key if record.key is None or len(record.key) <= _MAX_KEY else None
        pending = _Pending(coords[0], key, value, self._dlq_partition(coords[0]))
        self._try_send(pending)
        with self._lock:
            self._pending.append(pending)
            self._already.add(coords)
            self.sent += 1
        log.warning("dead-lettered %s[%d]@%d: %s", record.topic, coords[0], coords[1], reason[:500])
        return True

    def _try_send(self, pending: _Pending) -> None:
        try:
            pending.future = self._producer.send(
                self.topic, pending.key, pending.value, partition=pending.dlq_partition
            )
        except Exception as exc:  # e.g. no metadata while the broker is away: flush() retries it
            pending.future = None
            pending.error = exc

    def flush(self, stop: threading.Event | None = None) -> None:
        """Wait until every dead letter sent so far is acknowledged (call before committing).

        A letter the broker does not take is sent again after a backoff (doubling up to
        ``backoff_s[1]``) until it is taken; a letter refused for its size is sent again without
        its payload (metadata only). Only ``stop`` ends the retries.

        Raises
        ------
        BrokerError
            ``stop`` was set while letters were still unacknowledged; the caller must not commit.
        """
        with self._lock:
            pending, self._pending = self._pending, []
        delay = self.backoff_s[0]
        while pending:
            with contextlib.suppress(Exception):
                self._producer.flush(timeout_s=max(delay, 1.0))
            failed: list[_Pending] = []
            for p in pending:
                if p.future is not None:
                    try:
                        meta = p.future.get(timeout=max(delay, 1.0))
                    except Exception as exc:
                        p.error = exc
                    else:
                        with self._lock:
                            nxt = int(meta.offset) + 1
                            if nxt > self._next.get(p.source_partition, -1):
                                self._next[p.source_partition] = nxt
                        continue
                failed.append(p)
            if not failed:
                return
            if stop is not None and stop.is_set():
                with self._lock:
                    self._pending = failed + self._pending
                raise BrokerError(
                    f"{len(failed)} dead letters not written to {self.topic}: {failed[0].error}"
                )
            log.warning(
                "%d dead letters not written to %s (%s); retrying in %.1fs",
                len(failed),
                self.topic,
                failed[0].error,
                delay,
            )
            if stop is not None:
                stop.wait(delay)
            else:
                time.sleep(delay)
            delay = min(delay * 2, self.backoff_s[1])
            for p in failed:
                if _too_large(p.error):
                    p.value = _metadata_only(p.value)
                self.retries += 1
                self._try_send(p)
            pending = failed

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
            allow_auto_create_topics=False,
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
    reader = KafkaConsumer(
        dlq_topic(source_topic),
        bootstrap_servers=bootstrap_servers,
        client_id="coldstart-dlq-reader",
        auto_offset_reset="earliest",
        enable_auto_commit=False,
        allow_auto_create_topics=False,
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
