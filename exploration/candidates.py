"""One slot request's candidates: the pool's nearest items to the user, then the most starving ones.

The top ``m - starving`` cold items by inner product with the user's vector (their entries and vectors
read by the pool's rows, :meth:`CandidatePool.search_candidates`), then up to ``starving`` of the most
starving items (:meth:`ExposurePacer.most_starving`) until ``m`` are found; an unknown user gets ``m``
items, the most starving first. The request's filters and exclusions apply to both.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from exploration.pacing import ExposurePacer
from exploration.pool.base import CandidatePool, PoolEntry, PoolFilter


@dataclass(frozen=True)
class Candidates:
    """One request's candidates: ids, pool entries, similarities to the user (NaN: the starving
    reservation) and, for a known user, their vectors (``None``: not all of the pool's dimension)."""

    ids: list[str]
    entries: list[PoolEntry]
    sims: NDArray[np.float64]
    vectors: NDArray[np.float32] | None

    def take(self, rows: list[int]) -> Candidates:
        """The candidates at ``rows``, in that order."""
        return Candidates(
            [self.ids[n] for n in rows],
            [self.entries[n] for n in rows],
            self.sims[rows],
            None if self.vectors is None else self.vectors[rows],
        )


def gather_candidates(
    pool: CandidatePool,
    pacer: ExposurePacer,
    tracked: Mapping[str, PoolEntry],
    filt: PoolFilter,
    user_vec: NDArray[np.float32] | None,
    now: float,
    *,
    m: int,
    starving: int,
) -> Candidates:
    """Up to ``m`` candidates (see the module docstring); ``tracked``: the entries of the items the
    service serves (a starving id without one is skipped)."""
    cands = Candidates([], [], np.zeros(0), None)
    seen: set[str] = set()
    if user_vec is not None and m > starving:
        # entries and vectors come with the hits, read by the pool's rows: no id lookup per hit
        found = pool.search_candidates(user_vec, m - starving, filt)
        cands = Candidates(found.item_ids, found.entries, found.scores, found.vectors)
        seen = set(cands.ids)
        if len(seen) != len(cands.ids):  # a pool returned an item twice: keep its first (best) hit
            first = {item_id: n for n, item_id in reversed(list(enumerate(cands.ids)))}
            cands = cands.take(sorted(first.values()))
        n_extra, behind = m - len(cands.ids), True
    elif user_vec is not None:
        n_extra, behind = m, True
    else:
        n_extra, behind = m, False
    ranked = pacer.most_starving(
        n_extra + len(seen),
        now_s=now,
        categories=filt.categories,
        sellers=filt.sellers,
        exclude=filt.exclude_item_ids,
        only_behind=behind,
    )
    extra: list[PoolEntry] = []
    for item_id in ranked:
        if len(cands.ids) + len(extra) >= m:
            break
        entry = tracked.get(item_id)
        if entry is not None and item_id not in seen:
            seen.add(item_id)
            extra.append(entry)
    if not extra:
        return cands
    vectors = None  # arm_features then takes the entries' own vectors of the user's dimension
    if user_vec is not None and all(np.shape(e.vector) == user_vec.shape for e in extra):
        own = np.asarray([e.vector for e in extra], dtype=np.float32)
        vectors = own if cands.vectors is None else np.concatenate([cands.vectors, own])
    return Candidates(
        [*cands.ids, *(e.item_id for e in extra)],
        [*cands.entries, *extra],
        np.concatenate([cands.sims, np.full(len(extra), np.nan)]),
        vectors,
    )
