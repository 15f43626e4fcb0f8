"""Off-policy evaluation of exploration policies from the decision log (IPS, SNIPS, DR).

Typical use::

    rewards = join_rewards(decisions, interactions, settings.exploration.rewards)
    log = BanditLog.from_decisions(decisions, rewards)
    estimates = evaluate(log, [LoggedPolicy(), UniformPolicy(), GreedyPolicy()], [IPS(), SNIPS(), DR()])

See :mod:`exploration.ope.base` for the estimand with slates and the confidence intervals.
"""

from __future__ import annotations

from exploration.ope.base import Estimate, IntervalConfig, OffPolicyEstimator, OPEInputs
from exploration.ope.config import DRConfig, EstimatorConfig, IPSConfig, SNIPSConfig, build_estimator
from exploration.ope.dr import DR
from exploration.ope.evaluate import evaluate, policy_inputs, target_probabilities
from exploration.ope.ips import IPS
from exploration.ope.log import BanditLog, join_rewards
from exploration.ope.reward_model import RewardModelConfig, RoundCandidates, fit_predict
from exploration.ope.snips import SNIPS
from exploration.ope.targets import GreedyPolicy, LoggedPolicy, ModelPolicy, TargetPolicy, UniformPolicy

__all__ = [
    "DR",
    "IPS",
    "SNIPS",
    "BanditLog",
    "DRConfig",
    "Estimate",
    "EstimatorConfig",
    "GreedyPolicy",
    "IPSConfig",
    "IntervalConfig",
    "LoggedPolicy",
    "ModelPolicy",
    "OPEInputs",
    "OffPolicyEstimator",
    "RewardModelConfig",
    "RoundCandidates",
    "SNIPSConfig",
    "TargetPolicy",
    "UniformPolicy",
    "build_estimator",
    "evaluate",
    "fit_predict",
    "join_rewards",
    "policy_inputs",
    "target_probabilities",
]
