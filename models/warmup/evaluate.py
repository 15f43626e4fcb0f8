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
4. Vectors: ``content_only`` = ``c``; ``behavior_only`` = ``ρ·m`` from the same observed evidence and
   no content (random order when an item has no evidence); ``blended`` = the shrinkage warm-up
   ``c + δ``. ``ρ`` is fitted on training items, ``κ`` chosen on the validation items (mean NDCG@10
   over k ≥ 1). User vectors stay fixed at their trained values for the evaluation.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from numpy.typing import NDArray

from coldstart.errors import InvalidInputError
from models.baselines import Features
from models.catalog import Catalog
from models.evaluate import extract_catalog_features, ranking_metrics, split_items
from models.item_tower import ItemTowerConfig, train_item_tower
from models.warmup.base import Evidence, ItemWarmState
from models.warmup.shrinkage import ShrinkageWarmup, fit_behavior_scale

log = logging.getLogger(__name__)

DEFAULT_KS: tuple[int, ...] = (0, 1, 5, 20)
METHODS: tuple[str, ...] = ("content_only", "behavior_only", "blended")
KAPPA_GRID: tuple[float, ...] = (0.1, 0.25, 0.5, 1.0, 2.0, 5.0, 10.0, 20.0)


@dataclass(frozen=True)
class _Fold:
    """Everything one seed's evaluation needs (vectors in the item tower's space, ``d`` dims)."""

    user_ids: list[str]
    user_vectors: NDArray[np.float32]  # (U, d)
    item_ids: list[str]  # held-out (or validation) items, row order of content
    content: NDArray[np.float32]  # (n, d)
    events: pd.DataFrame  # the items' interactions: user_id, item_id, value, ts, positive


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
    fold: _Fold,
    observed: pd.DataFrame,
    model: ShrinkageWarmup,
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
        state = model.update_item(ItemWarmState.new(iid, fold.content[row]), ev)
        if method == "blended":
            out[row] = state.vector
        elif state.evidence > 0:
            out[row] = model.behavior_vector(state.weighted_sum, state.evidence)
        else:  # no evidence at all: behaviour alone knows nothing -> random order
            out[row] = np.asarray(rng.normal(scale=1e-6, size=d), dtype=np.float32)
    return out


def _score_fold(
    fold: _Fold, k: int, method: str, model: ShrinkageWarmup, weights: tuple[float, float], seed: int
) -> dict[str, float]:
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
        return ranking_metrics(np.zeros((0, len(col))), np.zeros((0, len(col)), dtype=bool))
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
    return ranking_metrics(scores, relevant, ks=(10, 20))


