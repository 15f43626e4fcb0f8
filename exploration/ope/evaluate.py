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
    prefix); validated: non-negative, zero on unavailable candidates, sums to 1 per round.

    Policies with a vectorised ``pair_probabilities(log, pairs)`` (the built-in ones) skip the
    per-round ``slot_pmf`` calls.
    """
    fast = getattr(policy, "pair_probabilities", None)
    if fast is not None:
        out = np.asarray(fast(log, pairs), dtype=np.float64)
    else:
        out = np.empty(pairs.n_pairs)
        for r in tqdm(range(log.n_rounds), desc=f"pmf {policy.name}", disable=not progress, leave=False):
            d = log.decisions[int(log.decision_index[r])]
            a, b = int(pairs.start[r]), int(pairs.start[r + 1])
            p = np.asarray(policy.slot_pmf(d, pairs.available[a:b].copy()), dtype=np.float64)
            if p.shape != (b - a,):
                raise InvalidInputError(f"{policy.name}.slot_pmf", p.shape, f"expected shape ({b - a},)")
            out[a:b] = p
    where = f"{policy.name}.slot_pmf"
    if out.shape != (pairs.n_pairs,) or not np.all(np.isfinite(out)) or np.any(out < 0):
        raise InvalidInputError(where, out[:10].tolist(), "must be finite and >= 0")
    sums = pairs.per_round_sum(out)
    bad = np.flatnonzero(np.abs(sums - 1.0) > 1e-6)
    if bad.size:
        raise InvalidInputError(
            where, out[pairs.start[bad[0]] : pairs.start[bad[0] + 1]].tolist()[:10], "must sum to 1"
        )
    if np.any(out[~pairs.available] > 0):
        raise InvalidInputError(where, policy.name, "puts mass on an item placed at an earlier position")
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

    The reward model (for DR) is fit once, cross-fitted, and shared by all policies: ``reward_model``
    when given, else the first DR estimator's.
    """
    if log.n_rounds == 0:
        raise InvalidInputError("log", 0, "no logged slots to evaluate")
    pairs = RoundCandidates(log)
    q_hat = None
    if any(e.needs_reward_model for e in estimators):
        if reward_model is None:
            reward_model = next(
                (getattr(e, "reward_model", None) for e in estimators if e.needs_reward_model), None
            )
        q_hat = fit_predict(log, pairs, reward_model)
    results: list[Estimate] = []
    for policy in tqdm(policies, desc="off-policy evaluation", disable=not progress):
        probs = target_probabilities(log, policy, pairs, progress)
        inputs = policy_inputs(log, probs, pairs, q_hat)
        for est in estimators:
            results.append(est.estimate(inputs, policy=policy.name))
    return results
