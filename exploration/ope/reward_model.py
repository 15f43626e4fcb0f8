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
    """Every (round, candidate) pair of a log, in round order, with the arrays OPE needs.

    Attributes
    ----------
    start
        ``(n_rounds + 1,)``: ``start[r]:start[r+1]`` are round ``r``'s pairs.
    round, candidate
        ``(n_pairs,)``: the pair's round and its index in the decision's candidates.
    chosen_row
        ``(n_rounds,)``: the pair of the logged item.
    available
        ``(n_pairs,)`` bool: the candidate was not placed at an earlier position of the decision.
    cand_offset
        ``(n_decisions + 1,)`` offsets of each decision's candidates in the flat per-candidate arrays
        ``cand_prob`` (logged first-slot pmf) and ``cand_score``; ``flat`` maps pairs into them.
    """

    def __init__(self, log: BanditLog) -> None:
        n_cands = np.array([len(d.candidates) for d in log.decisions], dtype=np.int64)
        self.cand_offset = np.concatenate([[0], np.cumsum(n_cands)]).astype(np.int64)
        self.cand_prob = np.array(
            [c.probability for d in log.decisions for c in d.candidates], dtype=np.float64
        )
        self.cand_score = np.array([c.score for d in log.decisions for c in d.candidates], dtype=np.float64)
        sizes = n_cands[log.decision_index] if log.n_rounds else np.zeros(0, dtype=np.int64)
        self.start = np.concatenate([[0], np.cumsum(sizes)]).astype(np.int64)
        self.round = np.repeat(np.arange(log.n_rounds, dtype=np.int64), sizes)
        pair = np.arange(int(self.start[-1]), dtype=np.int64)
        self.candidate = (pair - self.start[self.round]).astype(np.int64)
        self.chosen_row = (self.start[:-1] + log.chosen).astype(np.int64)
        self.flat = (self.cand_offset[log.decision_index[self.round]] + self.candidate).astype(np.int64)
        self.available = np.ones(self.n_pairs, dtype=bool)
        placed = [int(self.start[r]) + c for r in range(log.n_rounds) for c in log.prefix(r)]
        self.available[np.asarray(placed, dtype=np.int64)] = False

    @property
    def n_pairs(self) -> int:
        """Number of (round, candidate) pairs."""
        return int(self.start[-1])

    def per_round_sum(self, values: FloatArray) -> FloatArray:
        """``(n_rounds,)`` sums of ``(n_pairs,)`` values over each round's pairs."""
        return (
            np.asarray(np.add.reduceat(values, self.start[:-1]), dtype=np.float64) if self.n_pairs else values
        )


class _Features:
    """Per-candidate and per-decision feature blocks; rows of the design matrix are built from them
    on demand (for a chunk of pairs) so that memory stays ``O(chunk x n_features)``."""

    def __init__(self, log: BanditLog, pairs: RoundCandidates, interactions: bool) -> None:
        cand_names = sorted({k for d in log.decisions for c in d.candidates for k in c.features})
        ctx_names = sorted(
            {k if not isinstance(v, str) else f"{k}={v}" for d in log.decisions for k, v in d.context.items()}
        )
        cand_col = {k: i for i, k in enumerate(cand_names)}
        ctx_col = {k: i for i, k in enumerate(ctx_names)}
        self.cand = np.zeros((int(pairs.cand_offset[-1]), len(cand_names) + 1))
        self.cand[:, -1] = pairs.cand_score
        row = 0
        for d in log.decisions:
            for c in d.candidates:
                for name, value in c.features.items():
                    self.cand[row, cand_col[name]] = value
                row += 1
        self.ctx = np.zeros((log.n_decisions, len(ctx_names)))
        for j, d in enumerate(log.decisions):
            for k, v in d.context.items():
                if isinstance(v, str):
                    self.ctx[j, ctx_col[f"{k}={v}"]] = 1.0
                else:
                    self.ctx[j, ctx_col[k]] = float(v)
        self.n_pos = int(log.position.max()) + 1 if log.n_rounds else 1
        self.interactions = interactions and self.ctx.shape[1] > 0
        self.log = log
        self.pairs = pairs

    def rows(self, idx: NDArray[np.int64]) -> FloatArray:
        """``(len(idx), n_features)`` design rows of the pairs ``idx``."""
        rnd = self.pairs.round[idx]
        cand = self.cand[self.pairs.flat[idx]]
        ctx = self.ctx[self.log.decision_index[rnd]]
        pos = np.zeros((idx.size, self.n_pos))
        pos[np.arange(idx.size), self.log.position[rnd]] = 1.0
        parts = [cand, ctx, pos]
        if self.interactions:
            parts.append((ctx[:, :, None] * cand[:, None, :]).reshape(idx.size, -1))
        return np.asarray(np.hstack(parts), dtype=np.float64)


def design_matrix(log: BanditLog, pairs: RoundCandidates, interactions: bool = True) -> FloatArray:
    """``(n_pairs, n_features)`` float64 features of every (round, candidate) pair (see module doc):
    candidate features and score, context, position one-hot, context x candidate products."""
    return _Features(log, pairs, interactions).rows(np.arange(pairs.n_pairs, dtype=np.int64))


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
    log: BanditLog, pairs: RoundCandidates, config: RewardModelConfig | None = None, chunk: int = 100_000
) -> FloatArray:
    """Cross-fitted predictions ``(n_pairs,)`` of the reward of every (round, candidate) pair.

    Features are standardised on each training fold; ``ridge`` predictions are clipped to the
    observed reward range. Predictions are computed ``chunk`` pairs at a time.
    """
    cfg = config or RewardModelConfig()
    feats = _Features(log, pairs, cfg.interactions)
    y = log.reward
    X_chosen = feats.rows(pairs.chosen_row)
    rng = np.random.default_rng(cfg.seed)
    n_folds = max(1, min(cfg.n_folds, log.n_decisions))
    fold_of_round = (rng.permutation(log.n_decisions) % n_folds)[log.decision_index]
    fold_of_pair = fold_of_round[pairs.round]
    out = np.empty(pairs.n_pairs)
    lo, hi = float(y.min()), float(y.max())
    binary = bool(np.all((y == 0.0) | (y == 1.0)))
    for f in range(n_folds):
        train = fold_of_round != f if n_folds >= 2 else np.ones(log.n_rounds, dtype=bool)
        target = np.flatnonzero(fold_of_pair == f) if n_folds >= 2 else np.arange(pairs.n_pairs)
        if target.size == 0:
            continue
        Xtr, ytr = X_chosen[train], y[train]
        mean, sd = _standardise(Xtr)
        logistic = cfg.type == "logistic" and binary and np.unique(ytr).size == 2
        beta = (
            _logistic((Xtr - mean) / sd, ytr, cfg.alpha)
            if logistic
            else _ridge((Xtr - mean) / sd, ytr, cfg.alpha)
        )
        for s in range(0, target.size, chunk):
            idx = target[s : s + chunk]
            z = beta[0] + ((feats.rows(idx) - mean) / sd) @ beta[1:]
            out[idx] = 1.0 / (1.0 + np.exp(-np.clip(z, -30, 30))) if logistic else np.clip(z, lo, hi)
    return out