def _events_for(interactions: pd.DataFrame, item_ids: Sequence[str], threshold: float) -> pd.DataFrame:
    ev = interactions[interactions["item_id"].isin(set(item_ids))].copy()
    ev["positive"] = ev["value"] >= threshold
    ev["event_id"] = [f"{u}:{i}:{t}" for u, i, t in zip(ev["user_id"], ev["item_id"], ev["ts"], strict=True)]
    return ev.reset_index(drop=True)


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
"""The item tower this protocol was measured with (docs/results/warmup.md): one training stage, full
softmax, 30 epochs without early stopping. The later default tower (text-anchored two-stage fusion,
``ItemTowerConfig()``) is tuned with cold-validation early stopping, which this protocol does not run;
trained for a fixed 30 epochs per stage its user vectors blend worse (see docs/warmup.md)."""


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
    """Run the warm-up protocol; returns ``{"dataset", "seeds", "ks", "rows", "std", "params"}``.

    ``rows[method]["k=K"] = {"ndcg@10": float, "recall@20": float}`` (mean over seeds).
    """
    if seeds < 1:
        raise InvalidInputError("seeds", seeds, "must be >= 1")
    if any(k < 0 for k in ks):
        raise InvalidInputError("ks", list(ks), "must be >= 0")
    feats = features if features is not None else extract_catalog_features(catalog, progress=progress)
    inter = catalog.interactions
    per_seed: dict[str, dict[str, list[dict[str, float]]]] = {m: {f"k={k}": [] for k in ks} for m in METHODS}
    params: list[dict[str, float]] = []
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
        # ρ: least squares between training items' content vectors and their positive users' mean
        sums = np.zeros_like(all_vecs)
        counts = np.zeros(len(feats.item_ids))
        for u, iid in zip(positives["user_id"], positives["item_id"], strict=True):
            j = uidx.get(u)
            if j is not None:
                sums[row_of[iid]] += trained.user_embeddings[j]
                counts[row_of[iid]] += 1
        has = counts > 0
        rho = fit_behavior_scale(all_vecs[has], (sums[has] / counts[has, None]).astype(np.float32))

        val, test = (
            _Fold(
                trained.user_ids,
                trained.user_embeddings,
                ids,
                all_vecs[[row_of[i] for i in ids]],
                _events_for(inter, ids, threshold),
            )
            for ids in (split.val, split.test)
        )
        best_kappa, best = KAPPA_GRID[0], -1.0
        for kappa in KAPPA_GRID:
            model = ShrinkageWarmup(prior_strength=kappa, behavior_scale=rho, delta_max=1e6)
            score = float(
                np.mean(
                    [_score_fold(val, k, "blended", model, weights, seed)["ndcg@10"] for k in ks if k > 0]
                )
            )
            if score > best:
                best_kappa, best = kappa, score
        model = ShrinkageWarmup(prior_strength=best_kappa, behavior_scale=rho, delta_max=1e6)
        params.append({"seed": float(seed), "kappa": best_kappa, "rho": rho})
        log.info("seed %d: kappa=%.2f rho=%.3f", seed, best_kappa, rho)
        for method in METHODS:
            for k in ks:
                m = _score_fold(test, k, method, model, weights, seed)
                per_seed[method][f"k={k}"].append({"ndcg@10": m["ndcg@10"], "recall@20": m["recall@20"]})
    rows: dict[str, dict[str, dict[str, float]]] = {}
    std: dict[str, dict[str, dict[str, float]]] = {}
    for method, by_k in per_seed.items():
        rows[method], std[method] = {}, {}
        for key, vals in by_k.items():
            rows[method][key] = {mk: float(np.mean([v[mk] for v in vals])) for mk in ("ndcg@10", "recall@20")}
            std[method][key] = {mk: float(np.std([v[mk] for v in vals])) for mk in ("ndcg@10", "recall@20")}
    return {
        "dataset": catalog.root.name if hasattr(catalog, "root") else "catalog",
        "seeds": seeds,
        "ks": list(ks),
        "rows": rows,
        "std": std,
        "params": params,
    }


def write_results(result: dict[str, object], out_dir: Path) -> tuple[Path, Path]:
    """Write ``warmup.json`` and ``warmup.md`` (a table of mean ± std over seeds) into ``out_dir``."""
    out_dir.mkdir(parents=True, exist_ok=True)
    json_path, md_path = out_dir / "warmup.json", out_dir / "warmup.md"
    json_path.write_text(json.dumps(result, indent=2) + "\n")
    rows = result["rows"]
    std = result["std"]
    ks = result["ks"]
    assert isinstance(rows, dict) and isinstance(std, dict) and isinstance(ks, list)
    lines = [
        "# Warm-up: content-only vs behaviour-only vs blended",
        "",
        f"Dataset `{result['dataset']}`, {result['seeds']} seeds (mean ± std). Protocol and math: "
        "`models/warmup/evaluate.py`, `docs/warmup.md`.",
        "",
        "| method | " + " | ".join(f"k={k} NDCG@10 | k={k} Recall@20" for k in ks) + " |",
        "|---|" + "---|---|" * len(ks),
    ]
    for method in METHODS:
        cells = []
        for k in ks:
            r, s = rows[method][f"k={k}"], std[method][f"k={k}"]
            cells.append(
                f"{r['ndcg@10']:.4f} ± {s['ndcg@10']:.4f} | {r['recall@20']:.4f} ± {s['recall@20']:.4f}"
            )
        lines.append(f"| {method} | " + " | ".join(cells) + " |")
    lines.append("")
    md_path.write_text("\n".join(lines))
    return json_path, md_path
