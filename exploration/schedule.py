"""The pacing schedule over the exposure ledger: what each cold item is owed, and who is starving.

At age ``a`` an item is expected to have ``target * min(1, a / (f * window))`` impressions
(``f = schedule_fraction``); its deadline is the end of its window (``window_hours`` after listing).
:class:`ScheduledLedger` answers, per request and under one lock, the candidates' pacing boosts and
urgencies (:meth:`ScheduledLedger.view`) and the starving items the slot service injects as
candidates (:meth:`ScheduledLedger.most_starving`, earliest deadline first). The mixture sampler, the
adaptive strength and graduation build on it in :mod:`exploration.pacing`.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from exploration.config import PacingConfig
from exploration.ledger import Exposure, ExposureLedger


@dataclass(frozen=True)
class PacingView:
    """Pacing state of some candidates at one instant, each of shape ``(n,)``."""

    boosts: NDArray[np.float64]
    """pmf multipliers in ``[1, max_boost]`` (1 for unknown ids)."""
    impressions: NDArray[np.int64]
    """Impressions counted so far (0 for unknown ids)."""
    urgency: NDArray[np.float64]
    """Impressions still needed per hour left before the deadline (0: not urgent or unknown)."""
    known: NDArray[np.bool_]
    """Whether the pacer tracks the item (the slot service serves only tracked items)."""

    def take(self, rows: NDArray[np.intp]) -> PacingView:
        """The view of the candidates at ``rows``."""
        return PacingView(self.boosts[rows], self.impressions[rows], self.urgency[rows], self.known[rows])


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


#: A category/seller restriction that leaves at most this share of the tracked items is ranked
#: directly (cost in proportion to its items) instead of from the head of the deadline order, whose
#: windows would have to grow past ~1/share rows to find enough of them.
HEAD_MIN_SHARE = 1 / 64


class ScheduledLedger(ExposureLedger):
    """The exposure ledger with the pacing schedule: boosts, urgency and the starvation ranking
    (one array row per tracked item, so ranking a large pool costs microseconds per request).

    Parameters
    ----------
    config
        Targets, window and boost.
    clock
        Returns the current time in epoch seconds (injectable for tests and replays).
    """

    def __init__(self, config: PacingConfig | None = None, *, clock: Callable[[], float] = time.time) -> None:
        super().__init__()
        self.config = config or PacingConfig()
        self.clock = clock
        # (from, to): the items at positions from..to-1 of the deadline order have reached the target
        self._head_done = (0, 0)
        self._deadlines: tuple[int, NDArray[np.float64]] | None = None  # (ledger version, deadlines)

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
        return PacingView(boosts=boosts, impressions=impressions, urgency=urgency, known=known)

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
            allowed = self._allowed(categories, sellers)
            # the head of the deadline order answers unless the restriction leaves so few rows that
            # ranking them is cheaper than walking the order to find n of them
            few = allowed is not None and np.count_nonzero(allowed) <= HEAD_MIN_SHARE * len(self._ids)
            if self.config.starving_order == "deadline" and not few:
                head = self._starving_head(n, now, exclude, allowed)
                if head is not None:
                    return head
            rows = None if allowed is None else np.flatnonzero(allowed)
            return self._ranked(n, now, rows, exclude, only_behind)

    def _starving_head(
        self, n: int, now: float, exclude: Collection[str], allowed: NDArray[np.bool_] | None
    ) -> list[str] | None:
        """:meth:`most_starving` (``"deadline"`` order; ``allowed``: the rows the category/seller
        restriction leaves, ``None`` for all) from the head of the deadline order alone, or ``None``
        when fewer than ``n`` open items qualify at all (lock held): the full ranking
        (:meth:`_ranked`) answers then.

        The first ``n`` of the ranking are open, unmet, behind-schedule items whenever at least ``n``
        exist, in order of (deadline, larger deficit, row). Deadlines are fixed at listing, so the
        tracked rows are kept sorted by deadline (:meth:`_deadline_order`) and only the open items with
        the earliest deadlines are checked: a window of ``4 n`` rows, widened (×4) until it holds ``n``
        of them and the ``n``-th one's deadline does not tie past its end. The rows at the head that
        have reached the target are skipped without being checked again (:meth:`_past_done`): pacing
        serves the earliest deadlines first, so that run grows with the traffic (ranking every item
        instead costs ~25 ms at a million items).
        """
        order, deadlines = self._deadline_order()
        size = order.shape[0]
        start = self._past_done(order, int(np.searchsorted(deadlines, now, side="left")))
        gone = self._rows_of(exclude)
        width = max(4 * n, 256)
        while True:
            stop = min(size, start + width)
            rows = order[start:stop]
            imps = self._imps[rows]
            deficit = self._expected(self._listed[rows], now) - imps
            ok = (deficit > 0) & (imps < self.config.target_impressions)
            if allowed is not None:
                ok &= allowed[rows]
            if gone:
                ok &= ~np.isin(rows, gone)
            hits = np.flatnonzero(ok)
            if hits.size >= n:
                last = deadlines[start + hits[n - 1]]
                if stop == size or deadlines[stop] != last:  # no tie of the n-th deadline beyond
                    cand = hits[deadlines[start + hits] <= last]
                    keys = (rows[cand], -deficit[cand], deadlines[start + cand])
                    chosen = rows[cand[np.lexsort(keys)[:n]]]
                    ids = self._ids
                    return [ids[i] for i in chosen.tolist()]
            if stop == size:
                return None
            width *= 4

    def _past_done(self, order: NDArray[np.intp], start: int) -> int:
        """The first position at or after ``start`` in the deadline order whose item is short of the
        target (lock held). Impressions only grow and an item keeps its position until places move
        (:meth:`_deadline_order` forgets the run then), so the run of items at the target is
        remembered and only its end is checked again."""
        checked_from, checked_to = self._head_done
        known = checked_from <= start <= checked_to  # else: a new stretch (or ``now`` went back)
        i = checked_to if known else start
        size = order.shape[0]
        chunk = 1024
        while i < size:
            reached = self._imps[order[i : i + chunk]] >= self.config.target_impressions
            if not reached.all():
                i += int(np.argmin(reached))  # the first one short of the target
                break
            i += reached.shape[0]
        self._head_done = (checked_from if known else start, i)
        return i

    def _deadline_order(self) -> tuple[NDArray[np.intp], NDArray[np.float64]]:
        """Tracked rows sorted by deadline (ties in any order) and their deadlines, ``(size,)`` each
        (lock held): the ledger's rows by listing time (deadline = listing + window), the deadlines
        recomputed only when places moved."""
        order, listed, version = self._by_listing()
        if self._deadlines is None or self._deadlines[0] != version:
            self._deadlines = (version, self._deadline(listed))
            self._head_done = (0, 0)  # positions moved
        return order, self._deadlines[1]

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
        rows: NDArray[np.intp] | None,
        exclude: Collection[str],
        only_behind: bool,
    ) -> list[str]:
        """:meth:`most_starving` over the tracked ``rows`` (ascending; ``None``: every row) (lock
        held, at least one item tracked)."""
        if rows is None:
            rows = np.arange(len(self._ids))
        listed, imps = self._listed[rows], self._imps[rows]
        deficit = self._expected(listed, now) - imps
        if only_behind:
            deficit = np.where(deficit > 0, deficit, -np.inf)
        gone = self._rows_of(exclude)
        if gone:
            deficit[np.isin(rows, gone)] = -np.inf
        if self.config.starving_order == "deadline":
            # primary key: deadline for open, unmet, behind items; +inf (after them) otherwise
            deadline = self._deadline(listed)
            open_ = (deadline >= now) & (imps < self.config.target_impressions) & (deficit > 0)
            primary = np.where(open_ & np.isfinite(deficit), deadline, np.inf)
        else:
            primary = np.zeros(rows.shape[0])
        order = _lexsort_head(primary, -deficit, n)
        order = order[np.isfinite(deficit[order])]
        ids = self._ids
        return [ids[i] for i in rows[order].tolist()]

    def urgency(self, item_ids: Sequence[str], now_s: float | None = None) -> NDArray[np.float64]:
        """``(len(item_ids),)`` impressions still needed per hour left before each item's deadline.

        Positive only for tracked items that are behind their schedule, short of the target and whose
        window (``window_hours`` from listing) is still open; 0 otherwise (unknown ids included).
        """
        return self.view(item_ids, now_s).urgency
