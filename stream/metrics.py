"""Progress counters of a stream consumer (thread-safe), with freshness percentiles."""

from __future__ import annotations

import threading
import time
from collections import Counter, deque
from dataclasses import dataclass, field
from typing import Any

import numpy as np


@dataclass
class ConsumerMetrics:
    """Counters a consumer updates as it goes; :meth:`snapshot` reads them consistently.

    ``freshness`` samples are seconds from an event's own timestamp (``listed_at``) to the moment its
    row was written to the store; the last ``max_samples`` are kept.
    """

    max_samples: int = 100_000
    records: int = 0
    batches: int = 0
    written: int = 0
    dead_lettered: int = 0
    dead_letters_deduplicated: int = 0
    commits: int = 0
    commit_failures: int = 0
    image_failures: Counter[str] = field(default_factory=Counter)
    text_only: int = 0
    encode_s: float = 0.0
    write_s: float = 0.0
    started_at: float = field(default_factory=time.monotonic)
    _freshness: deque[float] = field(default_factory=deque)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def add(self, **deltas: float) -> None:
        """Increment counters by name, e.g. ``add(records=32, batches=1)``."""
        with self._lock:
            for name, value in deltas.items():
                setattr(self, name, getattr(self, name) + value)

    def image_failed(self, reason: str) -> None:
        """Count one image that could not be fetched (by reason)."""
        with self._lock:
            self.image_failures[reason] += 1

    def observe_freshness(self, seconds: list[float]) -> None:
        """Record listed_at → written latencies (seconds)."""
        with self._lock:
            self._freshness.extend(seconds)
            while len(self._freshness) > self.max_samples:
                self._freshness.popleft()

    def snapshot(self) -> dict[str, Any]:
        """A JSON-friendly copy of every counter plus throughput and freshness percentiles."""
        with self._lock:
            elapsed = max(time.monotonic() - self.started_at, 1e-9)
            fresh = np.asarray(self._freshness, dtype=np.float64)
            return {
                "records": self.records,
                "batches": self.batches,
                "written": self.written,
                "dead_lettered": self.dead_lettered,
                "dead_letters_deduplicated": self.dead_letters_deduplicated,
                "commits": self.commits,
                "commit_failures": self.commit_failures,
                "image_failures": dict(self.image_failures),
                "text_only": self.text_only,
                "encode_s": round(self.encode_s, 3),
                "write_s": round(self.write_s, 3),
                "elapsed_s": round(elapsed, 3),
                "records_per_s": round(self.records / elapsed, 2),
                "freshness_p50_s": float(np.percentile(fresh, 50)) if fresh.size else None,
                "freshness_p99_s": float(np.percentile(fresh, 99)) if fresh.size else None,
            }
