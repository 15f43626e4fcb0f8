"""Item cold-start evaluation on any catalog, after the KDD'24 protocol.

Protocol (:func:`evaluate_catalog`): the catalog's ITEMS are split with a seed into train /
cold-validation / cold-test (70/15/15, :func:`split_items`); positives are interactions with
``value >= threshold``; every method learns from the training items' positives only; for every user
with at least one training positive and one cold-test positive, ALL cold-test items are ranked and
Recall / NDCG / Precision @ {1, 5, 10, 20} are averaged over those users (:func:`ranking_metrics`).
The cold-validation split is used only for early stopping / model selection. Repeated over seeds,
reported as mean ± std.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from numpy.typing import NDArray

from coldstart.errors import InvalidInputError
from models.baselines import (
    ContentKnn,
    DropoutNetRanker,
    Features,
    ItemSet,
    RandomRanker,
    Ranker,
    TfidfKnn,
    TrainSet,
    ValidationFn,
)
from models.blend import BlendRanker
from models.catalog import Catalog
from models.eval_protocol import (
    extract_catalog_features,
    ranking_metrics,
    relevance_matrix,
    split_items,
    validation_score,
)
from models.item_tower import ItemTowerConfig, TrainedItemTower
from models.tower_training import train_item_tower

log = logging.getLogger(__name__)

# --------------------------------------------------------------------------------------------------
# Our item tower as a ranker
# --------------------------------------------------------------------------------------------------


class ItemTowerRanker(Ranker):
    """The item tower (:mod:`models.item_tower`) + its learned user vectors, as an evaluation row."""

    def __init__(
        self,
        config: ItemTowerConfig,
        seed: int = 0,
        *,
        name: str = "item_tower",
        short_text: Features | None = None,
    ) -> None:
        self.config = config
        self.seed = seed
        self.name = name
        self.short_text = short_text
        self._trained: TrainedItemTower | None = None

    @property
    def trained(self) -> TrainedItemTower:
        """The trained tower (after :meth:`fit`)."""
        if self._trained is None:
            raise InvalidInputError("ranker", self.name, "not fitted")
        return self._trained

    def _fit(self, train: TrainSet, validate: ValidationFn | None) -> None:
        def tower_validate(candidate: TrainedItemTower) -> float:
            self._trained = candidate
            return validate(self) if validate is not None else 0.0

        self._trained = train_item_tower(
            train.items.features,
            train.positives,
            self.config,
            self.seed,
            validate=tower_validate if validate is not None else None,
            short_text=self.short_text.select(train.items.item_ids) if self.short_text is not None else None,
        )

    def _score(self, users: list[str], items: ItemSet) -> NDArray[np.float32]:
        trained = self.trained
        item_vecs = trained.encode(items.features)
        index = trained.user_index()
        dim = trained.user_embeddings.shape[1]
        zero = np.zeros(dim, dtype=np.float32)
        user_vecs = np.stack([trained.user_embeddings[index[u]] if u in index else zero for u in users])
        return (user_vecs @ item_vecs.T).astype(np.float32)


# --------------------------------------------------------------------------------------------------
# The protocol
# --------------------------------------------------------------------------------------------------

ROWS: tuple[str, ...] = (
    "random",
    "tfidf_knn",
    "content_knn",
    "dropoutnet",
    "image_only",
    "text_only",
    "image_text",
    "tfidf_knn_title",
    "content_knn_title",
    "text_only_title",
    "image_text_title",
    "lexical",
    "hybrid",
    "shipped",
)
# Rows scored by the served-representation selection (models/blend.py), which needs the image_text tower.
_BLEND_ROWS = ("lexical", "hybrid", "shipped")
_TITLE_OF = {
    "tfidf_knn_title": "tfidf_knn",
    "content_knn_title": "content_knn",
    "text_only_title": "text_only",
    "image_text_title": "image_text",
}


@dataclass
class EvaluationResult:
    """Per-seed metrics of every row and their mean ± std.

    Attributes
    ----------
    per_seed
        ``per_seed[s][row][metric]``.
    """

    dataset: str
    seeds: list[int]
    threshold: float
    per_seed: list[dict[str, dict[str, float]]]
    info: dict[str, Any]

    def summary(self) -> dict[str, dict[str, float]]:
        """``{row: {metric: mean, metric_std: std}}`` over seeds (population std)."""
        out: dict[str, dict[str, float]] = {}
        rows = [r for r in ROWS if all(r in s for s in self.per_seed)]
        rows += [r for r in self.per_seed[0] if r not in rows] if self.per_seed else []
        for row in rows:
            metrics = self.per_seed[0][row].keys()
            out[row] = {}
            for m in metrics:
                vals = np.array([s[row][m] for s in self.per_seed], dtype=np.float64)
                out[row][m] = float(vals.mean())
                if m != "users":
                    out[row][f"{m}_std"] = float(vals.std())
        return out

    def to_json(self) -> dict[str, Any]:
        """The ``docs/results/cold_start.json`` document."""
        return {
            "dataset": self.dataset,
            "seeds": len(self.seeds),
            "seed_values": self.seeds,
            "threshold": self.threshold,
            "protocol": "items split 70/15/15 train/cold-val/cold-test per seed; all cold-test items ranked "
            "for every user with a training and a cold-test positive; metrics averaged over users",
            "info": self.info,
            "rows": self.summary(),
            "per_seed": self.per_seed,
        }


def _item_set(ids: list[str], table: Features, texts: dict[str, str]) -> ItemSet:
    return ItemSet(table.select(ids), [texts[i] for i in ids])


def _validator(users: list[str], items: ItemSet, relevant: NDArray[np.bool_]) -> ValidationFn | None:
    """:func:`validation_score` of a ranker on the cold-validation items (model selection / early
    stopping only)."""
    if not users:
        return None

    def validate(ranker: Ranker) -> float:
        return validation_score(ranker.score(users, items), relevant)

    return validate


def default_tower_config(modalities: str) -> ItemTowerConfig:
    """The item tower configuration of the evaluation rows: the :class:`ItemTowerConfig` defaults
    (those ``coldstart models train`` uses) restricted to ``modalities``."""
    return ItemTowerConfig(modalities=modalities)  # type: ignore[arg-type]


def _fit_blend(
    rankers: dict[str, Ranker], train: TrainSet, validate: ValidationFn | None, seed: int
) -> BlendRanker:
    tower = rankers.get("image_text")
    trained = tower.trained if isinstance(tower, ItemTowerRanker) else None
    blend = BlendRanker(trained, seed=seed)
    blend.fit(train, validate=validate)
    return blend


SPARSE_HISTORY = 3
"""Users with at most this many training positives are the sparse users of the report."""


def _sparse_users(
    blend: BlendRanker,
    rankers: dict[str, Ranker],
    train_pos: pd.DataFrame,
    users: list[str],
    items: ItemSet,
    relevant: NDArray[np.bool_],
) -> dict[str, float]:
    """NDCG@10 of the test users with at most :data:`SPARSE_HISTORY` training positives: the tower's
    learned user vectors (image_text) against the shipped representation's user side."""
    counts = train_pos["user_id"].value_counts()
    rows = [r for r, u in enumerate(users) if counts.get(u, 0) <= SPARSE_HISTORY]
    out: dict[str, float] = {"users": float(len(rows))}
    if not rows:
        return out
    subset = [users[r] for r in rows]
    rel = relevant[rows]
    out["shipped_ndcg@10"] = ranking_metrics(blend.use(blend.shipped).score(subset, items), rel)["ndcg@10"]
    if "image_text" in rankers:
        out["image_text_ndcg@10"] = ranking_metrics(rankers["image_text"].score(subset, items), rel)[
            "ndcg@10"
        ]
    return out


