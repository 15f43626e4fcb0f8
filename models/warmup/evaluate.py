"""Warm-up evaluation on any catalog in the generic layout (``coldstart models evaluate-warmup``).

Protocol (time-ordered, item-side):

1. Items are split with a seed into train / validation / held-out (70/15/15, as the cold-start
   evaluation). The item tower and user embeddings are trained on the training items' positives only
   (``value >= threshold``); held-out items get their content vectors ``c`` from the tower.
2. For a held-out item, its interactions are ordered by time; "after its first k positives" means
   the interactions up to and including its k-th positive are *observed* (positives and negatives,
   with their evidence weights). Items with fewer than k positives are still candidates (they never
   got that far) but contribute no observed evidence beyond what they have.
3. For each user with a trained embedding, ALL held-out items are ranked by ``u · v_i``; relevant =
   the user's positives on held-out items that were NOT observed (i.e. came later); the items this
   user appears in the observed window of are removed from the user's ranking. NDCG@10 / Recall@20
   averaged over users with at least one relevant item. (We rank items for each later user.)
4. Vectors: ``content_only`` = ``c``; ``behavior_only`` = the posterior warm-up from the same observed
   evidence with a zero prior (random order when an item has no evidence); ``blended`` = the posterior
   warm-up ``c + δ`` (:mod:`models.warmup.posterior`); ``blended_shrinkage`` = the earlier
   mean-of-users shrinkage (:mod:`models.warmup.shrinkage`), for comparison. The calibration (``S``,
   target scores; ρ for shrinkage) is fitted on training pairs. User vectors stay fixed.
5. Selection on the validation items only: κ from :data:`KAPPA_GRID` including ``inf`` (no
   behaviour), by mean NDCG@10 over the k ≥ 1 that have at least :data:`MIN_QUALIFYING` qualifying
   items; then the gate: behaviour counts only from the smallest evidence level L (positives) such
   that blended ≥ content_only on validation at every validated k ≥ L (none: κ = inf).
6. Per k the report counts users scored and qualifying items (held-out items with a positive after
   the observed window); a k with fewer than :data:`MIN_QUALIFYING` qualifying items (mean over
   seeds) is reported n/a.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
from numpy.typing import NDArray

from coldstart.errors import InvalidInputError
from models.baselines import Features
from models.catalog import Catalog
from models.eval_protocol import extract_catalog_features, ranking_metrics, split_items
from models.item_tower import ItemTowerConfig
from models.tower_training import train_item_tower
from models.warmup.base import Evidence, ItemWarmState, WarmupModel
from models.warmup.posterior import PosteriorCalibration, PosteriorWarmup, fit_posterior_calibration
from models.warmup.shrinkage import ShrinkageWarmup, fit_behavior_scale

log = logging.getLogger(__name__)

DEFAULT_KS: tuple[int, ...] = (0, 1, 5, 20)
METHODS: tuple[str, ...] = ("content_only", "behavior_only", "blended", "blended_shrinkage")
KAPPA_GRID: tuple[float, ...] = (1.0, 3.0, 10.0, 30.0, 100.0, 300.0, 1000.0, math.inf)
"""Relative prior strengths of the posterior warm-up (units: the mean eigenvalue of ``S``)."""
SHRINKAGE_KAPPA_GRID: tuple[float, ...] = (0.1, 0.25, 0.5, 1.0, 2.0, 5.0, 10.0, 20.0)
MIN_QUALIFYING = 30
"""A k with fewer qualifying held-out items than this is too thin to report (or to select on)."""


@dataclass(frozen=True)
class Fold:
    """Everything one seed's evaluation needs (vectors in the item tower's space, ``d`` dims)."""

    user_ids: list[str]
    user_vectors: NDArray[np.float32]  # (U, d)
    item_ids: list[str]  # held-out (or validation) items, row order of content
    content: NDArray[np.float32]  # (n, d)
    events: pd.DataFrame  # the items' interactions: user_id, item_id, value, ts, positive


@dataclass(frozen=True)
class _Scored:
    ndcg10: float
    recall20: float
    users: int  # users with a relevant item
    items: int  # qualifying items: held-out items with a positive after the observed window


def _observed_masks(events: pd.DataFrame, k: int) -> pd.Series:
    """Per event: True when it lies in its item's window up to and including its k-th positive."""
    ev = events.sort_values(["item_id", "ts", "user_id"], kind="stable")
    cum_pos = ev.groupby("item_id")["positive"].cumsum()
    # an event is observed when fewer than k positives came strictly before it and (k > 0)
    before = cum_pos - ev["positive"].astype(int)
    observed = (before < k) & (k > 0)
    return observed.reindex(events.index)


