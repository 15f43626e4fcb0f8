"""Doubly robust (DR): ``V = mean_i [ w_i (r_i - q(x_i, a_i)) + sum_a pi(a|x_i) q(x_i, a) ]``.

Unbiased if either the propensities or the reward model ``q`` are right; the model's predictions
come from :mod:`exploration.ope.reward_model` (cross-fitted by decision, so a round's prediction
never saw its own reward). Same as obp's ``DoublyRobust`` without clipping, given the same ``q``.
"""

from __future__ import annotations

from typing import ClassVar

import numpy as np

from exploration.ope.base import FloatArray, IntervalConfig, OffPolicyEstimator, OPEInputs
from exploration.ope.reward_model import RewardModelConfig


def _terms(inputs: OPEInputs) -> FloatArray:
    assert inputs.q_hat_logged is not None and inputs.q_hat_target is not None  # validated by estimate()
    return np.asarray(
        inputs.weights * (inputs.reward - inputs.q_hat_logged) + inputs.q_hat_target, dtype=np.float64
    )


class DR(OffPolicyEstimator):
    """Doubly robust estimator.

    Parameters
    ----------
    interval
        Confidence-interval settings.
    reward_model
        The reward model :func:`exploration.ope.evaluate` fits for it (cross-fitted ridge by default).
    """

    name: ClassVar[str] = "dr"
    needs_reward_model: ClassVar[bool] = True

    def __init__(
        self, interval: IntervalConfig | None = None, reward_model: RewardModelConfig | None = None
    ) -> None:
        super().__init__(interval)
        self.reward_model = reward_model or RewardModelConfig()

    def _combine(self, inputs: OPEInputs, counts: FloatArray) -> FloatArray:
        return np.asarray(counts @ _terms(inputs) / counts.sum(axis=1), dtype=np.float64)

    def _influence(self, inputs: OPEInputs, value: float) -> FloatArray:
        return _terms(inputs) - value
