"""Where decisions go: the decision log's sinks (decisions topic, offline store).

A sink's ``publish`` must not block a request: the Kafka sink hands the record to the producer's
buffer; the offline sink queues it for a background writer thread that writes micro-batches.
"""

from __future__ import annotations

import logging
import queue
import threading
from abc import ABC, abstractmethod
from collections.abc import Sequence
from typing import Any, Protocol

from exploration.records import Decision

log = logging.getLogger(__name__)


class DecisionSink(ABC):
    """Receives every decision the slot service makes."""

    @abstractmethod
    def publish(self, decision: Decision) -> None:
        """Hand over one decision (non-blocking)."""

    def flush(self, timeout_s: float = 10.0) -> None:  # noqa: B027 - optional hook
        """Block until everything published so far is durable."""

    def close(self) -> None:  # noqa: B027 - optional hook
        """Flush and release resources."""


class DecisionProducer(Protocol):
    """What the Kafka sink needs of ``stream.producer.EventProducer``."""

    def publish_decision(self, decision: Any) -> Any: ...
    def flush(self, timeout_s: float | None = None) -> None: ...


class KafkaDecisionSink(DecisionSink):
    """Publishes to the ``decisions`` topic (key ``user_id``) from a background thread.

    The request path only enqueues: serialisation and the producer (whose ``send`` can block while
    its buffer is full) run on the sink's thread. When ``max_queue`` decisions are waiting, new ones
    are dropped and counted in ``dropped`` (the API must not stall on a slow broker; the offline sink,
    when enabled, still records them).
    """

    def __init__(self, producer: DecisionProducer, *, max_queue: int = 10_000) -> None:
        self.producer = producer
        self.errors = 0
        self.dropped = 0
        self._queue: queue.Queue[Decision | None] = queue.Queue(maxsize=max_queue)
        self._thread = threading.Thread(target=self._run, name="kafka-decisions", daemon=True)
        self._thread.start()

    def publish(self, decision: Decision) -> None:
        try:
            self._queue.put_nowait(decision)
        except queue.Full:
            self.dropped += 1
            if self.dropped % 1000 == 1:
                log.error("decision queue full: %d decisions dropped so far", self.dropped)

    def _run(self) -> None:
        while True:
            decision = self._queue.get()
            try:
                if decision is None:
                    return
                fut = self.producer.publish_decision(decision)
                add = getattr(fut, "add_errback", None)
                if add is not None:
                    add(self._failed)
            except Exception as exc:
                self._failed(exc)
            finally:
                self._queue.task_done()

    def _failed(self, exc: BaseException) -> None:
        self.errors += 1
        log.error("decision not published: %s", exc)

    def flush(self, timeout_s: float = 10.0) -> None:
        self._queue.join()
        self.producer.flush(timeout_s)

    def close(self) -> None:
        self.flush()
        self._queue.put(None)
        self._thread.join(timeout=10.0)


class DecisionWriter(Protocol):
    """What the offline sink needs of ``feature_repo.offline.base.OfflineLog``."""

    def write_decisions(self, decisions: Sequence[Decision]) -> int: ...


class OfflineDecisionSink(DecisionSink):
    """Writes decisions to the offline store in micro-batches from a background thread.

    Parameters
    ----------
    writer
        The offline log (idempotent on ``decision_id``).
    max_batch
        Most decisions per write.
    linger_s
        How long a batch waits for more decisions after its first.
    """

    def __init__(self, writer: DecisionWriter, *, max_batch: int = 512, linger_s: float = 1.0) -> None:
        self.writer = writer
        self.max_batch = max_batch
        self.linger_s = linger_s
        self.errors = 0
        self.written = 0
        self._queue: queue.Queue[Decision | None] = queue.Queue()
        self._idle = threading.Condition()
        self._in_flight = 0
        self._thread = threading.Thread(target=self._run, name="offline-decisions", daemon=True)
        self._thread.start()

    def publish(self, decision: Decision) -> None:
        with self._idle:
            self._in_flight += 1
        self._queue.put(decision)

    def _run(self) -> None:
        stop = False
        while not stop:
            first = self._queue.get()
            if first is None:
                break
            batch = [first]
            try:
                while len(batch) < self.max_batch:
                    nxt = self._queue.get(timeout=self.linger_s)
                    if nxt is None:
                        stop = True
                        break
                    batch.append(nxt)
            except queue.Empty:
                pass
            try:
                self.writer.write_decisions(batch)
                self.written += len(batch)
            except Exception as exc:  # the writer's errors must not kill the thread
                self.errors += len(batch)
                log.error("offline write of %d decisions failed: %s", len(batch), exc)
            with self._idle:
                self._in_flight -= len(batch)
                self._idle.notify_all()

    def flush(self, timeout_s: float = 10.0) -> None:
        with self._idle:
            self._idle.wait_for(lambda: self._in_flight == 0, timeout=timeout_s)

    def close(self) -> None:
        self.flush()
        self._queue.put(None)
        self._thread.join(timeout=10.0)


class MemoryDecisionSink(DecisionSink):
    """Keeps decisions in a list (replays, notebooks and tests)."""

    def __init__(self) -> None:
        self.decisions: list[Decision] = []

    def publish(self, decision: Decision) -> None:
        self.decisions.append(decision)
