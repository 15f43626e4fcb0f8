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

import json
import logging
import math
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
from models.catalog import Catalog
from models.item_tower import FeatureRows, ItemTowerConfig, TrainedItemTower, train_item_tower

log = logging.getLogger(__name__)

KS: tuple[int, ...] = (1, 5, 10, 20)


# --------------------------------------------------------------------------------------------------
# Features
# --------------------------------------------------------------------------------------------------


def _as_features(table: FeatureRows) -> Features:
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
    from models.features import extract_features

    # The cache is per modality: the title-only variant reuses the image features.
    contents = [it.content(title_only=title_only) for it in catalog.items]
    table = extract_features(
        contents, cache_dir=cache_dir, batch_size=batch_size, progress=progress, threads=threads
    )
    return _as_features(table)


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
)
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


def _item_set(ids: list[str], table: Features, texts: dict[str, str]) -> ItemSet:
    return ItemSet(table.select(ids), [texts[i] for i in ids])


def validation_score(scores: NDArray[np.floating[Any]], relevant: NDArray[np.bool_]) -> float:
    """The model-selection score on cold-validation items: mean of NDCG@10 and Recall@20 (the two
    headline metrics). ``scores`` / ``relevant``: ``(U, N)`` as in :func:`ranking_metrics`."""
    m = ranking_metrics(scores, relevant, (10, 20))
    return 0.5 * (m["ndcg@10"] + m["recall@20"])


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


# --------------------------------------------------------------------------------------------------
# Reports
# --------------------------------------------------------------------------------------------------

_ROW_DOC = {
    "random": "uniform random scores",
    "tfidf_knn": "TF-IDF of the item text (uni+bigrams, fitted on training items); "
    "user = mean of liked training items; cosine",
    "content_knn": "same kNN over the frozen EfficientNet-Lite0 + MiniLM features, mean-centred per modality",
    "dropoutnet": "DropoutNet-style two-tower (SVD preference latents + frozen content, input dropout 0.5)",
    "image_only": "item tower trained on the image features only",
    "text_only": "item tower trained on the text features only (= stage 1 of image_text, same seed)",
    "image_text": "item tower, text-anchored residual fusion (ours): the text model of text_only plus a "
    "per-item gated image correction trained in a second stage (users and text path frozen, 30% of "
    "training items shown with title-only text) and kept only if it improves cold-validation",
    "tfidf_knn_title": "tfidf_knn, cold items' text cut to their title",
    "content_knn_title": "content_knn, cold items' text cut to their title",
    "text_only_title": "text_only tower, cold items' text cut to their title",
    "image_text_title": "image_text tower, cold items' text cut to their title",
}


def _fmt(summary: dict[str, dict[str, float]], row: str, metric: str) -> str:
    mean = summary[row].get(metric)
    if mean is None:
        return "-"
    std = summary[row].get(f"{metric}_std", 0.0)
    return f"{mean:.4f} ± {std:.4f}"


def _targets(summary: dict[str, dict[str, float]]) -> list[tuple[str, bool]]:
    out: list[tuple[str, bool]] = []
    if "image_text" not in summary:
        return out
    ours = summary["image_text"]
    for metric in ("ndcg@10", "recall@20"):
        singles = [summary[r][metric] for r in ("image_only", "text_only") if r in summary]
        if singles:
            best = max(singles)
            out.append(
                (
                    f"image_text {metric} {ours[metric]:.4f} ≥ max(image_only, text_only) {best:.4f}",
                    ours[metric] >= best,
                )
            )
        if "content_knn" in summary:
            ref = summary["content_knn"][metric]
            out.append(
                (f"image_text {metric} {ours[metric]:.4f} ≥ content_knn {ref:.4f}", ours[metric] >= ref)
            )
    if "tfidf_knn" in summary:
        ref = summary["tfidf_knn"]["ndcg@10"]
        out.append(
            (
                f"image_text ndcg@10 {ours['ndcg@10']:.4f} ≥ 1.3 × tfidf_knn {1.3 * ref:.4f}",
                ours["ndcg@10"] >= 1.3 * ref,
            )
        )
    return out


def _contributions(summary: dict[str, dict[str, float]]) -> list[str]:
    lines: list[str] = []

    def get(row: str) -> float | None:
        return summary[row]["ndcg@10"] if row in summary else None

    img, txt, both = get("image_only"), get("text_only"), get("image_text")
    if img is not None and txt is not None:
        stronger = "text" if txt >= img else "image"
        lines.append(
            f"Alone, the {stronger} carries more taste signal: text_only NDCG@10 {txt:.4f} "
            f"vs image_only {img:.4f}."
        )
    if both is not None and img is not None and txt is not None:
        best = max(img, txt)
        lines.append(
            f"Fused (full text): image_text {both:.4f}, {100 * (both - best) / best:+.1f}% "
            "over the best single modality."
        )
    t_title, b_title = get("text_only_title"), get("image_text_title")
    if t_title is not None and b_title is not None:
        lines.append(
            f"Text-poor (cold items' text cut to the title): text_only_title {t_title:.4f} "
            f"vs image_text_title {b_title:.4f} "
            f"({100 * (b_title - t_title) / max(t_title, 1e-12):+.1f}% from adding the image)."
        )
        if txt is not None:
            lines.append(
                f"Cutting the text to the title costs the text tower {100 * (t_title - txt) / txt:+.1f}%."
            )
    return lines


