"""Exposure pacing: every new item gets a fair number of impressions, then graduates.

Each cold item should reach ``target_impressions`` within ``window_hours`` of listing. The schedule is
linear with a margin: at age ``a`` an item is expected to have ``target * min(1, a / (f * window))``
impressions (``f = schedule_fraction``, default 0.8). An item below its schedule is *starving*: with
``d`` its relative deficit, its starvation is ``s = min(1, d / full_boost_deficit)`` and its pacing
boost ``1 + (max_boost - 1) * s`` (a multiplier of the bandit's pmf, so the logged
propensities include it). The slot service also reserves a few candidate places for the most starving
items, so that items far from every user's vector still get their chance.

An item graduates out of the cold pool once it has enough evidence (``graduate_impressions`` and
``graduate_clicks``) or when it is older than ``max_age_hours``; :meth:`ExposurePacer.graduations`
returns :class:`GraduationEvent` s so the pool and the store can be updated.

The counters live in the process (an API replica counts the impressions it serves and the positive
interactions posted to it); at start-up they are seeded from the feature store's ``impressions`` and
``clicks`` columns.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Collection, Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Literal

import numpy as np
from numpy.typing import NDArray

from exploration.config import PacingConfig

GraduationReason = Literal["evidence", "aged_out"]


@dataclass
class Exposure:
    """Pacing state of one cold item (times in epoch seconds)."""

    item_id: str
    listed_at_s: float
    seller_id: str = ""
    category: str = ""
    impressions: int = 0
    clicks: int = 0


@dataclass(frozen=True)
class GraduationEvent:
    """An item left the cold pool."""

    item_id: str
    reason: GraduationReason
    impressions: int
    clicks: int
    listed_at: datetime
    graduated_at: datetime


class ExposurePacer:
    """Thread-safe per-item exposure bookkeeping, pacing boosts and graduation.

    State is kept in numpy arrays (one row per tracked item, swap-removed), so ranking thousands of
    items by deficit costs microseconds per request.

    Parameters
    ----------
    config
        Targets, boost and graduation thresholds.
    clock
        Returns the current time in epoch seconds (injectable for tests and replays).
    """

    def __init__(self, config: PacingConfig | None = None, *, clock: Callable[[], float] = time.time) -> None:
        self.config = config or PacingConfig()
        self.clock = clock
        self._lock = threading.Lock()
        self._ids: list[str] = []
        self._index: dict[str, int] = {}
        self._sellers: list[str] = []
        self._categories: list[str] = []
        cap = 1024
        self._listed = np.zeros(cap, dtype=np.float64)
        self._imps = np.zeros(cap, dtype=np.int64)
        self._clicks = np.zeros(cap, dtype=np.int64)

    def __len__(self) -> int:
        return len(self._ids)

    def __contains__(self, item_id: object) -> bool:
        return item_id in self._index

    def _grow(self) -> None:
        cap = max(1024, 2 * len(self._listed))
        for name in ("_listed", "_imps", "_clicks"):
            old = getattr(self, name)
            new = np.zeros(cap, dtype=old.dtype)
            new[: len(old)] = old
            setattr(self, name, new)

    def register(
        self,
        item_id: str,
        listed_at_s: float,
        *,
        seller_id: str = "",
        category: str = "",
        impressions: int = 0,
        clicks: int = 0,
    ) -> None:
        """Start tracking an item (idempotent: counters of a known item are kept, max with the given)."""
        with self._lock:
            i = self._index.get(item_id)
            if i is None:
                i = len(self._ids)
                if i >= len(self._listed):
                    self._grow()
                self._ids.append(item_id)
                self._sellers.append(seller_id)
                self._categories.append(category)
                self._index[item_id] = i
                self._listed[i] = listed_at_s
                self._imps[i] = impressions
                self._clicks[i] = clicks
            else:
                self._imps[i] = max(int(self._imps[i]), impressions)
                self._clicks[i] = max(int(self._clicks[i]), clicks)
                self._sellers[i] = seller_id or self._sellers[i]
                self._categories[i] = category or self._categories[i]

    def forget(self, item_ids: Iterable[str]) -> None:
        """Stop tracking items (unknown ids are ignored)."""
        with self._lock:
            for item_id in item_ids:
                self._remove(item_id)

    def _remove(self, item_id: str) -> None:
        i = self._index.pop(item_id, None)
        if i is None:
            return
        last = len(self._ids) - 1
        if i != last:
            moved = self._ids[last]
            self._ids[i] = moved
            self._sellers[i] = self._sellers[last]
            self._categories[i] = self._categories[last]
            self._listed[i] = self._listed[last]
            self._imps[i] = self._imps[last]
            self._clicks[i] = self._clicks[last]
            self._index[moved] = i
        self._ids.pop()
        self._sellers.pop()
        self._categories.pop()

    def get(self, item_id: str) -> Exposure | None:
        """A copy of an item's state, or ``None``."""
        with self._lock:
            i = self._index.get(item_id)
            if i is None:
                return None
            return self._exposure(i)

    def _exposure(self, i: int) -> Exposure:
        return Exposure(
            item_id=self._ids[i],
            listed_at_s=float(self._listed[i]),
            seller_id=self._sellers[i],
            category=self._categories[i],
            impressions=int(self._imps[i]),
            clicks=int(self._clicks[i]),
        )

    def impressions(self, item_ids: Sequence[str]) -> NDArray[np.int64]:
        """``(len(item_ids),)`` impression counts (0 for unknown ids)."""
        with self._lock:
            idx = np.array([self._index.get(i, -1) for i in item_ids], dtype=np.int64)
            out = np.where(idx >= 0, self._imps[np.maximum(idx, 0)], 0)
        return out

    def record_impressions(self, item_ids: Iterable[str]) -> None:
        """Count one impression for each id (unknown ids are ignored)."""
        with self._lock:
            for item_id in item_ids:
                i = self._index.get(item_id)
                if i is not None:
                    self._imps[i] += 1

    def record_click(self, item_id: str, count: int = 1) -> None:
        """Count clicks (or any positive interaction) of an item."""
        with self._lock:
            i = self._index.get(item_id)
            if i is not None:
                self._clicks[i] += count

    # ------------------------------------------------------------------ pacing
    def _expected(self, listed: NDArray[np.float64], now_s: float) -> NDArray[np.float64]:
        horizon_s = self.config.window_hours * self.config.schedule_fraction * 3600.0
        age = np.maximum(0.0, now_s - listed)
        return self.config.target_impressions * np.minimum(1.0, age / horizon_s)

    def expected_impressions(self, e: Exposure, now_s: float) -> float:
        """Impressions the schedule asks of ``e`` at ``now_s``."""
        return float(self._expected(np.array([e.listed_at_s]), now_s)[0])

    def boosts(self, item_ids: Sequence[str], now_s: float | None = None) -> NDArray[np.float64]:
        """``(len(item_ids),)`` pmf multipliers in ``[1, max_boost]`` (unknown ids get 1)."""
        now = self.clock() if now_s is None else now_s
        with self._lock:
            idx = np.array([self._index.get(i, -1) for i in item_ids], dtype=np.int64)
            known = idx >= 0
            j = idx[known]
            expected = self._expected(self._listed[j], now)
            imps = self._imps[j]
        relative = np.where(imps < expected, (expected - imps) / np.maximum(expected, 1.0), 0.0)
        starvation = np.minimum(1.0, relative / self.config.full_boost_deficit)
        out = np.ones(len(item_ids), dtype=np.float64)
        out[known] = 1.0 + (self.config.max_boost - 1.0) * starvation
        return out

    def most_starving(
        self,
        n: int,
        *,
        now_s: float | None = None,
        categories: Sequence[str] = (),
        sellers: Sequence[str] = (),
        exclude: Collection[str] = (),
        only_behind: bool = True,
    ) -> list[str]:
        """Up to ``n`` ids of the items furthest behind schedule (absolute deficit), worst first.

        ``categories`` / ``sellers`` restrict the items (empty = no restriction), ``exclude`` removes
        ids. With ``only_behind=False`` items on or ahead of schedule fill the list (least ahead first).
        """
        if n <= 0:
            return []
        now = self.clock() if now_s is None else now_s
        with self._lock:
            size = len(self._ids)
            if size == 0:
                return []
            deficit = self._expected(self._listed[:size], now) - self._imps[:size]
            if only_behind:
                deficit = np.where(deficit > 0, deficit, -np.inf)
            if categories or sellers:
                cats, sels = set(categories), set(sellers)
                for i in range(size):
                    if (cats and self._categories[i] not in cats) or (sels and self._sellers[i] not in sels):
                        deficit[i] = -np.inf
            for item_id in exclude:
                j = self._index.get(item_id)
                if j is not None:
                    deficit[j] = -np.inf
            m = min(size, n)
            top = np.argpartition(-deficit, m - 1)[:m] if m < size else np.arange(size)
            top = top[np.argsort(-deficit[top], kind="stable")]
            return [self._ids[i] for i in top if np.isfinite(deficit[i])]

    # ------------------------------------------------------------------ graduation
    def graduations(self, now_s: float | None = None) -> list[GraduationEvent]:
        """Items that graduate now; they are removed from the pacer."""
        c = self.config
        now = self.clock() if now_s is None else now_s
        events: list[GraduationEvent] = []
        with self._lock:
            size = len(self._ids)
            evidence = (self._imps[:size] >= c.graduate_impressions) & (
                self._clicks[:size] >= c.graduate_clicks
            )
            aged = (now - self._listed[:size]) > c.max_age_hours * 3600.0
            for i in np.flatnonzero(evidence | aged)[::-1]:  # descending: swap-removal keeps lower rows
                e = self._exposure(int(i))
                events.append(
                    GraduationEvent(
                        item_id=e.item_id,
                        reason="evidence" if evidence[i] else "aged_out",
                        impressions=e.impressions,
                        clicks=e.clicks,
                        listed_at=datetime.fromtimestamp(e.listed_at_s, UTC),
                        graduated_at=datetime.fromtimestamp(now, UTC),
                    )
                )
            for e2 in events:
                self._remove(e2.item_id)
        return events

    def on_schedule_share(self, now_s: float | None = None) -> float:
        """Share of tracked items at or above their schedule (1.0 when there are none)."""
        now = self.clock() if now_s is None else now_s
        with self._lock:
            size = len(self._ids)
            if size == 0:
                return 1.0
            return float(np.mean(self._imps[:size] >= self._expected(self._listed[:size], now)))
