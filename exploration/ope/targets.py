"""Target policies evaluated off-policy: the logged policy, uniform, greedy, and a saved model.

A target policy gives, for one logged decision and one slot, a pmf over the decision's candidates
that is zero on the items already placed at earlier positions (``available`` is False there).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Protocol, runtime_checkable

import numpy as np
from numpy.typing import NDArray

from coldstart.decisions import Decision
from coldstart.errors import InvalidInputError
from exploration.policies.base import Arm

if TYPE_CHECKING:
    from exploration.ope.log import BanditLog
    from exploration.ope.reward_model import RoundCandidates

FloatArray = NDArray[np.float64]


@runtime_checkable
class TargetPolicy(Protocol):
    """What OPE needs of a policy: its pmf over a logged decision's still-available candidates."""

    @property
    def name(self) -> str:
        """Label shown in reports."""
        ...

    def slot_pmf(self, decision: Decision, available: NDArray[np.bool_]) -> FloatArray:
        """``(len(decision.candidates),)`` probabilities, zero where ``available`` is False, summing to 1."""
        ...


class SupportsPmf(Protocol):
    """A bandit policy with a first-slot pmf (``exploration.policies.base.Policy`` has one)."""

    def pmf(self, context: Mapping[str, float | str], arms: Sequence[Arm]) -> tuple[FloatArray, FloatArray]:
        """``(pmf, scores)`` over ``arms``."""
        ...


def _renormalise(first: FloatArray, available: NDArray[np.bool_], who: str) -> FloatArray:
    p = np.where(available, first, 0.0)
    total = float(p.sum())
    if total <= 0.0:
        raise InvalidInputError("policy", who, "gives probability 0 to every available candidate")
    return np.asarray(p / total, dtype=np.float64)


def _renormalise_pairs(weights: FloatArray, pairs: RoundCandidates, who: str) -> FloatArray:
    w = np.where(pairs.available, weights, 0.0)
    totals = pairs.per_round_sum(w)
    if np.any(totals <= 0):
        raise InvalidInputError("policy", who, "gives probability 0 to every available candidate")
    return np.asarray(w / totals[pairs.round], dtype=np.float64)


class LoggedPolicy:
    """The logging policy: its logged first-slot pmf, renormalised over the available candidates
    (how ``Policy.choose`` samples later slots)."""

    name = "logged"

    def pair_probabilities(self, log: BanditLog, pairs: RoundCandidates) -> FloatArray:
        """Vectorised :meth:`slot_pmf` over every (round, candidate) pair."""
        return _renormalise_pairs(pairs.cand_prob[pairs.flat], pairs, self.name)

    def slot_pmf(self, decision: Decision, available: NDArray[np.bool_]) -> FloatArray:
        first = np.array([c.probability for c in decision.candidates], dtype=np.float64)
        return _renormalise(first, available, self.name)


class UniformPolicy:
    """Uniformly random over the available candidates."""

    name = "uniform"

    def pair_probabilities(self, log: BanditLog, pairs: RoundCandidates) -> FloatArray:
        """Vectorised :meth:`slot_pmf` over every (round, candidate) pair."""
        return _renormalise_pairs(np.ones(pairs.n_pairs), pairs, self.name)

    def slot_pmf(self, decision: Decision, available: NDArray[np.bool_]) -> FloatArray:
        return np.asarray(available / available.sum(), dtype=np.float64)


class GreedyPolicy:
    """Deterministic: the available candidate with the highest logged ``score`` (ties share the mass).

    Parameters
    ----------
    feature
        Rank by this candidate feature instead of the logged score (``None`` = score).
    """

    def __init__(self, feature: str | None = None) -> None:
        self.feature = feature
        self.name = "greedy" if feature is None else f"greedy[{feature}]"

    def pair_probabilities(self, log: BanditLog, pairs: RoundCandidates) -> FloatArray:
        """Vectorised :meth:`slot_pmf` over every (round, candidate) pair."""
        if self.feature is None:
            flat = pairs.cand_score
        else:
            key = self.feature
            flat = np.array(
                [c.features.get(key, -np.inf) for d in log.decisions for c in d.candidates], dtype=np.float64
            )
        s = np.where(pairs.available, flat[pairs.flat], -np.inf)
        best = np.maximum.reduceat(s, pairs.start[:-1])
        top = pairs.available & (s == best[pairs.round])
        return _renormalise_pairs(top.astype(np.float64), pairs, self.name)

    def slot_pmf(self, decision: Decision, available: NDArray[np.bool_]) -> FloatArray:
        if self.feature is None:
            s = np.array([c.score for c in decision.candidates], dtype=np.float64)
        else:
            values = [c.features.get(self.feature, -np.inf) for c in decision.candidates]
            s = np.array(values, dtype=np.float64)
        s = np.where(available, s, -np.inf)
        top = (s == s.max()) & available
        return np.asarray(top / top.sum(), dtype=np.float64)


class ModelPolicy:
    """A saved bandit model (anything with ``pmf(context, arms)``, e.g. a loaded
    ``exploration.policies`` policy), evaluated on the logged candidates and their logged features.

    Parameters
    ----------
    policy
        The model.
    name
        Label shown in reports.
    """

    def __init__(self, policy: SupportsPmf, name: str = "model") -> None:
        self.policy = policy
        self.name = name
        self._cache: dict[str, FloatArray] = {}

    def slot_pmf(self, decision: Decision, available: NDArray[np.bool_]) -> FloatArray:
        first = self._cache.get(decision.decision_id)
        if first is None:
            arms = [Arm(item_id=c.item_id, features=dict(c.features)) for c in decision.candidates]
            pmf, _ = self.policy.pmf(decision.context, arms)
            first = np.asarray(pmf, dtype=np.float64)
            if len(self._cache) > 100_000:
                self._cache.clear()
            self._cache[decision.decision_id] = first
        return _renormalise(first, available, self.name)
