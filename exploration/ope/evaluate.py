"""Evaluate target policies on a logged bandit log with a set of estimators."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from numpy.typing import NDArray
from tqdm.auto import tqdm

from coldstart.errors import InvalidInputError
from exploration.ope.base import Estimate, OffPolicyEstimator, OPEInputs
from exploration.ope.log import BanditLog
from exploration.ope.reward_model import RewardModelConfig, RoundCandidates, fit_predict
from exploration.ope.targets import TargetPolicy

FloatArray = NDArray[np.float64]


def target_probabilities(
    log: BanditLog, policy: TargetPolicy, pairs: RoundCandidates, progress: bool = False
) -> FloatArray:
    """``(n_pairs,)`` probability the target gives each candidate at each round (given the logged
    prefix); validated: zero on unavailable candidates, sums to 1 per round."""
    out = np.empty(pairs.n_pairs)
    rounds = range(log.n_rounds)
    for r in tqdm(rounds, desc=f"pmf {policy.name}", disable=not progress, leave=False):
        d = log.decisions[int(log.decision_index[r])]
        avail = log.available(r)
        p = np.asarray(policy.slot_pmf(d, avail), dtype=np.float64)
        if p.shape != avail.shape:
            raise InvalidInputError(f"{policy.name}.slot_pmf", p.shape, f"expected shape {avail.shape}")
        if not np.all(np.isfinite(p)) or np.any(p < 0) or abs(float(p.sum()) - 1.0) > 1e-6:
            raise InvalidInputError(f"{policy.name}.slot_pmf", p.tolist()[:10], "must be a pmf (>=0, sum 1)")
        if np.any(p[~avail] > 0):
            raise InvalidInputError(
                f"{policy.name}.slot_pmf", p.tolist()[:10], "puts mass on an item placed earlier"
            )
        out[pairs.start[r] : pairs.start[r + 1]] = p
    return out


def policy_inputs(
    log: BanditLog, target_pairs: FloatArray, pairs: RoundCandidates, q_hat: FloatArray | None = None
) -> OPEInputs:
    """Per-round estimator inputs from the target's pair probabilities and optional reward-model
    predictions (both ``(n_pairs,)``)."""
    q_logged: FloatArray | None = None
    q_target: FloatArray | None = None
    if q_hat is not None:
        q_logged = q_hat[pairs.chosen_row]
        q_target = np.bincount(pairs.round, weights=target_pairs * q_hat, minlength=log.n_rounds).astype(
            np.float64
        )
    return OPEInputs(
        reward=log.reward,
        pscore=log.pscore,
        target_prob=target_pairs[pairs.chosen_row],
        cluster=log.decision_index,
        q_hat_logged=q_logged,
        q_hat_target=q_target,
    )


def evaluate(
    log: BanditLog,
    policies: Sequence[TargetPolicy],
    estimators: Sequence[OffPolicyEstimator],
    reward_model: RewardModelConfig | None = None,
    progress: bool = False,
) -> list[Estimate]:
    """Every estimator's estimate of every policy's value (expected reward per slot).

    The reward model (for DR) is fit once, cross-fitted, and shared by all policies.
    """
    if log.n_rounds == 0:
        raise InvalidInputError("log", 0, "no logged slots to evaluate")
    pairs = RoundCandidates(log)
    q_hat = fit_predict(log, pairs, reward_model) if any(e.needs_reward_model for e in estimators) else None
    results: list[Estimate] = []
    for policy in tqdm(policies, desc="off-policy evaluation", disable=not progress):
        probs = target_probabilities(log, policy, pairs, progress)
        inputs = policy_inputs(log, probs, pairs, q_hat)
        for est in estimators:
            results.append(est.estimate(inputs, policy=policy.name))
    return results
