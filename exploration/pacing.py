"""Exposure pacing: every new item gets a fair number of impressions, then graduates.

Each cold item should reach ``target_impressions`` within ``window_hours`` of listing. The schedule is
linear with a margin: at age ``a`` an item is expected to have ``target * min(1, a / (f * window))``
impressions (``f = schedule_fraction``, default 0.8). An item below its schedule is *starving*: with
``d`` its relative deficit, its starvation is ``s = min(1, d / full_boost_deficit)`` and its pacing
boost ``1 + (max_boost - 1) * s`` (a multiplier of the bandit's pmf).

Boosts alone cannot help an item that is not a candidate, nor one the bandit gives almost no
probability, so pacing works in two further steps:

1. **candidate injection** -- the slot service reserves a few candidate places for starving items,
   earliest deadline first (:meth:`ExposurePacer.most_starving`): behind-schedule items whose window
   is still open and which are short of the target, the one whose window closes first at the top;
2. **pmf mixing** -- :meth:`ExposurePacer.choose` samples each slot position from
   ``(1 - strength) * policy_pmf + strength * q`` (both restricted to the arms still eligible and
   renormalised), with ``q`` proportional to ``urgency ** urgency_power``; a candidate's *urgency* is
   the impressions it still needs to reach the target divided by the hours left before its deadline
   (0 for items on schedule, at the target or past their window). The logged propensity of a slot is
   its probability under that mixture, so it is exactly the probability it was drawn with and
   off-policy estimators stay unbiased. Without any urgent candidate the policy samples alone
   (:meth:`Policy.choose`).

The **strength is adaptive** (unless ``PacingConfig.strength`` fixes it): deadlines take only as much
of the traffic as the backlog requires. The pacer estimates the slot supply (impressions served per
hour, an exponentially weighted average fed by :meth:`ExposurePacer.record_impressions`) and the
*load* (:meth:`ExposurePacer.load`): the share of that supply the unmet items need to make their
deadlines if served earliest deadline first, ``max_j C_j / (supply * (d_j - now))`` over the open
items sorted by deadline (``C_j``: impressions the first ``j`` still need). The strength of a decision
is ``clip(safety * load, min_strength, max_strength)``: near ``max_strength`` while a listing wave
exceeds what the traffic can absorb, ``min_strength`` once every open item can make its deadline with
a small share of the slots (the bandit's own choices then do most of the work).

An item graduates out of the cold pool once it has enough evidence (``graduate_impressions`` and
``graduate_clicks``) or when it is older than ``max_age_hours``; :meth:`ExposurePacer.graduations`
returns :class:`GraduationEvent` s so the pool and the store can be updated.

The per-item counters are the exposure ledger's (:mod:`exploration.ledger`), the schedule, boosts,
urgency and starvation ranking :mod:`exploration.schedule`'s, the slot supply :mod:`exploration.supply`'s.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Literal

import numpy as np
from numpy.typing import NDArray

from coldstart.errors import InvalidInputError
from exploration.config import PacingConfig
from exploration.policies.base import (
    Arm,
    Choice,
    Context,
    Policy,
    arm_groups,
    arm_ids,
)
from exploration.policies.sampling import draw_slots
from exploration.schedule import ScheduledLedger
from exploration.supply import SupplyMeter

GraduationReason = Literal["evidence", "aged_out"]

#: :meth:`ExposurePacer.load` ignores deadlines closer than this fraction of the window (their items
#: count against this horizon instead), so that one item about to close does not set the strength.
HORIZON_FLOOR = 0.05
#: The adaptive strength is recomputed at most once per this fraction of the window (one sort of the
#: tracked items: ~0.05 ms for 3,000 items, ~0.3 ms for 10,000).
STRENGTH_REFRESH = 0.001
#: Rows a pass over every item (:meth:`ExposurePacer.load`, :meth:`ExposurePacer.on_schedule_share`)
#: reads per hold of the lock (~0.3 ms at a time for the requests that wait for it).
ROWS_PER_HOLD = 65_536


@dataclass(frozen=True)
class GraduationEvent:
    """An item left the cold pool."""

    item_id: str
    reason: GraduationReason
    impressions: int
    clicks: int
    listed_at: datetime
    graduated_at: datetime


class ExposurePacer(ScheduledLedger):
    """The paced sampler, the adaptive strength and graduation over the scheduled ledger
    (:class:`~exploration.schedule.ScheduledLedger`: boosts, urgency and starving candidates).

    Parameters
    ----------
    config
        Targets, boost and graduation thresholds.
    clock
        Returns the current time in epoch seconds (injectable for tests and replays).
    seed
        Seed of the pacer's own generator (sampling of paced slots in :meth:`choose`).
    """

    def __init__(
        self,
        config: PacingConfig | None = None,
        *,
        clock: Callable[[], float] = time.time,
        seed: int = 0,
    ) -> None:
        super().__init__(config, clock=clock)
        self.seed = seed
        self._rng = np.random.default_rng(seed)
        self._rng_lock = threading.Lock()
        self._supply = SupplyMeter(self.config.supply_halflife * self.config.window_hours * 3600.0)
        # adaptive strength, recomputed at most every _strength_every_s
        self._strength_cache: tuple[float, float] | None = None  # (computed at, strength)

    def record_impressions(self, item_ids: Iterable[str], now_s: float | None = None) -> None:
        """Count one impression for each id (unknown ids are not tracked but count as slot supply)."""
        now = self.clock() if now_s is None else now_s
        with self._lock:
            served = 0
            for item_id in item_ids:
                served += 1
                i = self._index.get(item_id)
                if i is not None:
                    self._imps[i] += 1
                    self._on_counters(i)
            self._supply.add(served, now)

    def supply_per_hour(self, now_s: float | None = None) -> float | None:
        """Estimated slot supply (impressions served per hour, exponentially weighted with half-life
        ``supply_halflife * window_hours``); ``None`` before two distinct instants have been seen."""
        now = self.clock() if now_s is None else now_s
        with self._lock:
            return self._supply.per_hour(now)

    def load(self, now_s: float | None = None) -> float:
        """Share of the slot supply that the unmet items need to make their deadlines.

        The earliest-deadline-first (processor-demand) criterion: with the open items still short of
        the target sorted by deadline ``d_1 <= d_2 <= ...`` and ``C_j`` the impressions the first ``j``
        still need, ``load = max_j C_j / (supply * max(d_j - now, floor))`` with ``supply`` the
        :meth:`supply_per_hour` estimate and ``floor = HORIZON_FLOOR * window_hours`` (one item about to
        close does not dominate). EDF meets every deadline iff ``load <= 1`` at constant supply. 0 when
        nothing is needed, ``inf`` when something is needed but no supply has been measured yet.
        """
        now = self.clock() if now_s is None else now_s
        return self._load(now)

    def _load(self, now_s: float) -> float:
        """:meth:`load`, reading ``ROWS_PER_HOLD`` rows of the deadline order per hold of the lock
        (call without it): at a million items one pass costs ~5-15 ms, which requests would otherwise
        wait for. Rows removed or moved meanwhile are skipped or read as they are now; without
        concurrent writes the result is exact."""
        c = self.config
        with self._lock:
            order, deadline = self._deadline_order()  # the order of ties does not change the maximum
            supply = self._supply.per_hour(now_s)
        floor_s = HORIZON_FLOOR * c.window_hours * 3600.0
        rate = supply or 0.0
        measured = rate > 0.0
        carried, best, needed = 0.0, 0.0, False
        # deadlines are sorted: the open items (deadline >= now) are the tail of the order
        for lo in range(int(np.searchsorted(deadline, now_s, side="left")), order.shape[0], ROWS_PER_HOLD):
            with self._lock:
                rows = order[lo : lo + ROWS_PER_HOLD]
                live = (rows >= 0) & (rows < len(self._ids))  # places a removal emptied or moved meanwhile
                need = c.target_impressions - self._imps[rows[live]]
            short = need > 0
            if not short.any():
                continue
            needed = True
            if not measured:
                break
            cum = carried + np.cumsum(need[short].astype(np.float64))
            hours = np.maximum(deadline[lo : lo + ROWS_PER_HOLD][live][short] - now_s, floor_s) / 3600.0
            best = max(best, float(np.max(cum / (rate * hours))))
            carried = float(cum[-1])
        if not needed:
            return 0.0
        return best if measured else float("inf")

    def strength(self, now_s: float | None = None) -> float:
        """The mixing strength of a decision at ``now_s``.

        ``config.strength`` when set (fixed); otherwise ``clip(safety * load, min_strength,
        max_strength)`` (:meth:`load`), recomputed at most every ``STRENGTH_REFRESH * window_hours``
        (by the request that finds it older, unless :meth:`refresh_strength` ran since).
        """
        c = self.config
        if c.strength is not None:
            return c.strength
        now = self.clock() if now_s is None else now_s
        with self._lock:
            cached = self._strength_cache
        if cached is not None and 0.0 <= now - cached[0] < STRENGTH_REFRESH * c.window_hours * 3600.0:
            return cached[1]
        return self.refresh_strength(now)

    def refresh_strength(self, now_s: float | None = None) -> float:
        """Recompute the adaptive strength at ``now_s`` and keep it for :meth:`strength`. A replica's
        maintenance loop calls it every few seconds, off the request path, so that no request pays for
        the pass over the open items (:meth:`load`)."""
        c = self.config
        if c.strength is not None:
            return c.strength
        now = self.clock() if now_s is None else now_s
        load = self._load(now)
        value = (
            c.max_strength
            if not np.isfinite(load)
            else float(np.clip(c.safety * load, c.min_strength, c.max_strength))
        )
        with self._lock:
            self._strength_cache = (now, value)
        return value

    def choose(
        self,
        policy: Policy,
        context: Context,
        arms: Sequence[Arm],
        k: int,
        *,
        boosts: Sequence[float] | NDArray[np.float64] | None = None,
        urgency: NDArray[np.float64] | None = None,
        max_per_group: int | None = None,
        now_s: float | None = None,
    ) -> Choice:
        """Sample up to ``k`` distinct arms from the policy's pmf mixed with the pacing distribution.

        Slot position ``j`` is drawn from ``(1 - strength) * p_j + strength * q_j``, where ``strength``
        is :meth:`strength` at ``now_s``, ``p_j`` the policy's (boosted, floored) pmf and ``q_j`` the
        candidates' :meth:`urgency` to the power ``urgency_power``, both restricted to the arms still
        eligible (not drawn yet, under the per-group cap) and renormalised; ``q_j`` drops out when no
        eligible arm is urgent. Each slot's propensity is its probability under that mixture. Without
        urgent arms (or with strength 0) this is :meth:`Policy.choose`. ``urgency``: the arms'
        :meth:`urgency` at ``now_s`` when the caller has it already (:meth:`view`).

        Returns
        -------
        Choice
            ``pmf``: ``(n_arms,)`` the first position's mixed distribution; ``scores``: the policy's.
        """
        if k < 1:
            raise InvalidInputError("k", k, "must be >= 1")
        if max_per_group is not None and max_per_group < 1:
            raise InvalidInputError("max_per_group", max_per_group, "must be >= 1")
        now = self.clock() if now_s is None else now_s
        lam = self.strength(now)
        n = len(arms)
        ids = arm_ids(arms)
        if urgency is None:
            urgency = self.urgency(ids, now) if lam > 0 and n else np.zeros(n)
        elif urgency.shape != (n,):
            raise InvalidInputError("urgency", urgency.shape, f"must have shape ({n},)")
        if lam > 0 and self.config.urgency_power != 1.0:
            urgency = np.where(urgency > 0, urgency**self.config.urgency_power, 0.0)
        if lam <= 0 or not np.any(urgency > 0):
            return policy.choose(context, arms, k, boosts=boosts, max_per_group=max_per_group)
        pmf, scores = policy.pmf(context, arms, boosts)
        with self._rng_lock:
            slots, first = draw_slots(
                self._rng, pmf, k, ids, scores, arm_groups(arms), max_per_group, mix=(lam, urgency)
            )
        return Choice(pmf=pmf if first is None else first, scores=scores, slots=tuple(slots))

    # ------------------------------------------------------------------ graduation
    def _on_counters(self, row: int) -> None:
        c = self.config
        if self._imps[row] >= c.graduate_impressions and self._clicks[row] >= c.graduate_clicks:
            self._flagged.add(self._ids[row])

    def graduations(self, now_s: float | None = None) -> list[GraduationEvent]:
        """Items that graduate now; they are removed from the pacer.

        Runs every few seconds in a replica, under the lock its requests take: the items with enough
        evidence were flagged as their counters grew (:meth:`_on_counters`) and those aged out are the
        head of the rows sorted by listing time, so the pass costs in proportion to what graduates
        (checking every row cost ~3 ms at a million items).
        """
        c = self.config
        now = self.clock() if now_s is None else now_s
        events: list[GraduationEvent] = []
        with self._lock:
            order, listed, _ = self._by_listing()
            aged = order[: int(np.searchsorted(listed, now - c.max_age_hours * 3600.0, side="left"))]
            rows = {*aged.tolist(), *(self._index[item_id] for item_id in self._flagged)}
            for i in sorted(rows, reverse=True):  # descending: swap-removal keeps lower rows
                e = self._exposure(i)
                events.append(
                    GraduationEvent(
                        item_id=e.item_id,
                        reason="evidence" if e.item_id in self._flagged else "aged_out",
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
        """Share of tracked items at or above their schedule (1.0 when there are none).

        A gauge read every few seconds: it counts ``ROWS_PER_HOLD`` rows at a time and lets go of the
        lock between chunks, so requests wait for one chunk, not for a pass over every row (~5 ms at a
        million items); rows that move meanwhile may be counted twice or missed.
        """
        now = self.clock() if now_s is None else now_s
        on = seen = 0
        start = 0
        while True:
            with self._lock:
                stop = min(start + ROWS_PER_HOLD, len(self._ids))
                if stop <= start:
                    break
                on += int(
                    np.count_nonzero(self._imps[start:stop] >= self._expected(self._listed[start:stop], now))
                )
            seen += stop - start
            start = stop
        return on / seen if seen else 1.0