def evaluate_catalog(
    catalog: Catalog,
    *,
    seeds: int | Sequence[int] = 3,
    threshold: float = 4.0,
    rows: Sequence[str] = ROWS,
    features: Features | None = None,
    title_features: Features | None = None,
    tower_config: Callable[[str], ItemTowerConfig] = default_tower_config,
    dataset: str | None = None,
    progress: bool = True,
    cache_dir: Path | None = Path(".coldstart/cache/features"),
) -> EvaluationResult:
    """Run the KDD'24 item cold-start protocol on ``catalog`` (see the module docstring).

    Parameters
    ----------
    seeds
        Number of seeds (0, 1, ...) or the explicit seeds.
    threshold
        Interactions with ``value >= threshold`` are positives (use 0 or the minimum value for
        purchase/click logs where any interaction is positive).
    rows
        Which rows of :data:`ROWS` to compute.
    features, title_features
        Precomputed frozen features of all catalog items (full text / title-only text); extracted
        (and cached) when ``None``.
    tower_config
        Builds the item tower config for ``"image"``, ``"text"`` and ``"image_text"``.

    Raises
    ------
    InvalidInputError
        Unknown row, or no user with both a training and a cold-test positive.
    """
    unknown = [r for r in rows if r not in ROWS]
    if unknown:
        raise InvalidInputError("rows", unknown, f"unknown rows; choose from {list(ROWS)}")
    seed_list = list(range(seeds)) if isinstance(seeds, int) else [int(s) for s in seeds]
    if not seed_list:
        raise InvalidInputError("seeds", seeds, "need at least one seed")
    feats = features or extract_catalog_features(catalog, cache_dir=cache_dir, progress=progress)
    # the image+text tower also trains on title-only text (stage 2's short-text augmentation)
    needs_title = any(r in _TITLE_OF for r in rows) or "image_text" in rows
    title_feats = title_features
    if needs_title and title_feats is None:
        title_feats = extract_catalog_features(
            catalog, title_only=True, cache_dir=cache_dir, progress=progress
        )
    full_text = {it.item_id: it.full_text() for it in catalog.items}
    title_text = {it.item_id: it.title_text() for it in catalog.items}
    inter = catalog.interactions
    positives = inter.loc[inter["value"] >= threshold, ["user_id", "item_id"]].drop_duplicates()
    if positives.empty:
        raise InvalidInputError("threshold", threshold, "no interaction reaches it")

    per_seed: list[dict[str, dict[str, float]]] = []
    info: dict[str, Any] = {
        "items": len(catalog.items),
        "interactions": len(inter),
        "positives": len(positives),
        "users": int(inter["user_id"].nunique()),
        "image_ok": int(feats.image_ok.sum()),
        "text_ok": int(feats.text_ok.sum()),
    }
    for seed in seed_list:
        t0 = time.perf_counter()
        split = split_items(catalog.item_ids, seed)
        part = (
            dict.fromkeys(split.train, "train")
            | dict.fromkeys(split.val, "val")
            | dict.fromkeys(split.test, "test")
        )
        where = positives["item_id"].map(part)
        train_pos = positives[where == "train"]
        val_pos = positives[where == "val"]
        test_pos = positives[where == "test"]
        warm_users = set(train_pos["user_id"])

        train_set = TrainSet(_item_set(split.train, feats, full_text), train_pos.reset_index(drop=True))
        val_set = _item_set(split.val, feats, full_text)
        test_set = _item_set(split.test, feats, full_text)
        test_title: ItemSet | None = None
        if needs_title and title_feats is not None:
            base = feats.select(split.test)
            title = title_feats.select(split.test)
            test_title = ItemSet(
                Features(base.item_ids, base.image, title.text, base.image_ok, title.text_ok),
                [title_text[i] for i in split.test],
            )
        val_users = sorted(set(val_pos["user_id"]) & warm_users)
        test_users = sorted(set(test_pos["user_id"]) & warm_users)
        if not test_users:
            raise InvalidInputError(
                "catalog", str(catalog.root), "no user has both a training and a cold-test positive"
            )
        val_rel = relevance_matrix(val_pos, val_users, split.val)
        test_rel = relevance_matrix(test_pos, test_users, split.test)

        wanted = set(rows) | {_TITLE_OF[r] for r in rows if r in _TITLE_OF}
        if wanted & set(_BLEND_ROWS):
            wanted.add("image_text")
        rankers: dict[str, Ranker] = {}
        factories: dict[str, Callable[[int], Ranker]] = {
            "random": RandomRanker,
            "tfidf_knn": lambda _s: TfidfKnn(),
            "content_knn": lambda _s: ContentKnn(),
            "dropoutnet": DropoutNetRanker,
            "image_only": lambda s: ItemTowerRanker(tower_config("image"), s, name="image_only"),
            "text_only": lambda s: ItemTowerRanker(tower_config("text"), s, name="text_only"),
            "image_text": lambda s: ItemTowerRanker(
                tower_config("image_text"), s, name="image_text", short_text=title_feats
            ),
        }
        results: dict[str, dict[str, float]] = {}
        for name, factory in factories.items():
            if name not in wanted:
                continue
            t1 = time.perf_counter()
            ranker = factory(seed).fit(train_set, validate=_validator(val_users, val_set, val_rel))
            rankers[name] = ranker
            if name in rows:
                results[name] = ranking_metrics(ranker.score(test_users, test_set), test_rel)
                results[name]["fit_seconds"] = time.perf_counter() - t1
                if isinstance(ranker, ItemTowerRanker):
                    results[name]["epochs"] = ranker.trained.metrics["epochs"]
                    if name == "image_text":
                        results[name]["image_stage_epoch"] = ranker.trained.metrics["image_stage_epoch"]
                if progress:
                    log.info("seed %d %s ndcg@10=%.4f", seed, name, results[name]["ndcg@10"])
        if wanted & set(_BLEND_ROWS):
            blend = _fit_blend(rankers, train_set, _validator(val_users, val_set, val_rel), seed)
            for name in _BLEND_ROWS:
                candidate = blend.shipped if name == "shipped" else name
                if name in rows and candidate in blend.chosen:
                    results[name] = ranking_metrics(
                        blend.use(candidate).score(test_users, test_set), test_rel
                    )
            choice = {"seed": seed, **blend.describe()}
            choice["sparse_users"] = _sparse_users(blend, rankers, train_pos, test_users, test_set, test_rel)
            blend.use(blend.shipped)
            info.setdefault("shipped", []).append(choice)
        for name, source in _TITLE_OF.items():
            if name in rows and test_title is not None:
                results[name] = ranking_metrics(rankers[source].score(test_users, test_title), test_rel)
        per_seed.append({r: results[r] for r in rows if r in results})
        info.setdefault("split", []).append(
            {
                "seed": seed,
                "train_items": len(split.train),
                "val_items": len(split.val),
                "test_items": len(split.test),
                "train_positives": len(train_pos),
                "test_users": len(test_users),
                "seconds": round(time.perf_counter() - t0, 1),
            }
        )
    return EvaluationResult(
        dataset=dataset or catalog.root.name,
        seeds=seed_list,
        threshold=threshold,
        per_seed=per_seed,
        info=info,
    )