def _vectors(
    method: str,
    fold: Fold,
    observed: pd.DataFrame,
    model: WarmupModel,
    weights: tuple[float, float],
    rng: np.random.Generator,
) -> NDArray[np.float32]:
    """Item vectors ``(n, d)`` for one method given the observed events."""
    uidx = {u: i for i, u in enumerate(fold.user_ids)}
    n, d = fold.content.shape
    if method == "content_only":
        return fold.content
    out = np.zeros((n, d), dtype=np.float32)
    by_item = {iid: g for iid, g in observed.groupby("item_id")}
    for row, iid in enumerate(fold.item_ids):
        g = by_item.get(iid)
        ev: list[Evidence] = []
        if g is not None:
            for user, pos, eid in zip(g["user_id"], g["positive"], g["event_id"], strict=True):
                j = uidx.get(user)
                if j is None:
                    continue
                ev.append(
                    Evidence(str(eid), fold.user_vectors[j], weights[0] if pos else weights[1], bool(pos))
                )
        if method == "behavior_only":
            if not ev:  # no evidence at all: behaviour alone knows nothing -> random order
                out[row] = np.asarray(rng.normal(scale=1e-6, size=d), dtype=np.float32)
                continue
            prior = np.zeros(d, dtype=np.float32)
        else:
            prior = fold.content[row]
        out[row] = model.update_item(ItemWarmState.new(iid, prior), ev).vector
    return out


def _score_fold(
    fold: Fold, k: int, method: str, model: WarmupModel, weights: tuple[float, float], seed: int
) -> _Scored:
    events = fold.events
    observed_mask = _observed_masks(events, k)
    observed = events[observed_mask]
    later = events[~observed_mask & events["positive"]]
    rng = np.random.default_rng(seed)
    vecs = _vectors(method, fold, observed, model, weights, rng)
    col = {iid: i for i, iid in enumerate(fold.item_ids)}
    uidx = {u: i for i, u in enumerate(fold.user_ids)}
    users = sorted(set(later["user_id"]) & set(uidx))
    if not users:
        return _Scored(0.0, 0.0, 0, 0)
    urow = {u: i for i, u in enumerate(users)}
    relevant = np.zeros((len(users), len(col)), dtype=bool)
    for u, iid in zip(later["user_id"], later["item_id"], strict=True):
        if u in urow:
            relevant[urow[u], col[iid]] = True
    scores = fold.user_vectors[[uidx[u] for u in users]] @ vecs.T
    scores = scores + rng.uniform(0, 1e-9, size=scores.shape)  # deterministic, seeded tie-break
    for u, iid in zip(observed["user_id"], observed["item_id"], strict=True):
        if u in urow:
            scores[urow[u], col[iid]] = -np.inf
            relevant[urow[u], col[iid]] = False
    m = ranking_metrics(scores, relevant, ks=(10, 20))
    return _Scored(m["ndcg@10"], m["recall@20"], int(m["users"]), int(relevant.any(axis=0).sum()))


def events_for(interactions: pd.DataFrame, item_ids: Sequence[str], threshold: float) -> pd.DataFrame:
    ev = interactions[interactions["item_id"].isin(set(item_ids))].copy()
    ev["positive"] = ev["value"] >= threshold
    ev["event_id"] = [f"{u}:{i}:{t}" for u, i, t in zip(ev["user_id"], ev["item_id"], ev["ts"], strict=True)]
    return ev.reset_index(drop=True)


@dataclass(frozen=True)
class WarmupChoice:
    """What validation chose for one catalog split."""

    prior_strength: float  # relative κ; inf = no behaviour
    min_positives: int  # the gate
    behavior_prior_strength: float  # κ of the behaviour-only diagnostic row (finite)
    validation: dict[str, dict[str, float]]  # per k: content / blended NDCG@10 and qualifying items


