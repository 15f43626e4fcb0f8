"""The candidates' features, as the bandit sees them: the user·item dot, the user⊙item bucket sums, the
item's age, impressions and pacing boost, and whether it came from the starving reservation."""

from __future__ import annotations

import functools

import numpy as np
from numpy.typing import NDArray

from exploration.policies import ArmBatch
from exploration.pool.base import PoolEntry
from exploration.schedule import PacingView

N_BUCKETS = 8
#: Candidate features, in order: user·item dot, log1p(age in hours), log1p(impressions), log(pacing
#: boost), whether the candidate came from the starving reservation, and the user⊙item bucket sums.
FEATURES = ("dot", "age", "imp", "boost", "starving", *(f"p{b}" for b in range(N_BUCKETS)))


@functools.lru_cache(maxsize=8)
def _bucket_starts(dim: int) -> NDArray[np.intp]:
    """First coordinate of each of the ``N_BUCKETS`` user⊙item buckets of a ``dim``-vector."""
    starts: NDArray[np.intp] = np.linspace(0, dim, N_BUCKETS + 1).astype(np.intp)[:-1]
    starts.flags.writeable = False
    return starts


def arm_features(
    ids: list[str],
    entries: list[PoolEntry],
    sims: NDArray[np.float64],
    user_vec: NDArray[np.float32] | None,
    view: PacingView,
    now: float,
    vectors: NDArray[np.float32] | None = None,
) -> ArmBatch:
    """The candidates as the policy's arms: one row of :data:`FEATURES` per entry (``ids``: their ids;
    ``sims``: NaN for the starving reservation), the sellers kept for the per-seller cap.
    ``vectors``: the entries' indexed vectors, ``(n, dim)``, when the caller has them (a pool search
    reads them by row); otherwise the entries' own, those of the user's dimension."""
    n = len(entries)
    if not n:
        return ArmBatch([], FEATURES, np.zeros((0, len(FEATURES))))
    dots = np.zeros(n)
    buckets = np.zeros((n, N_BUCKETS))
    if user_vec is not None:
        dim = user_vec.shape[0]
        usable: list[int] | slice = slice(None)
        if vectors is not None and vectors.shape == (n, dim):
            V: NDArray[np.floating] = vectors
        else:
            own = [e.vector for e in entries]
            usable = [i for i, v in enumerate(own) if v.shape == (dim,)]
            V = np.stack([own[i] for i in usable]) if usable else np.zeros((0, dim))
        if V.shape[0]:
            prod = V.astype(np.float64) * user_vec.astype(np.float64)
            buckets[usable] = np.add.reduceat(prod, _bucket_starts(dim), axis=1)
            dots[usable] = prod.sum(axis=1)
    imps = view.impressions
    boosts = view.boosts
    listed = np.array([e.listed_at_s for e in entries], dtype=np.float64)
    matrix = np.column_stack(
        [
            dots,
            np.log1p(np.maximum(0.0, now - listed) / 3600.0),
            np.log1p(imps.astype(np.float64)),
            np.log(boosts),
            np.isnan(sims).astype(np.float64),
            buckets,
        ]
    ).round(6)
    return ArmBatch(ids, FEATURES, matrix, [e.seller_id for e in entries])
