"""Baseline policies: uniform random (pure exploration) and content-greedy (no exploration)."""

from __future__ import annotations

import json
from collections.abc import Sequence

import numpy as np
from numpy.typing import NDArray

from coldstart.errors import ArtifactError
from exploration.policies.base import Arm, Context, Policy


class UniformPolicy(Policy):
    """Every candidate equally likely; learns nothing."""

    name = "uniform"

    def _predict(
        self, context: Context, arms: Sequence[Arm]
    ) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
        n = len(arms)
        return np.full(n, 1.0 / n), np.zeros(n)

    def _learn(
        self, context: Context, arms: Sequence[Arm], index: int, propensity: float, reward: float
    ) -> None:
        return None

    def _dump(self) -> bytes:
        return json.dumps({"policy": self.name}).encode()

    def _restore(self, data: bytes) -> None:
        _check_state(data, self.name)


class GreedyPolicy(Policy):
    """Ranks by one arm feature (default ``dot`` = user·item); all mass on the best (ties split).

    Only the base class's ``min_propensity`` floor keeps other arms possible, so this is the
    "no exploration" baseline. It learns nothing.

    Parameters
    ----------
    feature
        Name of the arm feature to rank by (missing = 0).
    """

    name = "greedy"

    def __init__(self, feature: str = "dot", *, min_propensity: float = 1e-4, seed: int = 0) -> None:
        super().__init__(min_propensity=min_propensity, seed=seed)
        self.feature = feature

    def _predict(
        self, context: Context, arms: Sequence[Arm]
    ) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
        scores = np.array([float(a.features.get(self.feature, 0.0)) for a in arms], dtype=np.float64)
        best = scores >= scores.max()
        return best.astype(np.float64), scores

    def _learn(
        self, context: Context, arms: Sequence[Arm], index: int, propensity: float, reward: float
    ) -> None:
        return None

    def _dump(self) -> bytes:
        return json.dumps({"policy": self.name, "feature": self.feature}).encode()

    def _restore(self, data: bytes) -> None:
        state = _check_state(data, self.name)
        self.feature = str(state.get("feature", self.feature))


def _check_state(data: bytes, name: str) -> dict[str, object]:
    try:
        state = json.loads(data.decode())
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ArtifactError(f"{name}: unreadable state") from exc
    if not isinstance(state, dict) or state.get("policy") != name:
        raise ArtifactError(f"{name}: state of another policy: {str(state)[:80]}")
    return state
