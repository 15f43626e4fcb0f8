"""The consumer interface: a consumer-group member that processes micro-batches in a pipeline.

:meth:`MicroBatchConsumer.run` owns the rules every coldstart consumer must follow; subclasses only
say how to parse a record and how to process a batch (river's ``pull``/``_pull`` split):

- micro-batches of at most ``max_batch_size`` records, waiting at most ``linger_ms`` after the first;
- a record that cannot be parsed (or that a later stage rejects) goes to the dead-letter queue with
  its reason; it never stops the consumer;
- stages overlap (``_prepare`` on the polling thread, ``_compute`` on ``compute_threads`` threads,
  ``_write`` on one thread, ``pipeline_depth`` batches in flight); batches are written in poll order
  and offsets are committed in order, only after the batch's write returned and its dead letters were
  flushed;
- on a rebalance the in-flight batches are finished and committed before the partitions go;
- :meth:`stop` (e.g. from a SIGTERM handler) finishes the in-flight batches, commits, and leaves the
  group. A crash (or SIGKILL) commits nothing more: the uncommitted records are re-delivered, so
  ``_write`` must be idempotent.
"""

from __future__ import annotations

import logging
import threading
import time
from abc import ABC, abstractmethod
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from kafka import ConsumerRebalanceListener
from kafka.errors import KafkaError
from kafka.structs import OffsetAndMetadata, TopicPartition

from coldstart.errors import InvalidInputError
from stream.config import KafkaSettings
from stream.dlq import DeadLetterQueue
from stream.link import TopicKeeper, group_consumer
from stream.metrics import ConsumerMetrics

log = logging.getLogger(__name__)

E = TypeVar("E")
P = TypeVar("P")
C = TypeVar("C")


@dataclass(frozen=True)
class Envelope(Generic[E]):
    """A parsed event with the Kafka record it came from (``record`` is a kafka-python ConsumerRecord)."""

    record: Any
    event: E


@dataclass(frozen=True)
class Rejection:
    """A record a stage gave up on: it goes to the dead-letter queue."""

    record: Any
    error: str
    reason: str


@dataclass
class _InFlight:
    offsets: dict[Any, int]  # TopicPartition -> next offset to commit
    future: Future[list[Rejection]]
    size: int


@dataclass
class BatchSettings:
    """Knobs of the micro-batch loop (see ``stream.config.EncodeWorkerSettings``)."""

    group_id: str
    max_batch_size: int = 32
    linger_ms: int = 50
    pipeline_depth: int = 2
    compute_threads: int = 1
    max_poll_interval_ms: int = 300_000
    poll_timeout_ms: int = 200
    fetch_max_wait_ms: int = 500
    progress_every_s: float = 10.0


