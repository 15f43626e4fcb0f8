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

The per-item counters are the exposure ledger's (:mod:`exploration.ledger`); the slot supply is
:mod:`exploration.supply`'s.
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

from coldstart.errors import InvalidInputError
from exploration.config import PacingConfig
from exploration.ledger import Exposure, ExposureLedger
from exploration.policies.base import (
    Arm,
    Choice,
    Context,
    Policy,
    arm_groups,
    arm_ids,
)
from exploration.policies.sampling import draw_slots
from exploration.supply import SupplyMeter

GraduationReason = Literal["evidence", "aged_out"]

#: :meth:`ExposurePacer.load` ignores deadlines closer than this fraction of the window (their items
#: count against this horizon instead), so that one item about to close does not set the strength.
HORIZON_FLOOR = 0.05
#: The adaptive strength is recomputed at most once per this fraction of the window (one sort of the
#: tracked items: ~0.05 ms for 3,000 items, ~0.3 ms for 10,000).
STRENGTH_REFRESH = 0.001


@dataclass(frozen=True)
class PacingView:
    """Pacing state of some candidates at one instant, each of shape ``(n,)``."""

    boosts: NDArray[np.float64]
    """pmf multipliers in ``[1, max_boost]`` (1 for unknown ids)."""
    impressions: NDArray[np.int64]
    """Impressions counted so far (0 for unknown ids)."""
    urgency: NDArray[np.float64]
    """Impressions still needed per hour left before the deadline (0: not urgent or unknown)."""


@dataclass(frozen=True)
class GraduationEvent:
    """An item left the cold pool."""

    item_id: str
    reason: GraduationReason
    impressions: int
    clicks: int
    listed_at: datetime
    graduated_at: datetime


def _lexsort_head(primary: NDArray[np.float64], secondary: NDArray[np.float64], n: int) -> NDArray[np.intp]:
    """The first ``n`` indices of ``np.lexsort((secondary, primary))`` (stable) without sorting it all.

    Partitions on ``primary`` (then on ``secondary`` within the boundary value) so that only about
    ``n`` elements are sorted: a full two-key sort of a 10,000-item pool costs ~1 ms per request.
    """
    size = primary.shape[0]
    if n >= size:
        return np.lexsort((secondary, primary))
    kth = np.partition(primary, n - 1)[n - 1]
    head = np.flatnonzero(primary < kth)  # fewer than n of them
    tie = np.flatnonzero(primary == kth)
    need = n - head.size
    if tie.size > need:  # keep the ``need`` smallest secondaries, lower index first among equals
        vals = secondary[tie]
        cut = np.partition(vals, need - 1)[need - 1]
        below = tie[vals < cut]
        tie = np.concatenate([below, tie[vals == cut][: need - below.size]])
    cand = np.concatenate([head, tie])  # ascending index order within each part
    cand.sort()
    return cand[np.lexsort((secondary[cand], primary[cand]))]


