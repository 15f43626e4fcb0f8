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

import heapq
import threading
import time
from collections.abc import Callable, Iterable, Sequence
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
        self._items: dict[str, Exposure] = {}
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._items)

    def __contains__(self, item_id: object) -> bool:
        return item_id in self._items

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
            known = self._items.get(item_id)
            if known is None:
                self._items[item_id] = Exposure(
                    item_id, listed_at_s, seller_id, category, impressions, clicks
                )
            else:
                known.impressions = max(known.impressions, impressions)
                known.clicks = max(known.clicks, clicks)
                known.seller_id = seller_id or known.seller_id
                known.category = category or known.category

    def forget(self, item_ids: Iterable[str]) -> None:
        """Stop tracking items (unknown ids are ignored)."""
        with self._lock:
            for item_id in item_ids:
                self._items.pop(item_id, None)

    def get(self, item_id: str) -> Exposure | None:
        """A copy of an item's state, or ``None``."""
        with self._lock:
            e = self._items.get(item_id)
            return None if e is None else Exposure(**vars(e))

    def record_impressions(self, item_ids: Iterable[str]) -> None:
        """Count one impression for each id (unknown ids are ignored)."""
        with self._lock:
            for item_id in item_ids:
                e = self._items.get(item_id)
                if e is not None:
                    e.impressions += 1

    def record_click(self, item_id: str, count: int = 1) -> None:
        """Count clicks (or any positive interaction) of an item."""
        with self._lock:
            e = self._items.get(item_id)
            if e is not None:
                e.clicks += count

    # ------------------------------------------------------------------ pacing
    def expected_impressions(self, e: Exposure, now_s: float) -> float:
        """Impressions the linear schedule asks for at ``now_s``."""
        age_h = max(0.0, now_s - e.listed_at_s) / 3600.0
        horizon_h = self.config.window_hours * self.config.schedule_fraction
        return self.config.target_impressions * min(1.0, age_h / horizon_h)

    def _starvation(self, e: Exposure, now_s: float) -> float:
        expected = self.expected_impressions(e, now_s)
        if e.impressions >= expected:
            return 0.0
        relative = (expected - e.impressions) / max(expected, 1.0)
        return min(1.0, relative / self.config.full_boost_deficit)

    def boosts(self, item_ids: Sequence[str], now_s: float | None = None) -> NDArray[np.float64]:
        """``(len(item_ids),)`` pmf multipliers in ``[1, max_boost]`` (unknown ids get 1)."""
        now = self.clock() if now_s is None else now_s
        extra = self.config.max_boost - 1.0
        out = np.ones(len(item_ids), dtype=np.float64)
        with self._lock:
            for i, item_id in enumerate(item_ids):
                e = self._items.get(item_id)
                if e is not None:
                    out[i] = 1.0 + extra * self._starvation(e, now)
        return out

    def most_starving(
        self,
        n: int,
        *,
        now_s: float | None = None,
        accept: Callable[[Exposure], bool] | None = None,
        only_behind: bool = True,
    ) -> list[str]:
        """Up to ``n`` ids of the items furthest behind schedule (absolute deficit), worst first.

        With ``only_behind=False`` items on or ahead of schedule fill the list (least ahead first).
        """
        if n <= 0:
            return []
        now = self.clock() if now_s is None else now_s
        with self._lock:
            scored = (
                (self.expected_impressions(e, now) - e.impressions, e.item_id)
                for e in self._items.values()
                if accept is None or accept(e)
            )
            top = heapq.nlargest(n, scored)
        return [item_id for deficit, item_id in top if deficit > 0 or not only_behind]

    # ------------------------------------------------------------------ graduation
    def graduations(self, now_s: float | None = None) -> list[GraduationEvent]:
        """Items that graduate now; they are removed from the pacer."""
        c = self.config
        now = self.clock() if now_s is None else now_s
        events: list[GraduationEvent] = []
        with self._lock:
            for e in list(self._items.values()):
                reason: GraduationReason | None = None
                if e.impressions >= c.graduate_impressions and e.clicks >= c.graduate_clicks:
                    reason = "evidence"
                elif now - e.listed_at_s > c.max_age_hours * 3600.0:
                    reason = "aged_out"
                if reason is None:
                    continue
                del self._items[e.item_id]
                events.append(
                    GraduationEvent(
                        item_id=e.item_id,
                        reason=reason,
                        impressions=e.impressions,
                        clicks=e.clicks,
                        listed_at=datetime.fromtimestamp(e.listed_at_s, UTC),
                        graduated_at=datetime.fromtimestamp(now, UTC),
                    )
                )
        return events

    def on_schedule_share(self, now_s: float | None = None) -> float:
        """Share of tracked items at or above their schedule (1.0 when there are none)."""
        now = self.clock() if now_s is None else now_s
        with self._lock:
            if not self._items:
                return 1.0
            ok = sum(1 for e in self._items.values() if e.impressions >= self.expected_impressions(e, now))
            return ok / len(self._items)