def _best_kappa(
    val: Fold,
    method: str,
    calibration: PosteriorCalibration,
    levels: Sequence[int],
    weights: tuple[float, float],
    seed: int,
    grid: Sequence[float],
    baseline: float,
) -> tuple[float, dict[int, _Scored]]:
    """The finite κ of ``grid`` with the best mean validation NDCG@10 over ``levels`` if it beats
    ``baseline`` (inf and an empty table otherwise); ties keep the stronger prior."""
    best_kappa, best_score, best_table = math.inf, baseline, {}
    for kappa in sorted((g for g in grid if not math.isinf(g)), reverse=True):
        model = PosteriorWarmup(calibration, prior_strength=kappa, min_positives=0)
        table = {k: _score_fold(val, k, method, model, weights, seed) for k in levels}
        score = float(np.mean([table[k].ndcg10 for k in levels]))
        if score > best_score:
            best_kappa, best_score, best_table = kappa, score, table
    return best_kappa, best_table


def select_warmup(
    val: Fold,
    calibration: PosteriorCalibration,
    ks: Sequence[int],
    weights: tuple[float, float],
    seed: int,
    grid: Sequence[float] = KAPPA_GRID,
) -> WarmupChoice:
    """κ and the gate from the validation items only (see the module docstring, step 5)."""
    levels = [k for k in ks if k > 0]
    plain = PosteriorWarmup(calibration)
    content = {k: _score_fold(val, k, "content_only", plain, weights, seed) for k in levels}
    validated = [k for k in levels if content[k].items >= MIN_QUALIFYING] or levels
    baseline = float(np.mean([content[k].ndcg10 for k in validated]))
    kappa, table = _best_kappa(val, "blended", calibration, validated, weights, seed, grid, baseline)
    blended = {**content, **table}
    # the gate: the smallest level from which behaviour is at least as good at every validated level
    gate = math.inf
    for level in sorted(validated, reverse=True):
        if blended[level].ndcg10 < content[level].ndcg10:
            break
        gate = level
    if math.isinf(gate):
        kappa = math.inf
    behavior_kappa, _ = _best_kappa(val, "behavior_only", calibration, validated, weights, seed, grid, -1.0)
    summary = {
        f"k={k}": {
            "content_ndcg@10": content[k].ndcg10,
            "blended_ndcg@10": blended[k].ndcg10,
            "qualifying_items": float(content[k].items),
        }
        for k in levels
    }
    return WarmupChoice(kappa, 0 if math.isinf(gate) else int(gate), behavior_kappa, summary)


MEASURED_TOWER = ItemTowerConfig(
    fusion="gated_concat",
    image_bottleneck=64,
    feature_dropout=0.1,
    modality_dropout=0.3,
    negatives="full",
    num_negatives=512,
    batch_size=2048,
    lr=3e-3,
    weight_decay=1e-4,
    patience=4,
    short_text_rate=0.0,
)
"""The item tower of this protocol: one training stage, full softmax, 30 epochs without early
stopping (the default two-stage tower is tuned with cold-validation early stopping, which this
protocol does not run)."""


def _shrinkage_model(
    val: Fold, rho: float, ks: Sequence[int], weights: tuple[float, float], seed: int
) -> tuple[ShrinkageWarmup, float]:
    best_kappa, best = SHRINKAGE_KAPPA_GRID[0], -1.0
    for kappa in SHRINKAGE_KAPPA_GRID:
        model = ShrinkageWarmup(prior_strength=kappa, behavior_scale=rho, delta_max=1e6)
        score = float(
            np.mean([_score_fold(val, k, "blended", model, weights, seed).ndcg10 for k in ks if k > 0])
        )
        if score > best:
            best_kappa, best = kappa, score
    return ShrinkageWarmup(prior_strength=best_kappa, behavior_scale=rho, delta_max=1e6), best_kappa


