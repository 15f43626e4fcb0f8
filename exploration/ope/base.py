"""The off-policy estimator interface.

An estimator turns per-round arrays (one *round* = one filled slot of one logged decision) into a
point estimate of a target policy's value and a confidence interval. The public
:meth:`OffPolicyEstimator.estimate` validates the inputs and computes the interval the same way for
every estimator; implementations only say how rounds combine (``_combine``), what their per-round
influence is (``_influence``, for the normal approximation) and whether they need a reward model.

Estimand (slates)
-----------------
A decision fills ``k`` slots by sampling without replacement; the logged propensity of slot ``j`` is
the probability of its item *given the items at positions < j*. Each slot is one round whose
importance weight is ``pi_j(a | x, prefix) / p_j(a | x, prefix)``, where ``pi_j`` is the target
policy's pmf over the candidates still available after the logged prefix. The estimated value is the
expected reward **per slot** when the target policy fills each slot given the items the logging
policy placed before it (position 0: exactly the target's first-slot value). The value averages over
the logged positions; restrict ``positions`` when building the log to evaluate one position.

Confidence intervals
--------------------
``bootstrap`` (default): percentile bootstrap with the estimator's own seeded
``numpy.random.RandomState``; rounds are resampled by *decision* (``cluster="decision"``, slots of one
decision share a user and a context, so they are not independent) or by round (``cluster="round"``:
the scheme of obp, which then gives the same interval as obp's ``estimate_interval`` for the same
seed). ``normal``: ``value ± z_{1-alpha/2} * sd(influence) / sqrt(n)`` with the influence summed per
decision when ``cluster="decision"``.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from statistics import NormalDist
from typing import ClassVar, Literal

import numpy as np
from numpy.typing import NDArray
from pydantic import BaseModel, ConfigDict, Field

from coldstart.errors import InvalidInputError

FloatArray = NDArray[np.float64]


class IntervalConfig(BaseModel):
    """How confidence intervals are computed (see the module docstring).

    Parameters
    ----------
    method
        ``bootstrap`` (percentile bootstrap) or ``normal`` (normal approximation).
    alpha
        Significance level: the interval covers ``1 - alpha``.
    n_bootstrap
        Number of bootstrap resamples.
    cluster
        Resampling unit: ``decision`` (slots of one decision move together) or ``round``.
    seed
        Seed of the bootstrap RNG.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    method: Literal["bootstrap", "normal"] = "bootstrap"
    alpha: float = Field(default=0.05, gt=0.0, lt=1.0)
    n_bootstrap: int = Field(default=1000, ge=10, le=100_000)
    cluster: Literal["decision", "round"] = "decision"
    seed: int = 0


@dataclass(frozen=True)
class OPEInputs:
    """Per-round arrays an estimator consumes; every array is ``(n_rounds,)``.

    Parameters
    ----------
    reward
        Observed reward of the logged slot.
    pscore
        Logged propensity of the slot's item at its position (> 0).
    target_prob
        Target policy's probability of the logged item at that position, given the logged prefix.
    cluster
        Integer id of the decision the round belongs to (bootstrap / normal-CI unit).
    q_hat_logged
        Reward model's prediction for the logged item (DR only).
    q_hat_target
        ``sum_a pi(a) q_hat(a)`` over the available candidates (DR only).
    """

    reward: FloatArray
    pscore: FloatArray
    target_prob: FloatArray
    cluster: NDArray[np.int64]
    q_hat_logged: FloatArray | None = None
    q_hat_target: FloatArray | None = None

    @property
    def n_rounds(self) -> int:
        """Number of rounds."""
        return int(self.reward.shape[0])

    @property
    def weights(self) -> FloatArray:
        """Importance weights ``target_prob / pscore``."""
        return self.target_prob / self.pscore


