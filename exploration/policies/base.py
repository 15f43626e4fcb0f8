"""The bandit-policy interface.

A policy maps a context and a set of candidate arms to a pmf over the arms; :meth:`Policy.choose`
samples ``k`` distinct arms from it *without replacement* and logs, for every slot, the probability
with which that arm was drawn at that position (conditional on the arms drawn before it). The public
methods enforce the shared rules (river's ``pull``/``_pull`` pattern), so an implementation only
provides ``_predict`` / ``_learn`` / ``_dump`` / ``_restore``:

* the pmf is finite, normalised and floored at ``min_propensity`` (mixed with uniform), so every
  logged propensity is > 0 and off-policy estimators stay unbiased;
* optional pacing boosts multiply the pmf before normalisation: the logged propensities are the ones
  actually sampled from, boosts included;
* choices are distinct and within the candidates; an optional per-group cap (seller) is honoured by
  renormalising over the still-eligible arms;
* sampling uses the policy's own ``numpy.random.Generator`` seeded at construction.
"""

from __future__ import annotations

import threading
from abc import ABC, abstractmethod
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import overload

import numpy as np
from numpy.typing import NDArray

from coldstart.errors import ArtifactError, InvalidInputError
from exploration.policies.sampling import ChosenSlot, draw_slots

ContextValue = float | str
Context = Mapping[str, ContextValue]


@dataclass(frozen=True)
class Arm:
    """One candidate arm of one request.

    Parameters
    ----------
    item_id
        The item's id; unique within a request.
    features
        Numeric features of this arm *for this request* (e.g. ``dot`` = user·item, item age in
        log-hours, pacing boost); they are logged with the decision so learning can replay them.
    group
        Group for the per-group cap (the seller id); ``""`` = no group.
    """

    item_id: str
    features: Mapping[str, float] = field(default_factory=dict)
    group: str = ""


class ArmBatch(Sequence[Arm]):
    """Arms that share one feature layout, stored column-wise: a ``Sequence[Arm]`` for every policy,
    and a ``(n_arms, n_features)`` matrix for the ones that can use it directly.

    The slot service builds one per request: a policy that reads :attr:`matrix` (VW's example
    formatting) skips building and re-reading ``n_arms`` feature dicts; any other access makes the
    :class:`Arm` objects once, on first use.

    Parameters
    ----------
    item_ids
        ``(n_arms,)`` unique item ids.
    feature_names
        ``(n_features,)`` names of the matrix columns.
    matrix
        ``(n_arms, n_features)`` float64 feature values.
    groups
        ``(n_arms,)`` per-group-cap groups (``""`` = none); default all ``""``.
    """

    def __init__(
        self,
        item_ids: Sequence[str],
        feature_names: Sequence[str],
        matrix: NDArray[np.float64],
        groups: Sequence[str] | None = None,
    ) -> None:
        values = np.asarray(matrix, dtype=np.float64)
        n, f = len(item_ids), len(feature_names)
        if values.shape != (n, f):
            raise InvalidInputError("matrix", values.shape, f"must have shape ({n}, {f})")
        if groups is not None and len(groups) != n:
            raise InvalidInputError("groups", len(groups), f"must have {n} entries")
        self.item_ids = list(item_ids)
        self.feature_names = tuple(feature_names)
        self.matrix = values
        self.groups = list(groups) if groups is not None else [""] * n
        self._arms: list[Arm] | None = None

    def arms(self) -> list[Arm]:
        """The arms as :class:`Arm` objects (made once)."""
        if self._arms is None:
            names = self.feature_names
            self._arms = [
                Arm(item_id, dict(zip(names, row, strict=True)), group)
                for item_id, row, group in zip(self.item_ids, self.matrix.tolist(), self.groups, strict=True)
            ]
        return self._arms

    def __len__(self) -> int:
        return len(self.item_ids)

    @overload
    def __getitem__(self, index: int) -> Arm: ...
    @overload
    def __getitem__(self, index: slice) -> Sequence[Arm]: ...
    def __getitem__(self, index: int | slice) -> Arm | Sequence[Arm]:
        return self.arms()[index]

    def __iter__(self) -> Iterator[Arm]:
        return iter(self.arms())


