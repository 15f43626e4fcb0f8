"""Inverse propensity scoring (IPS): ``V = mean_i w_i r_i`` with ``w_i = pi(a_i) / p(a_i)``.

Unbiased when every action the target can take has a logged propensity > 0; its variance grows
with the importance weights (see ``Estimate.ess``). Same as obp's ``InverseProbabilityWeighting``
without clipping.
"""

from __future__ import annotations

from typing import ClassVar

import numpy as np

from exploration.ope.base import FloatArray, OffPolicyEstimator, OPEInputs


class IPS(OffPolicyEstimator):
    """Inverse propensity scoring."""

    name: ClassVar[str] = "ips"

    def _combine(self, inputs: OPEInputs, counts: FloatArray) -> FloatArray:
        values = inputs.weights * inputs.reward
        return np.asarray(counts @ values / counts.sum(axis=1), dtype=np.float64)

    def _influence(self, inputs: OPEInputs, value: float) -> FloatArray:
        return np.asarray(inputs.weights * inputs.reward - value, dtype=np.float64)
