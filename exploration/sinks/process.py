"""The decisions topic from a child process that owns its own Kafka producer
(:class:`ProcessKafkaDecisionSink`, the API's default: the Kafka client's Python work then stays off
the serving process's GIL)."""

from __future__ import annotations

import logging
import multiprocessing
import os
import queue
import threading
import time
from collections.abc import Callable
from typing import Any, Protocol

from coldstart.decisions import LoggedDecision, decision_json
from coldstart.errors import InvalidInputError
from coldstart.process import die_with_parent
from exploration.sinks.base import DecisionSink, log_drops

log = logging.getLogger(__name__)


class _BytesProducer(Protocol):
    """What the child process of :class:`ProcessKafkaDecisionSink` needs of ``EventProducer``."""

    def send(self, topic: str, key: str | bytes | None, value: bytes) -> Any: ...
    def flush(self, timeout_s: float | None = None) -> None: ...
    def close(self, timeout_s: float = 10.0) -> None: ...


def _lower_priority(niceness: int, idle_class: bool) -> None:
    """Lower the calling thread's CPU priority (and that of the threads it starts afterwards).

    ``idle_class``: the ``SCHED_IDLE`` scheduling class where the OS has it (Linux): the thread runs
    only on CPU time no normal thread wants, and a waking normal thread preempts it at once. Otherwise,
    or if refused, ``niceness`` is added to the nice value.
    """
    if idle_class and hasattr(os, "SCHED_IDLE"):
        try:
            os.sched_setscheduler(0, os.SCHED_IDLE, os.sched_param(0))
            return
        except OSError as exc:
            log.warning("SCHED_IDLE refused (%s); using nice(%d)", exc, niceness)
    if niceness:
        try:
            os.nice(niceness)
        except OSError as exc:
            log.warning("nice(%d) refused: %s", niceness, exc)


def _produce_loop(
    factory: Callable[[], _BytesProducer],
    topic: str,
    inbox: Any,
    acks: Any,
    niceness: int = 0,
    idle_class: bool = False,
    parent_pid: int | None = None,
) -> None:  # pragma: no cover - runs in the child process (covered through the sink's tests)
    die_with_parent(parent_pid)  # a SIGKILLed API leaves no decision-log process behind
    _lower_priority(niceness, idle_class)  # before the producer starts its network thread
    producer = factory()
    errors = [0]
    broken = threading.Event()  # a send failed: the next burst gets a new producer (see below)
    rebuilt_at = 0.0

    def failed(exc: BaseException) -> None:
        errors[0] += 1
        broken.set()
        log.error("decision not published: %s", exc)

    while True:
        msg = inbox.get()
        kind = msg[0]
        if broken.is_set() and time.monotonic() - rebuilt_at >= 1.0:
            # a broker that restarted keeps refusing a producer of the old session (seen: UnknownError
            # for every batch after an empty embedded broker came back): start a new one, at most 1/s
            broken.clear()
            rebuilt_at = time.monotonic()
            try:
                old, producer = producer, factory()
                threading.Thread(target=old.close, args=(1.0,), daemon=True).start()
            except Exception as exc:
                failed(exc)
        if kind == "d":  # a burst of (key, decision): one produce request carries them all
            for key, decision in msg[1]:
                try:
                    fut = producer.send(topic, key, decision_json(decision))
                    add = getattr(fut, "add_errback", None)
                    if add is not None:
                        add(failed)
                except Exception as exc:
                    failed(exc)
        elif kind == "flush":
            try:
                producer.flush(msg[2])
            except Exception as exc:
                failed(exc)
            acks.put((msg[1], errors[0]))
        else:  # "close"
            try:
                producer.flush(10.0)
                producer.close()
            except Exception as exc:
                failed(exc)
            acks.put((msg[1], errors[0]))
            return


