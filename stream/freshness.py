"""Freshness, measured from the outside: ``listed_at`` → the item's vector is readable from the online
store AND returned by the pool index (demo and benchmarks).

:class:`FreshnessProbe` polls the online store for the items it was told to expect (a few ms apart)
and, once a row is there, searches the pool with the row's own vector; the item counts as visible
when the search returns it.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from types import TracebackType

import numpy as np

from exploration.pool.base import CandidatePool, PoolSpace
from feature_repo.base import FeatureStore


class FreshnessProbe:
    """Watch for expected items and record ``listed_at`` → visible latencies (seconds).

    Parameters
    ----------
    store
        The online store to read (``get_items``).
    pool
        The pool index the items must be returned by (``None``: the online store alone).
    space
        Which vector of the stored row to query the pool with (the space the pool indexes).
    interval_s
        Pause between polls.
    contains
        A cheap membership test of the pool (e.g. ``ExactPool.__contains__``): only items the pool
        already holds are read from the store, so probing does not load the pipeline it measures.
    """

    def __init__(
        self,
        store: FeatureStore,
        pool: CandidatePool | None = None,
        *,
        space: PoolSpace = "content",
        interval_s: float = 0.005,
        chunk: int = 256,
        contains: Callable[[str], bool] | None = None,
    ) -> None:
        self.contains = contains
        self.store = store
        self.pool = pool
        self.space = space
        self.interval_s = interval_s
        self.chunk = chunk
        self._pending: dict[str, datetime] = {}
        self._seen: dict[str, float] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="freshness-probe", daemon=True)
        self.error: BaseException | None = None

    def expect(self, item_id: str, listed_at: datetime) -> None:
        """Start waiting for ``item_id`` (``listed_at`` timezone-aware)."""
        with self._lock:
            if item_id not in self._seen:
                self._pending[item_id] = listed_at

    @property
    def latencies(self) -> list[float]:
        """Seconds from listed_at to visible, one per item seen so far."""
        with self._lock:
            return list(self._seen.values())

    @property
    def pending(self) -> int:
        """Items expected but not visible yet."""
        with self._lock:
            return len(self._pending)

    def percentiles(self) -> tuple[float | None, float | None]:
        """(p50, p99) of the latencies, in seconds (``None`` when nothing was seen)."""
        lat = self.latencies
        if not lat:
            return None, None
        arr = np.asarray(lat, dtype=np.float64)
        return float(np.percentile(arr, 50)), float(np.percentile(arr, 99))

    def wait(self, timeout_s: float) -> bool:
        """Block until nothing is pending (``True``) or ``timeout_s`` passes (``False``)."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.error is not None:
                raise self.error
            if self.pending == 0:
                return True
            time.sleep(0.02)
        return self.pending == 0

    def _loop(self) -> None:
        try:
            while not self._stop.is_set():
                with self._lock:
                    ids = list(self._pending)[: self.chunk]
                if ids:
                    self._check(ids)
                self._stop.wait(self.interval_s)
        except BaseException as exc:  # surfaced by wait()
            self.error = exc

    def _check(self, ids: Sequence[str]) -> None:
        if self.contains is not None:
            ids = [i for i in ids if self.contains(i)]
            if not ids:
                return
        rows = self.store.get_items(ids)
        now = datetime.now(UTC)
        visible: list[str] = []
        for item_id, row in rows.items():
            if self.pool is not None:
                query = row.item_vector if self.space == "item" else row.content_vector
                hits = self.pool.search(np.asarray(query, dtype=np.float32), k=5)
                if item_id not in {h.item_id for h in hits}:
                    continue
            visible.append(item_id)
        with self._lock:
            for item_id in visible:
                listed = self._pending.pop(item_id, None)
                if listed is not None:
                    self._seen[item_id] = (now - listed).total_seconds()

    def start(self) -> FreshnessProbe:
        """Start polling in a background thread."""
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop polling."""
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(10)

    def __enter__(self) -> FreshnessProbe:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()
