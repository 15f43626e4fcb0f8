"""Bayesian shrinkage warm-up: the served vector moves from the content prior toward the behavioural
estimate with a weight that grows with evidence (see docs/warmup.md for the derivation).

Model: each interaction j of weight w_j with counterpart x_j (the user's vector for an item) is a noisy
observation of the item's behavioural location ``b = ρ · x``; with a Gaussian prior ``v ~ N(c, σ²/κ)``
the posterior mean is ``c + λ (ρ m − c)`` with ``m = Σ w_j x_j / Σ |w_j|`` and ``λ = n / (n + κ)``,
``n = Σ |w_j|``. ``δ = λ (ρ m − c)`` is then clipped to ``‖δ‖ ≤ δmax ‖c‖`` by the base class.
"""

from __future__ import annotations

from typing import Literal

import numpy as np
from numpy.typing import NDArray
from pydantic import BaseModel, ConfigDict, Field

from models.warmup.base import AnyRows, F32Rows, Rows, Vector, WarmupModel


class ShrinkageConfig(BaseModel):
    """Hyperparameters of :class:`ShrinkageWarmup` (pydantic, ``extra='forbid'``)."""

    model_config = ConfigDict(extra="forbid")

    type: Literal["shrinkage"] = "shrinkage"
    prior_strength: float = Field(default=5.0, gt=0, description="κ: evidence weight at which λ = 1/2")
    user_prior_strength: float = Field(default=5.0, gt=0, description="κ for user vectors")
    behavior_scale: float = Field(default=1.0, gt=0, description="ρ: maps mean user vectors to item scale")
    user_behavior_scale: float = Field(default=1.0, gt=0, description="ρ for users (mean item vectors)")
    delta_max: float = Field(default=1.0, gt=0, description="bound on ‖δ‖ relative to ‖c‖")
    warm_after: int = Field(default=20, ge=1, description="positives after which an item is 'warm'")
    weights: dict[str, float] = Field(
        default_factory=lambda: {
            "impression": 0.0,
            "click": 1.0,
            "add_to_cart": 2.0,
            "purchase": 3.0,
            "rating_positive": 1.0,
            "rating_negative": -0.5,
        },
        description="evidence weight per interaction kind",
    )


class ShrinkageWarmup(WarmupModel):
    """Posterior-mean blending of content prior and behavioural mean.

    Parameters
    ----------
    prior_strength, user_prior_strength
        κ for items and users (evidence units).
    behavior_scale, user_behavior_scale
        ρ for items and users.
    delta_max, warm_after
        See :class:`~models.warmup.base.WarmupModel`.
    """

    def __init__(
        self,
        prior_strength: float = 5.0,
        user_prior_strength: float = 5.0,
        behavior_scale: float = 1.0,
        user_behavior_scale: float = 1.0,
        delta_max: float = 1.0,
        warm_after: int = 20,
    ) -> None:
        super().__init__(delta_max=delta_max, warm_after=warm_after)
        self.prior_strength = float(prior_strength)
        self.user_prior_strength = float(user_prior_strength)
        self.behavior_scale = float(behavior_scale)
        self.user_behavior_scale = float(user_behavior_scale)

    def evidence_weight(self, evidence: float, side: str = "item") -> float:
        """λ = n / (n + κ) ∈ [0, 1): the share of the behavioural estimate in the served vector."""
        kappa = self.prior_strength if side == "item" else self.user_prior_strength
        return evidence / (evidence + kappa) if evidence > 0 else 0.0

    def behavior_vector(self, weighted_sum: Vector, evidence: float, side: str = "item") -> Vector:
        """Behaviour-only estimate ``ρ m`` (zeros without evidence), shape ``(d,)``."""
        if evidence <= 0:
            return np.zeros_like(weighted_sum)
        rho = self.behavior_scale if side == "item" else self.user_behavior_scale
        return np.asarray(rho * weighted_sum / evidence, dtype=np.float32)

    def _delta(self, prior: Vector, weighted_sum: Vector, evidence: float, side: str) -> Vector:
        lam = self.evidence_weight(evidence, side)
        target = self.behavior_vector(weighted_sum, evidence, side)
        return np.asarray(lam * (target - prior), dtype=np.float32)

    def _statistics(self, prior: AnyRows, counterpart: Rows, weight: Rows, side: str) -> Rows:
        return np.asarray(weight[:, None] * counterpart)

    def _deltas(self, prior: AnyRows, sums: F32Rows, evidence: Rows, side: str) -> AnyRows:
        kappa = self.prior_strength if side == "item" else self.user_prior_strength
        rho = self.behavior_scale if side == "item" else self.user_behavior_scale
        n = np.where(evidence > 0, evidence, 1.0)[:, None]
        lam = np.where(evidence > 0, evidence / (evidence + kappa), 0.0)[:, None]
        target = rho * sums.astype(np.float64) / n
        return np.asarray(lam * (target - prior.astype(np.float64)))


def fit_behavior_scale(content: NDArray[np.float32], behavior_mean: NDArray[np.float32]) -> float:
    """Least-squares ρ minimising ``Σ‖c_i − ρ m_i‖²`` over warm items.

    Parameters
    ----------
    content
        ``(n, d)`` content vectors of warm (training) items.
    behavior_mean
        ``(n, d)`` weighted mean counterpart vectors ``m_i`` of the same items.
    """
    c = np.asarray(content, dtype=np.float64)
    m = np.asarray(behavior_mean, dtype=np.float64)
    denom = float(np.sum(m * m))
    if denom <= 0:
        return 1.0
    rho = float(np.sum(c * m) / denom)
    return rho if rho > 0 else 1.0


def build_shrinkage(config: ShrinkageConfig) -> ShrinkageWarmup:
    """The shrinkage warm-up ``config`` describes."""
    return ShrinkageWarmup(
        prior_strength=config.prior_strength,
        user_prior_strength=config.user_prior_strength,
        behavior_scale=config.behavior_scale,
        user_behavior_scale=config.user_behavior_scale,
        delta_max=config.delta_max,
        warm_after=config.warm_after,
    )