def arm_ids(arms: Sequence[Arm]) -> list[str]:
    """The arms' item ids (no :class:`Arm` objects made for an :class:`ArmBatch`)."""
    return list(arms.item_ids) if isinstance(arms, ArmBatch) else [a.item_id for a in arms]


def arm_groups(arms: Sequence[Arm]) -> list[str]:
    """The arms' groups (no :class:`Arm` objects made for an :class:`ArmBatch`)."""
    return list(arms.groups) if isinstance(arms, ArmBatch) else [a.group for a in arms]


@dataclass(frozen=True)
class Choice:
    """Result of :meth:`Policy.choose`.

    Parameters
    ----------
    pmf
        ``(n_arms,)`` float64, sums to 1, every entry >= ``min_propensity``: the distribution the first
        slot was drawn from (after pacing boosts and the floor).
    scores
        ``(n_arms,)`` float64, the model's scores (higher is better).
    slots
        ``min(k, n_eligible)`` distinct slots in position order.
    """

    pmf: NDArray[np.float64]
    scores: NDArray[np.float64]
    slots: tuple[ChosenSlot, ...]


class Policy(ABC):
    """A contextual bandit policy over a variable set of arms (action-dependent features).

    Parameters
    ----------
    min_propensity
        Floor of every arm's probability, in (0, 0.5].
    seed
        Seed of the policy's own random generator (and of the model's, where it has one).
    """

    #: Short name logged in decisions.
    name: str = "policy"

    def __init__(self, *, min_propensity: float = 1e-4, seed: int = 0) -> None:
        if not 0.0 < min_propensity <= 0.5:
            raise InvalidInputError("min_propensity", min_propensity, "must be in (0, 0.5]")
        self.min_propensity = min_propensity
        self.seed = seed
        self._rng = np.random.default_rng(seed)
        self._lock = threading.RLock()
        self._n_learned = 0

    # ------------------------------------------------------------------ implementation hooks
    @abstractmethod
    def _predict(
        self, context: Context, arms: Sequence[Arm]
    ) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
        """Return ``(pmf, scores)``, each ``(len(arms),)``; the pmf need not be normalised or floored."""

    @abstractmethod
    def _learn(
        self, context: Context, arms: Sequence[Arm], index: int, propensity: float, reward: float
    ) -> None:
        """Update on one logged event: ``arms[index]`` was shown with ``propensity``, got ``reward``."""

    @abstractmethod
    def _dump(self) -> bytes:
        """Serialise the learned state."""

    @abstractmethod
    def _restore(self, data: bytes) -> None:
        """Replace the learned state by one produced by :meth:`_dump`."""

    # ------------------------------------------------------------------ public, rule-enforcing API
    @property
    def n_learned(self) -> int:
        """Number of events learned since construction or the last load."""
        return self._n_learned

    def pmf(
        self,
        context: Context,
        arms: Sequence[Arm],
        boosts: Sequence[float] | NDArray[np.float64] | None = None,
    ) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
        """The floored, normalised first-slot pmf and the scores, both ``(len(arms),)`` float64."""
        n = len(arms)
        _check_arms(arms)
        if n == 0:
            return np.zeros(0), np.zeros(0)
        with self._lock:
            raw_pmf, raw_scores = self._predict(context, arms)
        pmf = np.asarray(raw_pmf, dtype=np.float64).reshape(-1)
        scores = np.asarray(raw_scores, dtype=np.float64).reshape(-1)
        if pmf.shape != (n,) or scores.shape != (n,):
            raise ArtifactError(
                f"{self.name}: pmf/scores of shape {pmf.shape}/{scores.shape}, expected ({n},)"
            )
        if not np.all(np.isfinite(pmf)) or np.any(pmf < 0) or pmf.sum() <= 0:
            raise ArtifactError(f"{self.name}: invalid pmf {pmf.tolist()[:10]}")
        scores = np.where(np.isfinite(scores), scores, 0.0)
        if boosts is not None:
            b = np.asarray(boosts, dtype=np.float64).reshape(-1)
            if b.shape != (n,) or not np.all(np.isfinite(b)) or np.any(b <= 0):
                raise InvalidInputError("boosts", b.tolist()[:10], f"must be {n} finite values > 0")
            pmf = pmf * b
        pmf = pmf / pmf.sum()
        lam = min(1.0, self.min_propensity * n)
        pmf = (1.0 - lam) * pmf + lam / n
        pmf = pmf / pmf.sum()
        return pmf, scores

    def choose(
        self,
        context: Context,
        arms: Sequence[Arm],
        k: int,
        *,
        boosts: Sequence[float] | NDArray[np.float64] | None = None,
        max_per_group: int | None = None,
    ) -> Choice:
        """Sample up to ``k`` distinct arms without replacement.

        Parameters
        ----------
        context
            Shared (request-level) features: numbers or categorical strings.
        arms
            The candidates, unique ``item_id`` s.
        k
            Number of slots wanted (>= 1); fewer are returned when fewer arms are eligible.
        boosts
            Optional ``(len(arms),)`` multipliers (> 0) of the pmf, e.g. exposure pacing.
        max_per_group
            Optional cap on the number of slots given to arms of one non-empty ``group``.
        """
        if k < 1:
            raise InvalidInputError("k", k, "must be >= 1")
        if max_per_group is not None and max_per_group < 1:
            raise InvalidInputError("max_per_group", max_per_group, "must be >= 1")
        pmf, scores = self.pmf(context, arms, boosts)
        with self._lock:
            slots, _ = draw_slots(self._rng, pmf, k, arm_ids(arms), scores, arm_groups(arms), max_per_group)
        return Choice(pmf=pmf, scores=scores, slots=tuple(slots))

    def learn(
        self, context: Context, arms: Sequence[Arm], index: int, propensity: float, reward: float
    ) -> None:
        """Learn from one logged event (``arms[index]`` shown with ``propensity``, observed ``reward``)."""
        _check_arms(arms)
        if not 0 <= index < len(arms):
            raise InvalidInputError("index", index, f"must be in [0, {len(arms)})")
        if not 0.0 < propensity <= 1.0:
            raise InvalidInputError("propensity", propensity, "must be in (0, 1]")
        if not np.isfinite(reward):
            raise InvalidInputError("reward", reward, "must be finite")
        with self._lock:
            self._learn(context, arms, index, propensity, float(reward))
            self._n_learned += 1

    def learn_slots(
        self,
        context: Context,
        arms: Sequence[Arm],
        slots: Sequence[tuple[str, float]],
        rewards: Mapping[str, float],
    ) -> int:
        """Learn from a whole multi-slot decision.

        Slot ``j`` was drawn from the arms left after slots ``0..j-1``, so it is learned on exactly that
        set with its logged (conditional) propensity. ``slots`` are ``(item_id, propensity)`` in position
        order; ``rewards`` maps item ids to rewards (missing = 0). Returns the number of events learned.
        """
        remaining = list(arms)
        learned = 0
        for item_id, propensity in slots:
            index = next((i for i, a in enumerate(remaining) if a.item_id == item_id), None)
            if index is None:
                raise InvalidInputError("slots.item_id", item_id, "is not among the candidates")
            self.learn(context, remaining, index, propensity, float(rewards.get(item_id, 0.0)))
            learned += 1
            del remaining[index]
        return learned

    def to_bytes(self) -> bytes:
        """The learned state as bytes (:meth:`load_bytes` restores it)."""
        with self._lock:
            return self._dump()

    def load_bytes(self, data: bytes) -> None:
        """Restore a state produced by :meth:`to_bytes` of a policy with the same configuration."""
        with self._lock:
            self._restore(data)
            self._n_learned = 0

    def save(self, path: Path) -> None:
        """Write :meth:`to_bytes` to ``path``."""
        Path(path).write_bytes(self.to_bytes())

    def load(self, path: Path) -> None:
        """Restore the state saved at ``path``."""
        p = Path(path)
        if not p.is_file():
            raise ArtifactError(f"no policy state at {p}")
        self.load_bytes(p.read_bytes())


def _check_arms(arms: Sequence[Arm]) -> None:
    if isinstance(arms, ArmBatch) and len(set(arms.item_ids)) == len(arms):
        return
    seen: set[str] = set()
    for arm in arms:
        if arm.item_id in seen:
            raise InvalidInputError("arms.item_id", arm.item_id, "duplicate candidate")
        seen.add(arm.item_id)
