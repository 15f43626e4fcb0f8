"""Self-normalised IPS (SNIPS): ``V = sum_i w_i r_i / sum_i w_i``.

Slightly biased but bounded by the reward range and usually of much lower variance than IPS. Same as
obp's ``SelfNormalizedInverseProbabilityWeighting``. Its bootstrap recomputes the ratio on every
resample (obp bootstraps the per-round terms ``w_i r_i / mean(w)`` of the full sample instead).
"""

from __future__ import annotations

from typing import ClassVar

import numpy as np

from exploration.ope.base import FloatArray, OffPolicyEstimator, OPEInputs


class SNIPS(OffPolicyEstimator):
    """Self-normalised inverse propensity scoring."""

    name: ClassVar[str] = "snips"

    def _combine(self, inputs: OPEInputs, counts: FloatArray) -> FloatArray:
        w = inputs.weights
        num = counts @ (w * inputs.reward)
        den = counts @ w
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.asarray(np.where(den > 0, num / np.where(den > 0, den, 1.0), np.nan), dtype=np.float64)

    def _influence(self, inputs: OPEInputs, value: float) -> FloatArray:
        w = inputs.weights
        mean_w = float(w.mean())
        if mean_w <= 0:
            return np.full(inputs.n_rounds, np.nan)
        return np.asarray(w * (inputs.reward - value) / mean_w, dtype=np.float64)