class MicroBatchConsumer(ABC, Generic[E, P, C]):
    """A member of a consumer group reading ``topic`` in micro-batches.

    Parameters
    ----------
    bootstrap_servers
        Kafka address.
    topic
        The topic to consume.
    kafka
        Connection settings (group timeouts, client id).
    batch
        Micro-batch and pipeline settings.
    dlq
        The dead-letter queue of this consumer.
    """

    def __init__(
        self,
        bootstrap_servers: str,
        topic: str,
        kafka: KafkaSettings,
        batch: BatchSettings,
        dlq: DeadLetterQueue,
    ) -> None:
        self.bootstrap_servers = bootstrap_servers
        self.topic = topic
        self.kafka = kafka
        self.batch = batch
        self.dlq = dlq
        self.metrics = ConsumerMetrics()
        self._stop = threading.Event()
        self._inflight: deque[_InFlight] = deque()
        self._consumer: Any = None
        self._to_recover: list[Any] = []
        # the first failure of a stage (e.g. a store write): once set, nothing more is committed
        self._error: BaseException | None = None
        self._joined = False
        self._assigned: frozenset[int] = frozenset()
        # a broker that came back empty has none of our topics: the keeper recreates them
        self._keeper = TopicKeeper(bootstrap_servers, kafka.partitions)
        self._compute_pool = ThreadPoolExecutor(
            batch.compute_threads, thread_name_prefix=f"{type(self).__name__}-compute"
        )
        self._write_pool = ThreadPoolExecutor(1, thread_name_prefix=f"{type(self).__name__}-write")
        self._unwritten: deque[
            tuple[Future[tuple[C, list[Rejection]]], list[Rejection], Future[list[Rejection]]]
        ] = deque()
        self._unwritten_lock = threading.Lock()

    # ---------------------------------------------------------------- what subclasses provide

    @abstractmethod
    def _parse(self, record: Any) -> E:
        """Decode one record; raise :class:`InvalidInputError` to dead-letter it (``.error`` = class)."""

    @abstractmethod
    def _prepare(self, batch: list[Envelope[E]]) -> P:
        """Start the batch's I/O (polling thread; must not block long)."""

    @abstractmethod
    def _compute(self, prepared: P) -> tuple[C, list[Rejection]]:
        """The batch's CPU work (compute thread); records it cannot handle are returned as rejections."""

    @abstractmethod
    def _write(self, computed: list[C]) -> None:
        """Persist one or more consecutive batches at once (write thread).

        Must be idempotent: a crash re-delivers every uncommitted batch.
        """

    # ---------------------------------------------------------------- the loop

    def stop(self) -> None:
        """Ask :meth:`run` to finish the in-flight batches, commit, and return (thread/signal safe)."""
        self._stop.set()

    @property
    def joined(self) -> bool:
        """Whether the group has assigned partitions to this consumer at least once."""
        return self._joined

    @property
    def assigned_partitions(self) -> frozenset[int]:
        """The partitions of ``topic`` this consumer owns right now (empty during a rebalance)."""
        return self._assigned

    @property
    def stopping(self) -> bool:
        """Whether :meth:`stop` was called."""
        return self._stop.is_set()

    def run(self, *, idle_exit_s: float | None = None) -> ConsumerMetrics:
        """Consume until :meth:`stop` is called (or nothing arrived for ``idle_exit_s`` seconds).

        Raises
        ------
        BrokerError
            The broker is unreachable, or a batch could not be written (nothing is committed for it;
            its records will be re-delivered to the group).
        """

        owner = self

        class _Listener(ConsumerRebalanceListener):  # type: ignore[misc]
            def on_partitions_revoked(self, revoked: Any) -> None:
                # finish and commit the in-flight batches before the partitions go; after a failure
                # nothing more is committed (the new owner re-processes those records). An error
                # raised here would reach run() as a generic KafkaError: keep it for run() instead.
                if owner._error is None:
                    try:
                        owner._drain()
                    except BaseException as exc:
                        owner._error = exc
                owner._assigned = frozenset()

            def on_partitions_assigned(self, assigned: Any) -> None:
                owner._to_recover.extend(assigned)
                owner._assigned = frozenset(tp.partition for tp in assigned)
                owner._joined = True
                log.info("assigned %s", sorted(tp.partition for tp in assigned))

        self._consumer = group_consumer(
            self.bootstrap_servers,
            self.kafka,
            self.batch.group_id,
            max_poll_interval_ms=self.batch.max_poll_interval_ms,
            max_poll_records=self.batch.max_batch_size,
            fetch_max_wait_ms=self.batch.fetch_max_wait_ms,
            request_timeout_ms=max(self.kafka.request_timeout_ms, self.kafka.session_timeout_ms + 5000),
        )
        self._consumer.subscribe([self.topic], listener=_Listener())
        last_data = time.monotonic()
        last_progress = time.monotonic()
        failed = False
        try:
            while not self._stop.is_set():
                records = self._poll_batch()
                self._keeper.tick()
                if self._error is not None:
                    raise self._error
                self._complete(block=False)
                now = time.monotonic()
                if now - last_progress >= self.batch.progress_every_s:
                    last_progress = now
                    log.info("progress %s", self.metrics.snapshot())
                if not records:
                    if not self._joined:
                        last_data = now  # the idle clock starts once the group has given us partitions
                    elif idle_exit_s is not None and not self._inflight and now - last_data >= idle_exit_s:
                        break
                    continue
                last_data = now
                self._submit(records)
                while len(self._inflight) >= self.batch.pipeline_depth:
                    self._complete(block=True)
            self._drain()
        except BaseException as exc:
            failed = True
            if self._error is None:
                self._error = exc  # leaving the group (revoke callback) must not drain or commit
            raise
        finally:
            self._shutdown(commit=not failed)
        return self.metrics

    def _poll_batch(self) -> list[Any]:
        consumer = self._consumer
        limit = self.batch.max_batch_size
        records = self._flatten(consumer.poll(timeout_ms=self.batch.poll_timeout_ms, max_records=limit))
        self._recover_assigned()
        if records:
            deadline = time.monotonic() + self.batch.linger_ms / 1000.0
            while len(records) < limit and not self._stop.is_set():
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    break
                more = consumer.poll(
                    timeout_ms=max(1, int(remaining * 1000)), max_records=limit - len(records)
                )
                records.extend(self._flatten(more))
                self._recover_assigned()
        if records:
            # a rebalance during the linger may have taken partitions away: leave those to the new owner
            owned = consumer.assignment()
            records = [r for r in records if self._tp(r) in owned]
        return records

    @staticmethod
    def _flatten(polled: dict[Any, list[Any]]) -> list[Any]:
        return [rec for recs in polled.values() for rec in recs]

    @staticmethod
    def _tp(record: Any) -> Any:

        return TopicPartition(record.topic, record.partition)

    def _recover_assigned(self) -> None:
        if not self._to_recover:
            return
        assigned, self._to_recover = self._to_recover, []
        rows: list[tuple[int, int | None, str]] = []
        for tp in assigned:
            committed = self._consumer.committed(tp, metadata=True)
            if committed is None:
                rows.append((tp.partition, None, ""))
            else:
                rows.append((tp.partition, int(committed.offset), committed.metadata or ""))
        found = self.dlq.recover(rows)
        if found:
            self.metrics.add(dead_letters_deduplicated=found)

    def _submit(self, records: list[Any]) -> None:
        offsets: dict[Any, int] = {}
        envelopes: list[Envelope[E]] = []
        rejected: list[Rejection] = []
        for rec in records:
            tp = self._tp(rec)
            offsets[tp] = max(offsets.get(tp, 0), int(rec.offset) + 1)
            try:
                envelopes.append(Envelope(rec, self._parse(rec)))
            except InvalidInputError as exc:
                rejected.append(Rejection(rec, getattr(exc, "error", "invalid_event"), str(exc)))
            except Exception as exc:  # whatever a record holds, it must not stop the partition
                log.exception("parsing %s[%d]@%d failed", rec.topic, rec.partition, rec.offset)
                rejected.append(Rejection(rec, "parse_failed", f"{type(exc).__name__}: {exc}"))
        self.metrics.add(records=len(records), batches=1)
        prepared = self._prepare(envelopes)
        computed = self._compute_pool.submit(self._compute, prepared)
        written: Future[list[Rejection]] = Future()
        with self._unwritten_lock:
            self._unwritten.append((computed, rejected, written))
        self._write_pool.submit(self._write_stage)
        self._inflight.append(_InFlight(offsets, written, len(records)))

    def _write_stage(self) -> None:
        """Write the oldest unwritten batch, together with every later one already computed.

        Store writes have a fixed cost per call; when the writer falls behind, consecutive batches
        are coalesced into one ``_write`` call. Each batch's future still completes on its own.
        """
        with self._unwritten_lock:
            if not self._unwritten:
                return  # coalesced into an earlier call
            head = self._unwritten[0]
        try:
            head[0].result()
        except BaseException as exc:
            with self._unwritten_lock:
                self._unwritten.popleft()
            head[2].set_exception(exc)
            return
        group: list[tuple[Future[tuple[C, list[Rejection]]], list[Rejection], Future[list[Rejection]]]] = []
        with self._unwritten_lock:
            while self._unwritten and (not group or self._unwritten[0][0].done()):
                if group and self._unwritten[0][0].exception() is not None:
                    break  # a failed batch is handled by its own task
                group.append(self._unwritten.popleft())
        results = [g[0].result() for g in group]
        try:
            self._write([r[0] for r in results])
        except BaseException as exc:
            for g in group:
                g[2].set_exception(exc)
            return
        for g, (_, more) in zip(group, results, strict=True):
            g[2].set_result(g[1] + more)

    def _complete(self, *, block: bool) -> None:
        """Commit finished batches, oldest first (never a batch whose predecessor is unfinished)."""
        while self._inflight and (block or self._inflight[0].future.done()):
            head = self._inflight[0]
            rejections = head.future.result()  # raises if the write failed: nothing more is committed
            self._inflight.popleft()
            for rej in rejections:
                if self.dlq.send(rej.record, rej.error, rej.reason):
                    self.metrics.add(dead_lettered=1)
                else:
                    self.metrics.add(dead_letters_deduplicated=1)
            self.dlq.flush(self._stop)  # retries while the DLQ is unreachable; the partition waits
            self._commit(head.offsets)
            block = False

    def _commit(self, offsets: dict[Any, int]) -> None:

        owned = self._consumer.assignment()
        to_commit = {
            tp: OffsetAndMetadata(off, self.dlq.commit_metadata(tp.partition), -1)
            for tp, off in offsets.items()
            if tp in owned
        }
        if not to_commit:
            return
        try:
            self._consumer.commit(to_commit)
        except KafkaError as exc:
            # typically a rebalance: the new owner re-processes these records (writes are idempotent)
            self.metrics.add(commit_failures=1)
            log.warning("offset commit failed (%s); the records will be re-delivered", exc)
            return
        self.metrics.add(commits=1)
        for tp, om in to_commit.items():
            self.dlq.committed(tp.partition, om.offset)

    def _drain(self) -> None:
        self._complete(block=True)

    def _shutdown(self, *, commit: bool) -> None:
        try:
            if commit:
                self._drain()
        finally:
            self._compute_pool.shutdown(wait=True, cancel_futures=True)
            self._write_pool.shutdown(wait=True, cancel_futures=True)
            if self._consumer is not None:
                self._consumer.close(autocommit=False)
                self._consumer = None
            self._close()

    def _close(self) -> None:
        """Release subclass resources (called once when :meth:`run` returns)."""
