"""Fitting the warm-up that ships with an artifact (see :mod:`models.warmup.served`): calibration on
the training positives, prior strength and gate chosen on the cold-validation items' own events."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd
from numpy.typing import NDArray

from coldstart.errors import InvalidInputError
from models.warmup.evaluate import DEFAULT_KS, Fold, events_for, select_warmup
from models.warmup.posterior import fit_posterior_calibration
from models.warmup.served import ServedWarmup


def fit_served_warmup(
    user_ids: Sequence[str],
    user_vectors: NDArray[np.float32],
    item_ids: Sequence[str],
    item_vectors: NDArray[np.float32],
    train_positives: pd.DataFrame,
    val_item_ids: Sequence[str],
    interactions: pd.DataFrame,
    *,
    threshold: float,
    seed: int = 0,
    ks: Sequence[int] = DEFAULT_KS,
    negative_weight: float = -0.5,
) -> ServedWarmup:
    """Calibrate on ``train_positives`` and choose κ and the gate on the validation items' events.

    Parameters
    ----------
    user_vectors, item_vectors
        Served vectors, rows aligned with ``user_ids`` / ``item_ids`` (every item, validation included).
    train_positives
        ``user_id``, ``item_id`` positives of the training items.
    interactions
        The catalog's interactions (``user_id``, ``item_id``, ``value``, ``ts``).

    Raises
    ------
    InvalidInputError
        No training positive joins the given users and items.
    """
    urow = {str(u): i for i, u in enumerate(user_ids)}
    irow = {str(i): r for r, i in enumerate(item_ids)}
    pairs = [
        (urow[str(u)], irow[str(i)])
        for u, i in zip(train_positives["user_id"], train_positives["item_id"], strict=True)
        if str(u) in urow and str(i) in irow
    ]
    if not pairs:
        raise InvalidInputError("train_positives", len(train_positives), "no pair joins the served vectors")
    pu = np.array([p[0] for p in pairs], dtype=np.int64)
    pi = np.array([p[1] for p in pairs], dtype=np.int64)
    calibration = fit_posterior_calibration(user_vectors, item_vectors, pu, pi, seed=seed)
    inter = interactions.astype({"user_id": str, "item_id": str})
    val_ids = [str(i) for i in val_item_ids if str(i) in irow]
    fold = Fold(
        [str(u) for u in user_ids],
        np.asarray(user_vectors, dtype=np.float32),
        val_ids,
        np.asarray(item_vectors, dtype=np.float32)[[irow[i] for i in val_ids]],
        events_for(inter, val_ids, threshold),
    )
    choice = select_warmup(fold, calibration, ks, (1.0, float(negative_weight)), seed)
    return ServedWarmup(calibration, choice.prior_strength, choice.min_positives, choice.validation)
