"""The cold-start evaluation protocol's parts: frozen features of a catalog, the item-disjoint split,
the relevance matrix and the ranking metrics (Recall / NDCG / Precision @ K), and the model-selection
score on cold-validation items. :func:`models.evaluate.evaluate_catalog` runs the protocol."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from numpy.typing import NDArray

from coldstart.errors import InvalidInputError
from models.baselines import Features
from models.catalog import Catalog
from models.features import extract_features
from models.item_tower import FeatureRows

KS: tuple[int, ...] = (1, 5, 10, 20)


# --------------------------------------------------------------------------------------------------
# Features
# --------------------------------------------------------------------------------------------------


def as_features(table: FeatureRows) -> Features:
    """A :class:`FeatureRows` table (e.g. ``models.features.FeatureTable``) as the rankers' features."""
    return Features(
        [str(i) for i in table.item_ids],
        np.asarray(table.image, dtype=np.float32),
        np.asarray(table.text, dtype=np.float32),
        np.asarray(table.image_ok, dtype=bool),
        np.asarray(table.text_ok, dtype=bool),
    )


def extract_catalog_features(
    catalog: Catalog,
    *,
    title_only: bool = False,
    cache_dir: Path | None = Path(".coldstart/cache/features"),
    batch_size: int = 32,
    progress: bool = True,
    threads: int | None = 1,
) -> Features:
    """Frozen pretrained image (EfficientNet-Lite0, 1280-d) and text (MiniLM, 384-d) features.

    Goes through ``models.features.extract_features`` (the project's single feature path, with its
    on-disk cache keyed by encoder identity and item content), so repeated evaluations skip the slow
    extraction.

    Parameters
    ----------
    title_only
        Encode each item's title instead of its full text (the text-poor condition).
    """

    # The cache is per modality: the title-only variant reuses the image features.
    contents = [it.content(title_only=title_only) for it in catalog.items]
    table = extract_features(
        contents, cache_dir=cache_dir, batch_size=batch_size, progress=progress, threads=threads
    )
    return as_features(table)


# --------------------------------------------------------------------------------------------------
# Split and metrics
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ItemSplit:
    """An item-disjoint split of a catalog (ids sorted within each part)."""

    train: list[str]
    val: list[str]
    test: list[str]


def split_items(
    item_ids: Sequence[str], seed: int, fractions: tuple[float, float, float] = (0.7, 0.15, 0.15)
) -> ItemSplit:
    """Split ITEMS (not interactions) into train / cold-validation / cold-test.

    Deterministic in ``seed`` and independent of the input order (ids are sorted first).

    Raises
    ------
    InvalidInputError
        Fractions that are negative or do not sum to 1, duplicate ids, or fewer than 3 items.
    """
    if any(f < 0 for f in fractions) or not math.isclose(sum(fractions), 1.0, abs_tol=1e-6):
        raise InvalidInputError("fractions", fractions, "must be non-negative and sum to 1")
    ids = sorted(str(i) for i in item_ids)
    if len(set(ids)) != len(ids):
        raise InvalidInputError("item_ids", len(ids), "contains duplicates")
    if len(ids) < 3:
        raise InvalidInputError("item_ids", len(ids), "need at least 3 items to split")
    order = np.random.default_rng(seed).permutation(len(ids))
    n_train = round(fractions[0] * len(ids))
    n_val = round(fractions[1] * len(ids))
    shuffled = [ids[i] for i in order]
    return ItemSplit(
        train=sorted(shuffled[:n_train]),
        val=sorted(shuffled[n_train : n_train + n_val]),
        test=sorted(shuffled[n_train + n_val :]),
    )


def ranking_metrics(
    scores: NDArray[np.floating[Any]], relevant: NDArray[np.bool_], ks: Sequence[int] = KS
) -> dict[str, float]:
    """Recall / NDCG / Precision @ K averaged over users (rows).

    Parameters
    ----------
    scores
        ``(U, N)`` predicted scores of N candidate items for U users (higher = better).
    relevant
        ``(U, N)`` bool: the user's held-out positives. Users without any are skipped.

    Returns
    -------
    dict
        ``{"ndcg@K", "recall@K", "precision@K"}`` for every K, plus ``"users"`` (how many users
        were averaged). Binary relevance; ``recall@K = hits / min(K, #positives)``;
        ``ndcg@K = DCG / ideal DCG`` with ``1 / log2(rank + 1)`` gains; ``precision@K = hits / K``.
    """
    if scores.shape != relevant.shape or scores.ndim != 2:
        raise InvalidInputError("scores", scores.shape, f"must be 2-d and match relevant {relevant.shape}")
    keep = relevant.any(axis=1)
    s = np.asarray(scores, dtype=np.float64)[keep]
    r = relevant[keep]
    out: dict[str, float] = {"users": float(s.shape[0])}
    if s.shape[0] == 0:
        for k in ks:
            out[f"ndcg@{k}"] = out[f"recall@{k}"] = out[f"precision@{k}"] = 0.0
        return out
    kmax = min(max(ks), s.shape[1])
    top = np.argsort(-s, axis=1, kind="stable")[:, :kmax]
    hits = np.take_along_axis(r, top, axis=1).astype(np.float64)
    n_pos = r.sum(axis=1).astype(np.float64)
    discounts = 1.0 / np.log2(np.arange(2, kmax + 2, dtype=np.float64))
    for k in ks:
        kk = min(k, kmax)
        h = hits[:, :kk]
        dcg = (h * discounts[:kk]).sum(axis=1)
        ideal_n = np.minimum(n_pos, kk).astype(int)
        idcg = np.cumsum(discounts[:kk])[ideal_n - 1]
        out[f"ndcg@{k}"] = float(np.mean(dcg / idcg))
        out[f"recall@{k}"] = float(np.mean(h.sum(axis=1) / np.minimum(n_pos, k)))
        out[f"precision@{k}"] = float(np.mean(h.sum(axis=1) / k))
    return out


def relevance_matrix(
    positives: pd.DataFrame, users: Sequence[str], items: Sequence[str]
) -> NDArray[np.bool_]:
    """``(len(users), len(items))`` bool: True where ``positives`` (``user_id``, ``item_id``) has the pair."""
    urow = {u: r for r, u in enumerate(users)}
    irow = {i: r for r, i in enumerate(items)}
    rel = np.zeros((len(users), len(items)), dtype=bool)
    u = positives["user_id"].map(urow)
    i = positives["item_id"].map(irow)
    ok = u.notna() & i.notna()
    rel[u[ok].to_numpy(dtype=np.int64), i[ok].to_numpy(dtype=np.int64)] = True
    return rel


def validation_score(scores: NDArray[np.floating[Any]], relevant: NDArray[np.bool_]) -> float:
    """The model-selection score on cold-validation items: mean of NDCG@10 and Recall@20 (the two
    headline metrics). ``scores`` / ``relevant``: ``(U, N)`` as in :func:`ranking_metrics`."""
    m = ranking_metrics(scores, relevant, (10, 20))
    return 0.5 * (m["ndcg@10"] + m["recall@20"])
