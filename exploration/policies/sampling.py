"""Sampling ``k`` distinct arms, position by position, without replacement: the one sampler of the
policies (:meth:`exploration.policies.base.Policy.choose`) and of pacing
(:meth:`exploration.pacing.ExposurePacer.choose`), with the bookkeeping of the per-group cap.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray


@dataclass(frozen=True)
class ChosenSlot:
    """One sampled slot: ``index`` into the arms, ``propensity`` as sampled at ``position``."""

    item_id: str
    index: int
    position: int
    propensity: float
    score: float


def mark_drawn(
    index: int,
    eligible: NDArray[np.bool_],
    groups: Sequence[str],
    per_group: dict[str, int],
    max_per_group: int | None,
) -> None:
    """Arm ``index`` was drawn: it leaves ``eligible`` (``(n_arms,)``, updated in place), and once its
    non-empty group holds ``max_per_group`` slots (counted in ``per_group``) the group's other arms do
    too. The one bookkeeping of every without-replacement sampler (policy and pacing)."""
    eligible[index] = False
    group = groups[index]
    if max_per_group is not None and group:
        per_group[group] = per_group.get(group, 0) + 1
        if per_group[group] >= max_per_group:
            eligible &= np.array([g != group for g in groups], dtype=bool)


def draw_slots(
    rng: np.random.Generator,
    pmf: NDArray[np.float64],
    k: int,
    ids: Sequence[str],
    scores: NDArray[np.float64],
    groups: Sequence[str],
    max_per_group: int | None = None,
    mix: tuple[float, NDArray[np.float64]] | None = None,
) -> tuple[list[ChosenSlot], NDArray[np.float64] | None]:
    """Draw up to ``k`` distinct arms, position by position, without replacement: the one sampler of
    the policies (:meth:`Policy.choose`) and of pacing (:meth:`exploration.pacing.ExposurePacer.choose`).

    Position ``j`` is drawn from ``pmf`` restricted to the arms still eligible (not drawn, under the
    per-group cap); with ``mix = (lam, q)`` from ``(1 - lam) p/Σp + lam q/Σq`` over the eligible arms
    instead (``q`` drops out of a position where no eligible arm has ``q > 0``). A slot's propensity is
    its probability at its position. Returns the slots and the first position's distribution
    (``None`` when nothing was drawn). The caller holds the lock that guards ``rng``.
    """
    n = len(ids)
    eligible = np.ones(n, dtype=bool)
    per_group: dict[str, int] = {}
    slots: list[ChosenSlot] = []
    first: NDArray[np.float64] | None = None
    for position in range(min(k, n)):
        weights = np.where(eligible, pmf, 0.0)
        p_total = float(weights.sum())
        if p_total <= 0.0:
            break
        if mix is not None:
            q = np.where(eligible, mix[1], 0.0)
            q_total = float(q.sum())
            weights = weights / p_total
            if q_total > 0.0:
                weights = (1.0 - mix[0]) * weights + mix[0] * (q / q_total)
        cdf = np.cumsum(weights)
        total = float(cdf[-1])
        if first is None:
            first = weights / total
        index = min(int(np.searchsorted(cdf, float(rng.random()) * total, side="right")), n - 1)
        while not eligible[index] or weights[index] <= 0.0:  # float edge cases at the top of the cdf
            index -= 1
        slots.append(
            ChosenSlot(
                item_id=ids[index],
                index=index,
                position=position,
                propensity=min(1.0, float(weights[index] / total)),
                score=float(scores[index]),
            )
        )
        mark_drawn(index, eligible, groups, per_group, max_per_group)
    return slots, first