class ExposurePacer(ExposureLedger):
    """Pacing boosts, starving candidates, the paced sampler and graduation over the exposure ledger
    (:class:`~exploration.ledger.ExposureLedger`: one array row per tracked item, so ranking a large
    pool by deficit costs microseconds per request).

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
        super().__init__()
        self.config = config or PacingConfig()
        self.clock = clock
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
            self._supply.add(served, now)

    def supply_per_hour(self, now_s: float | None = None) -> float | None:
        """Estimated slot supply (impressions served per hour, exponentially weighted with half-life
        ``supply_halflife * window_hours``); ``None`` before two distinct instants have been seen."""
        now = self.clock() if now_s is None else now_s
        with self._lock:
            return self._supply.per_hour(now)

    # ------------------------------------------------------------------ pacing
    def _expected(self, listed: NDArray[np.float64], now_s: float) -> NDArray[np.float64]:
        horizon_s = self.config.window_hours * self.config.schedule_fraction * 3600.0
        age = np.maximum(0.0, now_s - listed)
        return self.config.target_impressions * np.minimum(1.0, age / horizon_s)

    def expected_impressions(self, e: Exposure, now_s: float) -> float:
        """Impressions the schedule asks of ``e`` at ``now_s``."""
        return float(self._expected(np.array([e.listed_at_s]), now_s)[0])

    def view(self, item_ids: Sequence[str], now_s: float | None = None) -> PacingView:
        """Boosts, impressions and urgency of ``item_ids`` at ``now_s``, read under one lock with one
        id lookup (the slot service needs all three for its candidates)."""
        now = self.clock() if now_s is None else now_s
        c = self.config
        n = len(item_ids)
        with self._lock:
            get = self._index.get
            idx = np.array([get(i, -1) for i in item_ids], dtype=np.int64)
            known = idx >= 0
            j = idx[known]
            listed = self._listed[j]
            imps = self._imps[j]
        expected = self._expected(listed, now)
        # boost: multiplier of the policy's pmf from the relative deficit
        relative = np.where(imps < expected, (expected - imps) / np.maximum(expected, 1.0), 0.0)
        boosts = np.ones(n, dtype=np.float64)
        boosts[known] = 1.0 + (c.max_boost - 1.0) * np.minimum(1.0, relative / c.full_boost_deficit)
        # urgency: impressions still needed per hour left (an hour-floor of 1 % of the window keeps the
        # last moments finite)
        hours_left = (self._deadline(listed) - now) / 3600.0
        need = c.target_impressions - imps.astype(np.float64)
        urgent = (imps < expected) & (need > 0) & (hours_left >= 0)
        urgency = np.zeros(n, dtype=np.float64)
        urgency[known] = np.where(urgent, need / np.maximum(hours_left, 0.01 * c.window_hours), 0.0)
        impressions = np.zeros(n, dtype=np.int64)
        impressions[known] = imps
        return PacingView(boosts=boosts, impressions=impressions, urgency=urgency)

    def boosts(self, item_ids: Sequence[str], now_s: float | None = None) -> NDArray[np.float64]:
        """``(len(item_ids),)`` pmf multipliers in ``[1, max_boost]`` (unknown ids get 1)."""
        return self.view(item_ids, now_s).boosts

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
        """Up to ``n`` ids of starving items, most in need first.

        With ``starving_order="deadline"`` (default): behind-schedule items still short of the target
        whose window is open, earliest deadline first (ties: larger deficit first); then
        behind-schedule items whose window has closed (largest deficit first). With ``"deficit"``:
        every behind-schedule item by absolute deficit, largest first. ``categories`` / ``sellers``
        restrict the items (empty = no restriction), ``exclude`` removes ids. With
        ``only_behind=False`` items on or ahead of schedule fill the list (least ahead first).
        """
        if n <= 0:
            return []
        now = self.clock() if now_s is None else now_s
        with self._lock:
            if not self._ids:
                return []
            if self.config.starving_order == "deadline" and not (categories or sellers):
                head = self._starving_head(n, now, exclude)
                if head is not None:
                    return head
            return self._ranked(n, now, categories, sellers, exclude, only_behind)

    def _starving_head(self, n: int, now: float, exclude: Collection[str]) -> list[str] | None:
        """:meth:`most_starving` (``"deadline"`` order, no category/seller filter) from the head of
        the deadline order alone, or ``None`` when that head does not settle it (lock held).

        The first ``n`` of the ranking are open, unmet, behind-schedule items whenever at least ``n``
        exist, in order of (deadline, larger deficit, row). Deadlines are fixed at listing, so the
        tracked rows are kept sorted by deadline (:meth:`_deadline_order`) and only the open items with
        the earliest deadlines are checked: about ``4 n`` instead of every tracked item. ``None`` when
        fewer than ``n`` of them qualify, or when the ``n``-th one's deadline ties past the checked
        rows: the full ranking (:meth:`_ranked`) answers then.
        """
        order, deadlines = self._deadline_order()
        size = order.shape[0]
        start = int(np.searchsorted(deadlines, now, side="left"))  # first open window (deadline >= now)
        stop = min(size, start + max(4 * n, 256))
        rows = order[start:stop]
        imps = self._imps[rows]
        deficit = self._expected(self._listed[rows], now) - imps
        ok = (deficit > 0) & (imps < self.config.target_impressions)
        gone = self._rows_of(exclude)
        if gone:
            ok &= ~np.isin(rows, gone)
        hits = np.flatnonzero(ok)
        if hits.size < n:
            return None
        last = deadlines[start + hits[n - 1]]
        if stop < size and deadlines[stop] == last:  # the n-th item's deadline ties beyond the head
            return None
        cand = hits[deadlines[start + hits] <= last]
        keys = (rows[cand], -deficit[cand], deadlines[start + cand])
        chosen = rows[cand[np.lexsort(keys)[:n]]]
        ids = self._ids
        return [ids[i] for i in chosen.tolist()]

    def _deadline_order(self) -> tuple[NDArray[np.intp], NDArray[np.float64]]:
        """Tracked rows sorted by deadline (ties: row order) and their deadlines, ``(size,)`` each
        (lock held); rebuilt only after the tracked set changed (:meth:`register`, :meth:`forget`)."""
        if self._order is None:
            deadline = self._deadline(self._listed[: len(self._ids)])
            order = np.argsort(deadline, kind="stable")
            self._order = (order, deadline[order])
        return self._order

    def _deadline(self, listed: NDArray[np.float64]) -> NDArray[np.float64]:
        """Deadlines (epoch s) of items listed at ``listed`` (epoch s): the end of their window."""
        return listed + self.config.window_hours * 3600.0

    def _rows_of(self, item_ids: Collection[str]) -> list[int]:
        """Rows of the tracked items among ``item_ids`` (lock held; untracked ids are skipped)."""
        get = self._index.get
        return [j for j in (get(item_id) for item_id in item_ids) if j is not None]

    def _ranked(
        self,
        n: int,
        now: float,
        categories: Sequence[str],
        sellers: Sequence[str],
        exclude: Collection[str],
        only_behind: bool,
    ) -> list[str]:
        """:meth:`most_starving` over every tracked item (lock held, at least one item tracked)."""
        size = len(self._ids)
        deficit = self._expected(self._listed[:size], now) - self._imps[:size]
        if only_behind:
            deficit = np.where(deficit > 0, deficit, -np.inf)
        if categories or sellers:
            cats, sels = set(categories), set(sellers)
            for i in range(size):
                if (cats and self._categories[i] not in cats) or (sels and self._sellers[i] not in sels):
                    deficit[i] = -np.inf
        deficit[self._rows_of(exclude)] = -np.inf
        if self.config.starving_order == "deadline":
            # primary key: deadline for open, unmet, behind items; +inf (after them) otherwise
            deadline = self._deadline(self._listed[:size])
            open_ = (deadline >= now) & (self._imps[:size] < self.config.target_impressions) & (deficit > 0)
            primary = np.where(open_ & np.isfinite(deficit), deadline, np.inf)
        else:
            primary = np.zeros(size)
        order = _lexsort_head(primary, -deficit, n)
        order = order[np.isfinite(deficit[order])]
        ids = self._ids
        return [ids[i] for i in order.tolist()]

    def urgency(self, item_ids: Sequence[str], now_s: float | None = None) -> NDArray[np.float64]:
        """``(len(item_ids),)`` impressions still needed per hour left before each item's deadline.

        Positive only for tracked items that are behind their schedule, short of the target and whose
        window (``window_hours`` from listing) is still open; 0 otherwise (unknown ids included).
        """
        return self.view(item_ids, now_s).urgency

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
        with self._lock:
            return self._load(now)

    def _load(self, now_s: float) -> float:
        c = self.config
        order, deadline = self._deadline_order()  # ties keep row order, as a stable sort would
        need = c.target_impressions - self._imps[order]
        open_ = (deadline >= now_s) & (need > 0)
        if not np.any(open_):
            return 0.0
        supply = self._supply.per_hour(now_s)
        if supply is None or supply <= 0.0:
            return float("inf")
        cum = np.cumsum(need[open_].astype(np.float64))
        window_s = c.window_hours * 3600.0
        hours = np.maximum(deadline[open_] - now_s, HORIZON_FLOOR * window_s) / 3600.0
        return float(np.max(cum / (supply * hours)))

    def strength(self, now_s: float | None = None) -> float:
        """The mixing strength of a decision at ``now_s``.

        ``config.strength`` when set (fixed); otherwise ``clip(safety * load, min_strength,
        max_strength)`` (:meth:`load`), recomputed at most every ``STRENGTH_REFRESH * window_hours``.
        """
        c = self.config
        if c.strength is not None:
            return c.strength
        now = self.clock() if now_s is None else now_s
        with self._lock:
            cached = self._strength_cache
            if cached is not None and 0.0 <= now - cached[0] < STRENGTH_REFRESH * c.window_hours * 3600.0:
                return cached[1]
            load = self._load(now)
            value = (
                c.max_strength
                if not np.isfinite(load)
                else float(np.clip(c.safety * load, c.min_strength, c.max_strength))
            )
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