class Estimate(BaseModel):
    """One estimator's estimate of one target policy's value (expected reward per slot)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    estimator: str
    policy: str
    value: float
    ci_low: float
    ci_high: float
    alpha: float
    ci_method: str
    n_rounds: int
    n_decisions: int
    ess: float = Field(description="Effective sample size of the importance weights, (sum w)^2 / sum w^2.")
    max_weight: float


class OffPolicyEstimator(ABC):
    """Base of IPS, SNIPS and DR.

    Parameters
    ----------
    interval
        Confidence-interval settings (method, alpha, resamples, cluster, seed).
    """

    #: Short name shown in reports.
    name: ClassVar[str] = "estimator"
    #: Whether ``_combine`` reads ``q_hat_logged`` / ``q_hat_target``.
    needs_reward_model: ClassVar[bool] = False

    def __init__(self, interval: IntervalConfig | None = None) -> None:
        self.interval = interval or IntervalConfig()

    # ------------------------------------------------------------------ implementation hooks
    @abstractmethod
    def _combine(self, inputs: OPEInputs, counts: FloatArray) -> FloatArray:
        """Estimates for ``counts`` of shape ``(B, n_rounds)`` (how often each round is drawn).

        Returns ``(B,)``; ``counts`` of all ones give the point estimate.
        """

    @abstractmethod
    def _influence(self, inputs: OPEInputs, value: float) -> FloatArray:
        """Per-round influence ``(n_rounds,)``: the estimate is ``value + mean(influence)`` to first
        order, so ``sd(influence) / sqrt(n)`` is its standard error."""

    # ------------------------------------------------------------------ public API
    def estimate(self, inputs: OPEInputs, policy: str = "target") -> Estimate:
        """Point estimate and confidence interval of the target policy's value.

        Parameters
        ----------
        inputs
            Per-round arrays (validated here: equal shapes, pscore in (0, 1], target_prob in [0, 1],
            finite rewards, reward-model arrays when the estimator needs them).
        policy
            Name of the target policy, copied into the result.
        """
        _validate(inputs, self.name, self.needs_reward_model)
        n = inputs.n_rounds
        value = float(self._combine(inputs, np.ones((1, n)))[0])
        low, high = self._interval(inputs, value)
        w = inputs.weights
        ess = float(w.sum() ** 2 / (w**2).sum()) if np.any(w > 0) else 0.0
        return Estimate(
            estimator=self.name,
            policy=policy,
            value=value,
            ci_low=low,
            ci_high=high,
            alpha=self.interval.alpha,
            ci_method=f"{self.interval.method}/{self.interval.cluster}",
            n_rounds=n,
            n_decisions=int(np.unique(inputs.cluster).size),
            ess=ess,
            max_weight=float(w.max()),
        )

    def bootstrap_values(self, inputs: OPEInputs) -> FloatArray:
        """The ``(n_bootstrap,)`` bootstrap replicates of the estimate (seeded, reproducible)."""
        cfg = self.interval
        n = inputs.n_rounds
        rng = np.random.RandomState(cfg.seed)
        if cfg.cluster == "round":
            groups = np.arange(n)
            n_groups = n
        else:
            _, groups = np.unique(inputs.cluster, return_inverse=True)
            n_groups = int(groups.max()) + 1
        out = np.empty(cfg.n_bootstrap)
        chunk = max(1, min(cfg.n_bootstrap, 4_000_000 // max(n, n_groups, 1)))
        for start in range(0, cfg.n_bootstrap, chunk):
            b = min(cfg.n_bootstrap, start + chunk) - start
            # one call draws the same stream as b calls of size n_groups (obp draws one per replicate)
            drawn = rng.randint(0, n_groups, size=(b, n_groups))
            flat = (drawn + (np.arange(b) * n_groups)[:, None]).ravel()
            group_counts = np.bincount(flat, minlength=b * n_groups).reshape(b, n_groups)
            out[start : start + b] = self._combine(inputs, group_counts[:, groups].astype(np.float64))
        return out

    def _interval(self, inputs: OPEInputs, value: float) -> tuple[float, float]:
        cfg = self.interval
        if cfg.method == "bootstrap":
            reps = self.bootstrap_values(inputs)
            reps = reps[np.isfinite(reps)]
            if reps.size == 0:
                return float("nan"), float("nan")
            return (
                float(np.percentile(reps, 100 * cfg.alpha / 2)),
                float(np.percentile(reps, 100 * (1 - cfg.alpha / 2))),
            )
        infl = self._influence(inputs, value)
        if cfg.cluster == "decision":
            _, groups = np.unique(inputs.cluster, return_inverse=True)
            per_group = np.bincount(groups, weights=infl)
            size = np.bincount(groups).astype(np.float64)
            # cluster-robust: sum per decision, scaled so the variance is of the per-round mean
            se = float(np.sqrt(((per_group - size * infl.mean()) ** 2).sum()) / infl.size)
        else:
            se = float(infl.std(ddof=1) / np.sqrt(infl.size)) if infl.size > 1 else float("nan")
        z = NormalDist().inv_cdf(1 - cfg.alpha / 2)
        return value - z * se, value + z * se


def _validate(inputs: OPEInputs, name: str, needs_reward_model: bool) -> None:
    n = inputs.reward.shape
    if len(n) != 1 or n[0] == 0:
        raise InvalidInputError("reward", n, f"{name}: need a non-empty 1-d array of rewards")
    arrays: dict[str, NDArray[np.float64] | NDArray[np.int64] | None] = {
        "pscore": inputs.pscore,
        "target_prob": inputs.target_prob,
        "cluster": inputs.cluster,
        "q_hat_logged": inputs.q_hat_logged,
        "q_hat_target": inputs.q_hat_target,
    }
    for key, arr in arrays.items():
        if arr is None:
            if needs_reward_model and key.startswith("q_hat"):
                raise InvalidInputError(key, None, f"{name} needs reward-model predictions")
            continue
        if arr.shape != n:
            raise InvalidInputError(key, arr.shape, f"must have the shape of reward {n}")
    if not np.all(np.isfinite(inputs.reward)):
        bad_r = inputs.reward[~np.isfinite(inputs.reward)]
        raise InvalidInputError("reward", bad_r[:5].tolist(), "must be finite")
    bad = ~((inputs.pscore > 0) & (inputs.pscore <= 1))
    if bad.any():
        raise InvalidInputError("pscore", inputs.pscore[bad][:5].tolist(), "must be in (0, 1]")
    bad = ~((inputs.target_prob >= 0) & (inputs.target_prob <= 1 + 1e-9))
    if bad.any():
        raise InvalidInputError("target_prob", inputs.target_prob[bad][:5].tolist(), "must be in [0, 1]")
