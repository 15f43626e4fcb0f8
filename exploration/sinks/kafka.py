"""The decisions topic from a thread of the serving process (:class:`KafkaDecisionSink`)."""

from __future__ import annotations

import logging
import queue
import threading
import time
from typing import Any, Protocol

from coldstart.decisions import Decision, LoggedDecision, as_decision
from exploration.sinks.base import DecisionSink, log_drops

log = logging.getLogger(__name__)


class DecisionProducer(Protocol):
    """What the Kafka sink needs of ``stream.producer.EventProducer``."""

    def publish_decision(self, decision: Decision) -> Any: ...
    def flush(self, timeout_s: float | None = None) -> None: ...


class KafkaDecisionSink(DecisionSink):
    """Publishes to the ``decisions`` topic (key ``user_id``) from a background thread.

    The request path only enqueues (O(1), never blocks): serialisation and the producer (whose
    ``send`` can block while its buffer is full) run on the sink's thread, which hands decisions to the
    producer in bursts of up to ``max_batch`` gathered for at most ``linger_s``, so that they share
    one produce request (the per-request cost of the Kafka client is several times its per-record
    cost). When ``max_queue`` decisions are waiting, new ones are dropped and counted in ``dropped``
    (the API must not stall on a slow broker; the offline sink, when enabled, still records them).

    Parameters
    ----------
    producer
        ``stream.producer.EventProducer`` (or anything with ``publish_decision`` and ``flush``).
    max_queue
        Bound of the hand-over queue, in decisions.
    max_batch
        Most decisions handed to the producer in one burst.
    linger_s
        How long a burst waits for more decisions after its first, in seconds.
    """

    def __init__(
        self,
        producer: DecisionProducer,
        *,
        max_queue: int = 10_000,
        max_batch: int = 64,
        linger_s: float = 0.1,
    ) -> None:
        self.producer = producer
        self.max_batch = max_batch
        self.linger_s = linger_s
        self.errors = 0
        self.dropped = 0
        self.published = 0
        self._queue: queue.Queue[LoggedDecision | None] = queue.Queue(maxsize=max_queue)
        self._thread = threading.Thread(target=self._run, name="kafka-decisions", daemon=True)
        self._thread.start()

    def publish(self, decision: LoggedDecision) -> None:
        try:
            self._queue.put_nowait(decision)
        except queue.Full:
            self.dropped += 1
            log_drops(self.dropped, 1)

    def _next_batch(self) -> list[LoggedDecision | None]:
        batch = [self._queue.get()]
        deadline = time.monotonic() + self.linger_s
        while len(batch) < self.max_batch and batch[-1] is not None:
            try:
                batch.append(self._queue.get(timeout=max(0.0, deadline - time.monotonic())))
            except queue.Empty:
                break
        return batch

    def _run(self) -> None:
        while True:
            batch = self._next_batch()
            for decision in batch:
                try:
                    if decision is None:
                        continue
                    fut = self.producer.publish_decision(as_decision(decision))
                    self.published += 1
                    add = getattr(fut, "add_errback", None)
                    if add is not None:
                        add(self._failed)
                except Exception as exc:
                    self._failed(exc)
                finally:
                    self._queue.task_done()
            if batch[-1] is None:
                return

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
