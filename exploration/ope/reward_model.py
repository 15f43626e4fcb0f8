"""The reward model of the doubly robust estimator: ``q(x, a, position)``, a regression on the logged
features, cross-fitted by decision.

Features of a (round, candidate) pair: the candidate's logged numeric features and score, the
decision's numeric context (string values one-hot as ``key=value``), a one-hot of the slot position
and, with ``interactions``, the products context x candidate features. With ``n_folds >= 2`` the
decisions are split into folds (seeded) and each round is predicted by a model fit on the other
folds, so a round's own reward never enters its prediction; ``n_folds=1`` fits on the whole log.
"""

from __future__ import annotations

from typing import Literal

import numpy as np
from numpy.typing import NDArray
from pydantic import BaseModel, ConfigDict, Field

from exploration.ope.log import BanditLog

FloatArray = NDArray[np.float64]


class RewardModelConfig(BaseModel):
    """Reward-model settings.

    Parameters
    ----------
    type
        ``ridge`` (linear regression, L2) or ``logistic`` (rewards in {0, 1}; falls back to ridge when
        a training fold has a single class or rewards are not binary). Both are solved in numpy
        (closed form / Newton), on standardised features.
    alpha
        L2 strength on the standardised coefficients (the intercept is not penalised).
    n_folds
        Cross-fitting folds over decisions (1 = fit and predict on the whole log).
    interactions
        Add context x candidate feature products.
    seed
        Seed of the fold assignment.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    type: Literal["ridge", "logistic"] = "ridge"
    alpha: float = Field(default=1.0, gt=0.0)
    n_folds: int = Field(default=2, ge=1, le=20)
    interactions: bool = True
    seed: int = 0


class RoundCandidates:
    """Every (round, candidate) pair of a log, in round order: ``round`` and ``candidate`` are
    ``(n_pairs,)``; ``start[r]:start[r+1]`` are round ``r``'s pairs; ``chosen_row[r]`` is the pair of
    the logged item."""

    def __init__(self, log: BanditLog) -> None:
        sizes = np.array([len(log.decisions[int(i)].candidates) for i in log.decision_index], dtype=np.int64)
        self.start = np.concatenate([[0], np.cumsum(sizes)]).astype(np.int64)
        self.round = np.repeat(np.arange(log.n_rounds, dtype=np.int64), sizes)
        pair = np.arange(int(self.start[-1]), dtype=np.int64)
        self.candidate = (pair - self.start[self.round]).astype(np.int64)
        self.chosen_row = (self.start[:-1] + log.chosen).astype(np.int64)

    @property
    def n_pairs(self) -> int:
        """Number of (round, candidate) pairs."""
        return int(self.start[-1])


def design_matrix(log: BanditLog, pairs: RoundCandidates, interactions: bool = True) -> FloatArray:
    """``(n_pairs, n_features)`` float64 features of every (round, candidate) pair (see module doc)."""
    cand_keys: set[str] = set()
    ctx_keys: set[str] = set()
    for d in log.decisions:
        for c in d.candidates:
            cand_keys.update(c.features)
        for k, v in d.context.items():
            ctx_keys.add(k if not isinstance(v, str) else f"{k}={v}")
    cand_names = sorted(cand_keys)
    ctx_names = sorted(ctx_keys)
    cand_col = {k: i for i, k in enumerate(cand_names)}
    ctx_col = {k: i for i, k in enumerate(ctx_names)}
    # per-decision candidate blocks and contexts
    cand_blocks: list[FloatArray] = []
    ctx = np.zeros((log.n_decisions, len(ctx_names)))
    for j, d in enumerate(log.decisions):
        block = np.zeros((len(d.candidates), len(cand_names) + 1))
        for i, c in enumerate(d.candidates):
            for k, v in c.features.items():
                block[i, cand_col[k]] = v
            block[i, -1] = c.score
        cand_blocks.append(block)
        for k, v in d.context.items():
            if isinstance(v, str):
                ctx[j, ctx_col[f"{k}={v}"]] = 1.0
            else:
                ctx[j, ctx_col[k]] = float(v)
    offsets = np.concatenate([[0], np.cumsum([b.shape[0] for b in cand_blocks])]).astype(np.int64)
    all_cands = np.concatenate(cand_blocks) if cand_blocks else np.zeros((0, len(cand_names) + 1))
    dec = log.decision_index[pairs.round]
    cand = all_cands[offsets[dec] + pairs.candidate]
    context = ctx[dec]
    n_pos = int(log.position.max()) + 1 if log.n_rounds else 1
    pos = np.zeros((pairs.n_pairs, n_pos))
    pos[np.arange(pairs.n_pairs), log.position[pairs.round]] = 1.0
    parts = [cand, context, pos]
    if interactions and context.shape[1] and cand.shape[1]:
        parts.append((context[:, :, None] * cand[:, None, :]).reshape(pairs.n_pairs, -1))
    return np.asarray(np.hstack(parts), dtype=np.float64)


def _standardise(x: FloatArray) -> tuple[FloatArray, FloatArray]:
    mean = x.mean(axis=0)
    sd = x.std(axis=0)
    return mean, np.where(sd > 1e-12, sd, 1.0)


def _ridge(x: FloatArray, y: FloatArray, alpha: float) -> FloatArray:
    """Coefficients ``(1 + d,)`` (intercept first, not penalised) of L2-regularised least squares."""
    A = np.hstack([np.ones((x.shape[0], 1)), x])
    penalty = alpha * np.eye(A.shape[1])
    penalty[0, 0] = 0.0
    return np.asarray(np.linalg.lstsq(A.T @ A + penalty, A.T @ y, rcond=None)[0], dtype=np.float64)


def _logistic(x: FloatArray, y: FloatArray, alpha: float, n_iter: int = 50) -> FloatArray:
    """Coefficients ``(1 + d,)`` of L2-regularised logistic regression (Newton / IRLS)."""
    A = np.hstack([np.ones((x.shape[0], 1)), x])
    penalty = alpha * np.eye(A.shape[1])
    penalty[0, 0] = 0.0
    beta = np.zeros(A.shape[1])
    for _ in range(n_iter):
        p = 1.0 / (1.0 + np.exp(-np.clip(A @ beta, -30, 30)))
        grad = A.T @ (p - y) + penalty @ beta
        hess = (A * (p * (1 - p))[:, None]).T @ A + penalty
        step = np.linalg.lstsq(hess, grad, rcond=None)[0]
        beta = beta - step
        if float(np.abs(step).max()) < 1e-8:
            break
    return np.asarray(beta, dtype=np.float64)


def fit_predict(
    log: BanditLog, pairs: RoundCandidates, config: RewardModelConfig | None = None
) -> FloatArray:
    """Cross-fitted predictions ``(n_pairs,)`` of the reward of every (round, candidate) pair.

    Features are standardised on each training fold; ``ridge`` predictions are clipped to the
    observed reward range.
    """
    cfg = config or RewardModelConfig()
    X = design_matrix(log, pairs, cfg.interactions)
    y = log.reward
    chosen = pairs.chosen_row
    rng = np.random.default_rng(cfg.seed)
    n_folds = min(cfg.n_folds, log.n_decisions)
    fold_of_decision = rng.permutation(log.n_decisions) % max(n_folds, 1)
    fold_of_round = fold_of_decision[log.decision_index]
    fold_of_pair = fold_of_round[pairs.round]
    out = np.empty(pairs.n_pairs)
    lo, hi = float(y.min()), float(y.max())
    binary = bool(np.all((y == 0.0) | (y == 1.0)))
    for f in range(max(n_folds, 1)):
        train = fold_of_round != f if n_folds >= 2 else np.ones(log.n_rounds, dtype=bool)
        target = fold_of_pair == f if n_folds >= 2 else np.ones(pairs.n_pairs, dtype=bool)
        if not target.any():
            continue
        Xtr, ytr = X[chosen[train]], y[train]
        mean, sd = _standardise(Xtr)
        Ztr, Zte = (Xtr - mean) / sd, (X[target] - mean) / sd
        if cfg.type == "logistic" and binary and np.unique(ytr).size == 2:
            beta = _logistic(Ztr, ytr, cfg.alpha)
            out[target] = 1.0 / (1.0 + np.exp(-np.clip(beta[0] + Zte @ beta[1:], -30, 30)))
        else:
            beta = _ridge(Ztr, ytr, cfg.alpha)
            out[target] = np.clip(beta[0] + Zte @ beta[1:], lo, hi)
    return out