class ProcessKafkaDecisionSink(DecisionSink):
    """Publishes to ``topic`` (key ``user_id``) from a child process that owns the Kafka producer.

    The Kafka client is pure Python: run in a thread of the API process it holds the GIL for
    milliseconds per burst of decisions, which stalls requests (sequential requests: p99 15 ms with
    the in-process sink against 4 ms without a decision log). Here the request thread only appends the
    decision (a :class:`~coldstart.decisions.DecisionDraft`: a few arrays) to a burst; the child
    validates and serialises it (~0.45 ms per decision, off the API's request threads; the child runs
    at a lower priority, ``idle_class`` or ``niceness``, so this work waits for idle CPU). A burst
    goes to the child through a bounded ``multiprocessing`` queue when it holds ``max_batch``
    decisions or, from a flusher thread, ``linger_s`` after its first decision. One hand-over and
    one produce request per burst instead of per decision: the client's per-request cost (~0.4 ms of
    Python in the child, plus the broker's) dominates its per-record cost. When ``max_queue``
    decisions are waiting, new bursts are dropped and counted in ``dropped``; ``errors`` counts failed
    sends (reported at each flush).

    Parameters
    ----------
    producer_factory
        Builds the producer in the child (picklable, e.g. ``functools.partial(EventProducer, ...)``).
    topic
        The decisions topic.
    max_queue
        Bound of the hand-over queue, in decisions.
    max_batch
        Most decisions per burst.
    linger_s
        Longest a decision waits in its burst before the hand-over, seconds.
    niceness
        Added to the child's nice value (``os.nice``) when ``idle_class`` is off or unavailable: the
        decision log then takes the CPU the request handlers leave over instead of competing with
        them (its queue absorbs the delay; ``0`` = same priority as the API).
    idle_class
        Run the child in the ``SCHED_IDLE`` class where the OS has it (Linux; see
        :func:`_lower_priority`). A nice value only weighs the child's share: a nice-10 child that
        is running when a request arrives keeps its core for a while, and on 2 cores at 300
        requests/s that shows in p99 (``docs/results/slots.md``). An idle-class child
        gets the CPU the API leaves; under sustained saturation it falls behind and its queue drops
        decisions (counted in ``dropped``).
    """

    def __init__(
        self,
        producer_factory: Callable[[], _BytesProducer],
        topic: str,
        *,
        max_queue: int = 10_000,
        max_batch: int = 64,
        linger_s: float = 0.05,
        niceness: int = 10,
        idle_class: bool = True,
    ) -> None:

        if max_batch < 1:
            raise InvalidInputError("max_batch", max_batch, "must be >= 1")
        if linger_s < 0:
            raise InvalidInputError("linger_s", linger_s, "must be >= 0")
        ctx = multiprocessing.get_context("spawn")
        self.topic = topic
        self.max_batch = max_batch
        self.linger_s = linger_s
        self.dropped = 0
        self.published = 0
        self.errors = 0
        self._inbox: Any = ctx.Queue(maxsize=max(1, max_queue // max_batch))
        self._acks: Any = ctx.Queue()
        self._token = 0
        self._lock = threading.Lock()
        self._burst: list[tuple[str, LoggedDecision]] = []
        self._burst_ready = threading.Condition()
        self._handover_lock = threading.Lock()
        self._closed = False
        self._proc = ctx.Process(
            target=_produce_loop,
            args=(producer_factory, topic, self._inbox, self._acks, niceness, idle_class, os.getpid()),
            name="kafka-decisions",
            daemon=True,
        )
        self._proc.start()
        self._flusher = threading.Thread(target=self._linger_loop, name="kafka-decisions-linger", daemon=True)
        self._flusher.start()

    @property
    def pid(self) -> int | None:
        """The child process's id."""
        return self._proc.pid

    def publish(self, decision: LoggedDecision) -> None:
        # pickled as it is (a draft: a few arrays); the child validates and serialises it
        full: list[tuple[str, LoggedDecision]] | None = None
        with self._burst_ready:
            self._burst.append((decision.user_id, decision))
            if len(self._burst) >= self.max_batch:
                full, self._burst = self._burst, []
            elif len(self._burst) == 1:
                self._burst_ready.notify()  # the flusher times this burst's linger
        if full is not None:
            self._hand_over(full)

    def _hand_over(self, burst: list[tuple[str, LoggedDecision]] | None = None) -> None:
        """Put ``burst`` (default: the pending one) into the child's queue, in hand-over order."""
        with self._handover_lock:
            if burst is None:
                with self._burst_ready:
                    burst, self._burst = self._burst, []
            if not burst:
                return
            try:
                self._inbox.put_nowait(("d", burst))
                self.published += len(burst)
            except queue.Full:
                self.dropped += len(burst)
                log_drops(self.dropped, len(burst))

    def _linger_loop(self) -> None:
        while not self._closed:
            with self._burst_ready:
                while not self._burst and not self._closed:
                    self._burst_ready.wait()
            time.sleep(self.linger_s)  # more decisions join the burst meanwhile
            self._hand_over()

    def _call(self, kind: str, timeout_s: float) -> None:
        with self._lock:
            self._hand_over()
            if self._closed or not self._proc.is_alive():
                return
            self._token += 1
            token = self._token
            deadline = time.monotonic() + timeout_s
            try:
                self._inbox.put((kind, token, timeout_s), timeout=timeout_s)
                while True:
                    got, errors = self._acks.get(timeout=max(0.01, deadline - time.monotonic()))
                    self.errors = errors
                    if got == token:
                        return
            except (queue.Full, queue.Empty):
                log.error("decision producer process did not answer %s within %.1f s", kind, timeout_s)

    def flush(self, timeout_s: float = 10.0) -> None:
        self._call("flush", timeout_s)

    def close(self) -> None:
        self._call("close", 20.0)
        with self._lock:
            self._closed = True
        with self._burst_ready:
            self._burst_ready.notify_all()
        self._flusher.join(timeout=5.0)
        self._proc.join(timeout=5.0)
        if self._proc.is_alive():
            self._proc.terminate()
        self._inbox.close()
        self._acks.close()
