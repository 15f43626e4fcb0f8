"""Decisions into the offline store from a background writer (:class:`OfflineDecisionSink`), or into a
list (:class:`MemoryDecisionSink`)."""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Sequence
from typing import Protocol

from coldstart.decisions import Decision, LoggedDecision, as_decision
from exploration.sinks.base import DecisionSink

log = logging.getLogger(__name__)


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
        self._queue: queue.Queue[LoggedDecision | None] = queue.Queue()
        self._idle = threading.Condition()
        self._in_flight = 0
        self._thread = threading.Thread(target=self._run, name="offline-decisions", daemon=True)
        self._thread.start()

    def publish(self, decision: LoggedDecision) -> None:
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
            valid: list[Decision] = []
            for d in batch:  # a draft that breaks a rule of Decision is counted, not the batch
                try:
                    valid.append(as_decision(d))
                except ValueError as exc:
                    self.errors += 1
                    log.error("decision %s not logged offline: %s", d.decision_id, exc)
            try:
                if valid:
                    self.writer.write_decisions(valid)
                self.written += len(valid)
            except Exception as exc:  # the writer's errors must not kill the thread
                self.errors += len(valid)
                log.error("offline write of %d decisions failed: %s", len(valid), exc)
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

    def publish(self, decision: LoggedDecision) -> None:
        self.decisions.append(as_decision(decision))