def _per_seed_image_stage(result: EvaluationResult) -> list[str]:
    """Per seed: text_only vs image_text (same stage-1 text model) and the image stage's kept epoch."""
    rows = [s for s in result.per_seed if "text_only" in s and "image_text" in s]
    if not rows:
        return []
    lines = [
        "",
        "## Per seed: what the image stage adds to the same text model",
        "",
        "| seed | text_only NDCG@10 | image_text NDCG@10 | Δ | text_only Recall@20 | image_text Recall@20 "
        "| Δ | image stage epoch kept (0 = left out) |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for seed, per in zip(result.seeds, result.per_seed, strict=True):
        if "text_only" not in per or "image_text" not in per:
            continue
        t, b = per["text_only"], per["image_text"]
        epoch = b.get("image_stage_epoch", math.nan)
        lines.append(
            f"| {seed} | {t['ndcg@10']:.4f} | {b['ndcg@10']:.4f} | {b['ndcg@10'] - t['ndcg@10']:+.4f} "
            f"| {t['recall@20']:.4f} | {b['recall@20']:.4f} | {b['recall@20'] - t['recall@20']:+.4f} "
            f"| {'-' if math.isnan(epoch) else int(epoch)} |"
        )
    return lines


def write_results(result: EvaluationResult, out_dir: Path, *, command: str, notes: str = "") -> Path:
    """Write ``cold_start.json`` and ``cold_start.md`` (table, targets, modality contributions)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    doc = result.to_json()
    doc["command"] = command
    (out_dir / "cold_start.json").write_text(json.dumps(doc, indent=2, sort_keys=False) + "\n")
    summary = result.summary()
    info = result.info
    lines = [
        f"# Item cold-start evaluation: {result.dataset}",
        "",
        "Generated by:",
        "",
        "```",
        command,
        "```",
        "",
        f"Protocol (KDD'24 item cold-start): the {info['items']} items are split per seed into train / "
        "cold-validation / cold-test (70/15/15); positives are interactions with value ≥ "
        f"{result.threshold:g} ({info['positives']} positives, {info['users']} users); every method learns "
        "from training items only; for each user with a training and a cold-test positive, all cold-test "
        "items are ranked; metrics are averaged over users, then mean ± std over "
        f"{len(result.seeds)} seeds ({', '.join(map(str, result.seeds))}). The cold-validation split is used "
        "only for early stopping / model selection. Features: frozen EfficientNet-Lite0 (1280-d) and "
        "all-MiniLM-L6-v2 (384-d); the item tower's output is 128-d.",
        "",
        "| row | NDCG@10 | Recall@20 | Precision@10 | NDCG@20 | Recall@10 |",
        "|---|---|---|---|---|---|",
    ]
    for row in summary:
        lines.append(
            f"| {row} | "
            + " | ".join(
                _fmt(summary, row, m)
                for m in ("ndcg@10", "recall@20", "precision@10", "ndcg@20", "recall@10")
            )
            + " |"
        )
    lines += ["", "All metrics (mean over seeds):", ""]
    metrics = [f"{m}@{k}" for m in ("ndcg", "recall", "precision") for k in KS]
    lines.append("| row | " + " | ".join(metrics) + " |")
    lines.append("|---|" + "---|" * len(metrics))
    for row in summary:
        lines.append(f"| {row} | " + " | ".join(f"{summary[row][m]:.4f}" for m in metrics) + " |")
    lines += ["", "## Rows", ""]
    lines += [f"- **{row}**: {_ROW_DOC.get(row, row)}" for row in summary]
    targets = _targets(summary)
    if targets:
        lines += ["", "## Targets", ""]
        lines += [f"- [{'x' if ok else ' '}] {text}" for text, ok in targets]
    contributions = _contributions(summary)
    if contributions:
        lines += ["", "## What each modality contributes (NDCG@10)", ""]
        lines += [f"- {text}" for text in contributions]
    lines += _per_seed_image_stage(result)
    if notes:
        lines += ["", "## Notes", "", notes.strip()]
    (out_dir / "cold_start.md").write_text("\n".join(lines) + "\n")
    return out_dir