def evaluate_warmup(
    catalog: Catalog,
    *,
    seeds: int = 3,
    threshold: float = 4.0,
    ks: Sequence[int] = DEFAULT_KS,
    negative_weight: float = -0.5,
    tower_config: ItemTowerConfig | None = None,
    features: Features | None = None,
    progress: bool = True,
) -> dict[str, object]:
    """Run the warm-up protocol; returns ``{"dataset", "seeds", "ks", "rows", "std", "counts", "params"}``.

    ``rows[method]["k=K"] = {"ndcg@10": float, "recall@20": float}`` (mean over seeds);
    ``counts["k=K"] = {"users": float, "items": float, "reported": bool}`` (test fold, mean over seeds).
    """
    if seeds < 1:
        raise InvalidInputError("seeds", seeds, "must be >= 1")
    if any(k < 0 for k in ks):
        raise InvalidInputError("ks", list(ks), "must be >= 0")
    feats = features if features is not None else extract_catalog_features(catalog, progress=progress)
    inter = catalog.interactions
    per_seed: dict[str, dict[str, list[_Scored]]] = {m: {f"k={k}": [] for k in ks} for m in METHODS}
    params: list[dict[str, object]] = []
    weights = (1.0, float(negative_weight))
    for seed in range(seeds):
        split = split_items(feats.item_ids, seed)
        row_of = {iid: i for i, iid in enumerate(feats.item_ids)}
        train_rows = np.array([row_of[i] for i in split.train], dtype=np.int64)
        positives = inter[(inter["value"] >= threshold) & inter["item_id"].isin(set(split.train))]
        trained = train_item_tower(
            feats.take(train_rows),
            positives[["user_id", "item_id"]],
            tower_config or MEASURED_TOWER,
            seed,
            progress=progress,
        )
        all_vecs = trained.encode(feats)
        uidx = trained.user_index()
        pairs = [
            (uidx[u], row_of[i])
            for u, i in zip(positives["user_id"], positives["item_id"], strict=True)
            if u in uidx
        ]
        pu = np.array([p[0] for p in pairs], dtype=np.int64)
        pi = np.array([p[1] for p in pairs], dtype=np.int64)
        calibration = fit_posterior_calibration(trained.user_embeddings, all_vecs, pu, pi, seed=seed)
        # ρ of the shrinkage row: least squares between content vectors and their positive users' mean
        sums = np.zeros_like(all_vecs)
        counts = np.zeros(len(feats.item_ids))
        np.add.at(sums, pi, trained.user_embeddings[pu])
        np.add.at(counts, pi, 1.0)
        has = counts > 0
        rho = fit_behavior_scale(all_vecs[has], (sums[has] / counts[has, None]).astype(np.float32))
        val, test = (
            Fold(
                trained.user_ids,
                trained.user_embeddings,
                ids,
                all_vecs[[row_of[i] for i in ids]],
                events_for(inter, ids, threshold),
            )
            for ids in (split.val, split.test)
        )
        choice = select_warmup(val, calibration, ks, weights, seed)
        blended = PosteriorWarmup(
            calibration, prior_strength=choice.prior_strength, min_positives=choice.min_positives
        )
        behavior = PosteriorWarmup(
            calibration, prior_strength=choice.behavior_prior_strength, min_positives=0
        )
        shrinkage, shrink_kappa = _shrinkage_model(val, rho, ks, weights, seed)
        models: dict[str, WarmupModel] = {
            "content_only": blended,
            "behavior_only": behavior,
            "blended": blended,
            "blended_shrinkage": shrinkage,
        }
        params.append(
            {
                "seed": seed,
                "prior_strength": choice.prior_strength if not math.isinf(choice.prior_strength) else "inf",
                "min_positives": choice.min_positives,
                "behavior_prior_strength": choice.behavior_prior_strength,
                "target_positive": calibration.item.target_positive,
                "target_negative": calibration.item.target_negative,
                "shrinkage_kappa": shrink_kappa,
                "shrinkage_rho": rho,
                "validation": choice.validation,
            }
        )
        log.info("seed %d: prior_strength=%s gate=%d", seed, choice.prior_strength, choice.min_positives)
        for method in METHODS:
            for k in ks:
                per_seed[method][f"k={k}"].append(_score_fold(test, k, method, models[method], weights, seed))
    rows: dict[str, dict[str, dict[str, float]]] = {}
    std: dict[str, dict[str, dict[str, float]]] = {}
    for method, by_k in per_seed.items():
        rows[method], std[method] = {}, {}
        for key, vals in by_k.items():
            ndcg = [v.ndcg10 for v in vals]
            recall = [v.recall20 for v in vals]
            rows[method][key] = {"ndcg@10": float(np.mean(ndcg)), "recall@20": float(np.mean(recall))}
            std[method][key] = {"ndcg@10": float(np.std(ndcg)), "recall@20": float(np.std(recall))}
    counts_by_k: dict[str, dict[str, float | bool]] = {}
    for key, vals in per_seed["content_only"].items():
        items = float(np.mean([v.items for v in vals]))
        counts_by_k[key] = {
            "users": float(np.mean([v.users for v in vals])),
            "items": items,
            "min_items": float(min(v.items for v in vals)),
            "reported": items >= MIN_QUALIFYING,
        }
    return {
        "dataset": catalog.root.name if hasattr(catalog, "root") else "catalog",
        "seeds": seeds,
        "ks": list(ks),
        "rows": rows,
        "std": std,
        "counts": counts_by_k,
        "params": params,
    }
