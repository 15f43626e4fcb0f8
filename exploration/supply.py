"""The slot supply: impressions served per hour, an exponentially weighted average.

Pacing needs to know how many slots the traffic offers to decide how much of it the starving items
need (:meth:`exploration.pacing.ExposurePacer.load`). The meter folds every served impression into a
count that halves every ``halflife_s`` seconds and turns it into a rate with the normalisation of a
constant rate since the first impression (so a young meter is not biased low).
"""

from __future__ import annotations

import math


class SupplyMeter:
    """Exponentially weighted count of served impressions (not thread-safe: the pacer's lock guards it).

    Parameters
    ----------
    halflife_s
        Seconds after which an impression counts half.
    """

    def __init__(self, halflife_s: float) -> None:
        self.halflife_s = float(halflife_s)
        self._acc = 0.0  # the count, decayed to _at
        self._at: float | None = None
        self._since: float | None = None

    def add(self, served: int, now_s: float) -> None:
        """Fold ``served`` impressions at ``now_s`` into the count."""
        if self._at is None or self._since is None:
            self._at = self._since = now_s
        elif now_s > self._at:
            self._acc *= 0.5 ** ((now_s - self._at) / self.halflife_s)
            self._at = now_s
        self._acc += served

    def per_hour(self, now_s: float) -> float | None:
        """Impressions per hour at ``now_s``; ``None`` before two distinct instants have been seen."""
        if self._at is None or self._since is None:
            return None
        h = self.halflife_s
        elapsed = max(now_s, self._at) - self._since
        if elapsed <= 0.0:
            return None
        acc = self._acc * 0.5 ** (max(0.0, now_s - self._at) / h)
        # a constant rate r since _since: acc = r * tau * (1 - 2 ** (-elapsed / h)), tau = h / ln 2
        tau = h / math.log(2.0)
        return float(acc / (tau * (1.0 - 0.5 ** (elapsed / h)))) * 3600.0
