"""Choosing the served representation on cold-validation items: which blocks, what weights, which users.

:class:`BlendRanker` fits the blocks of :mod:`models.representation` on the training items (the
lexical model, the content projection; the item tower comes trained), builds every training user's
profile in each block, and then, on the cold-validation items only:

1. chooses how the tower block's user side is formed. A user's learned embedding ``e`` is mixed with
   the pooled tower vectors ``p`` of the user's own training positives, ``u = n/(n+m) e + m/(n+m) p``
   (both unit-normalised; ``n`` = the user's positives), with ``m`` from :data:`MIX_GRID` (``0`` =
   learned only, ``inf`` = history only): a user with 3 interactions leans on its history, a long
   history on the learned vector, as far as validation says so;
2. scores every weight combination of :data:`WEIGHT_GRID` (0 allowed for each block);
3. keeps four candidates: ``lexical`` (the dense ``tfidf_knn``), ``content`` (the dense
   ``content_knn``), ``tower`` and ``hybrid`` (the best combination of two or more blocks), and ships
   the best of them; a tie goes to the simpler one, in that order.

The validation score is :func:`models.eval_protocol.validation_score` (mean of NDCG@10 and Recall@20), passed
in as ``validate``.
"""

from __future__ import annotations

import itertools
import logging
import math
from typing import Any, Literal

import numpy as np
from numpy.typing import NDArray

from coldstart.errors import InvalidInputError
from models.base import l2_normalize
from models.baselines import Features, ItemSet, Ranker, TrainSet, ValidationFn
from models.item_tower import TrainedItemTower
from models.lexical import LexicalModel
from models.representation import (
    BLOCKS,
    BlockName,
    BlockSpec,
    ContentProjection,
    Representation,
)

log = logging.getLogger(__name__)

F32 = NDArray[np.float32]
Candidate = Literal["lexical", "content", "tower", "hybrid"]
# Simplest first: a tie on validation ships the simpler representation.
CANDIDATES: tuple[Candidate, ...] = ("lexical", "content", "tower", "hybrid")
MIX_GRID: tuple[float, ...] = (0.0, 3.0, 10.0, 30.0, math.inf)
WEIGHT_GRID: dict[BlockName, tuple[float, ...]] = {
    "tower": (0.0, 1.0),
    "content": (0.0, 0.25, 0.5, 1.0, 2.0, 4.0),
    "lexical": (0.0, 0.25, 0.5, 1.0, 2.0, 4.0),
}
# Users sampled to measure each block's score spread.
_SPREAD_USERS = 2000


def _mix(learned: F32, pooled: F32, counts: NDArray[np.float64], m: float) -> F32:
    beta = (
        np.ones_like(counts)
        if m == 0
        else (np.zeros_like(counts) if math.isinf(m) else counts / (counts + m))
    )
    mixed = beta[:, None] * l2_normalize(learned) + (1.0 - beta[:, None]) * l2_normalize(pooled)
    return l2_normalize(mixed.astype(np.float32))


class BlendRanker(Ranker):
    """The served representation as a ranker (see the module docstring).

    Parameters
    ----------
    tower
        The trained item tower and its learned users (``None``: content and lexical blocks only).
    lexical_dims
        Widths of the lexical block tried on validation (the smallest of the best is kept: a sparse
        word model needs more dimensions the more distinct words carry the signal).
    content_dim
        Width of the content block.
    seed
        Seed of the lexical SVD.
    """

    name = "shipped"

    def __init__(
        self,
        tower: TrainedItemTower | None,
        *,
        lexical_dims: tuple[int, ...] = (128, 256, 512),
        content_dim: int = 128,
        seed: int = 0,
    ) -> None:
        self.tower = tower
        if not lexical_dims or min(lexical_dims) < 1:
            raise InvalidInputError("lexical_dims", lexical_dims, "need one or more widths >= 1")
        self.lexical_dims = tuple(sorted(set(lexical_dims)))
        self.content_dim = content_dim
        self.seed = seed
        self._lexical: LexicalModel | None = None
        self._content: ContentProjection | None = None
        self._profiles: dict[BlockName, F32] = {}
        self._user_row: dict[str, int] = {}
        self._scales: dict[BlockName, float] = {}
        self._weights: dict[BlockName, float] = {}
        self._cache: dict[int, tuple[ItemSet, dict[BlockName, F32]]] = {}
        self._mix = 0.0
        self.scores: dict[str, float] = {}
        self.chosen: dict[Candidate, dict[BlockName, float]] = {}
        self.shipped: Candidate = "tower"

    # -- blocks -------------------------------------------------------------------------------------
    def _item_blocks(self, items: ItemSet) -> dict[BlockName, F32]:
        # keyed by the ItemSet object (held in the entry, so its id cannot be reused): two sets with
        # the same ids may differ in text or features (e.g. title-only variants)
        key = id(items)
        if key not in self._cache or self._cache[key][0] is not items:
            f: Features = items.features
            out: dict[BlockName, F32] = {}
            if self.tower is not None:
                out["tower"] = self.tower.encode(f)
            if self._content is not None:
                out["content"] = self._content.transform(f.image, f.text, f.image_ok, f.text_ok)
            if self._lexical is not None:
                out["lexical"] = self._lexical.transform(items.texts)
            if len(self._cache) > 8:
                self._cache.clear()
            self._cache[key] = (items, out)
        return self._cache[key][1]

    def _fit(self, train: TrainSet, validate: ValidationFn | None) -> None:
        f = train.items.features
        self._content = ContentProjection.fit(f.image, f.text, f.image_ok, f.text_ok, self.content_dim)
        try:
            self._lexical = LexicalModel(max(self.lexical_dims), seed=self.seed).fit(train.items.texts)
        except InvalidInputError as exc:
            log.warning("no lexical block: %s", exc)
            self._lexical = None
        blocks = self._item_blocks(train.items)
        row = {i: r for r, i in enumerate(train.items.item_ids)}
        pos = train.positives.assign(_row=train.positives["item_id"].astype(str).map(row)).dropna(
            subset=["_row"]
        )
        users = sorted(pos["user_id"].astype(str).unique())
        self._user_row = {u: r for r, u in enumerate(users)}
        u_idx = pos["user_id"].astype(str).map(self._user_row).to_numpy(dtype=np.int64)
        i_idx = pos["_row"].to_numpy(dtype=np.int64)
        counts = np.bincount(u_idx, minlength=len(users)).astype(np.float64)
        self._u_idx, self._i_idx = u_idx, i_idx
        pooled = {name: self._pool(x) for name, x in blocks.items()}
        learned = self._learned(users, pooled.get("tower"))
        self._pooled, self._learned_vecs, self._counts = pooled, learned, counts
        self._train_blocks = blocks
        self._set_mix(0.0)
        names = [n for n in BLOCKS if n in blocks]
        if validate is None:
            self._weights = {n: 1.0 for n in names}
            return
        if "lexical" in names and len(self.lexical_dims) > 1:
            self._choose_lexical_dim(train, validate)
        if "tower" in names:
            mix_scores = {}
            for m in MIX_GRID:
                self._set_mix(m)
                self._weights = {"tower": 1.0}
                mix_scores[m] = validate(self)
            best_m = max(MIX_GRID, key=lambda m: (mix_scores[m], -MIX_GRID.index(m)))
            self._set_mix(best_m)
            self.scores |= {f"tower_mix_{m:g}": s for m, s in mix_scores.items()}
        self._search(names, validate)

    def _choose_lexical_dim(self, train: TrainSet, validate: ValidationFn) -> None:
        full = self._lexical
        assert full is not None
        dims = [d for d in self.lexical_dims if d < full.out_dim] + [full.out_dim]
        best_dim, best = dims[-1], -math.inf
        for dim in dims:
            self._lexical = full.truncate(dim)
            self._refit_block("lexical", train)
            self._weights = {"lexical": 1.0}
            score = validate(self)
            self.scores[f"lexical_dim_{dim}"] = score
            if score > best:
                best_dim, best = dim, score
        self._lexical = full.truncate(best_dim)
        self._refit_block("lexical", train)

    def _refit_block(self, name: BlockName, train: TrainSet) -> None:
        """Recompute one block's training vectors, user profiles and spread after a change."""
        self._cache.clear()
        blocks = self._item_blocks(train.items)
        self._train_blocks[name] = blocks[name]
        self._pooled[name] = self._pool(blocks[name])
        self._set_mix(self._mix)

    def _pool(self, x: F32) -> F32:
        """Each training user's unit-norm sum of its positives' rows of ``x``."""
        sums = np.zeros((len(self._user_row), x.shape[1]), dtype=np.float64)
        np.add.at(sums, self._u_idx, x[self._i_idx])
        return l2_normalize(sums.astype(np.float32))

    def _learned(self, users: list[str], pooled_tower: F32 | None) -> F32 | None:
        if self.tower is None or pooled_tower is None:
            return None
        index = self.tower.user_index()
        # a user the tower never saw falls back to its pooled history
        return np.stack(
            [
                self.tower.user_embeddings[index[u]] if u in index else pooled_tower[r]
                for r, u in enumerate(users)
            ]
        ).astype(np.float32)

    def _set_mix(self, m: float) -> None:
        self._mix = m
        self._profiles = dict(self._pooled)
        if self._learned_vecs is not None and "tower" in self._pooled:
            self._profiles["tower"] = _mix(self._learned_vecs, self._pooled["tower"], self._counts, m)
        rng = np.random.default_rng(self.seed)
        sample = rng.permutation(len(self._user_row))[:_SPREAD_USERS]
        self._scales = {}
        for name, prof in self._profiles.items():
            spread = float(np.std(prof[sample] @ self._train_blocks[name].T))
            self._scales[name] = spread if spread > 1e-9 else 1.0

    def _search(self, names: list[BlockName], validate: ValidationFn) -> None:
        grids = [WEIGHT_GRID[n] if n in names else (0.0,) for n in BLOCKS]
        best: dict[Candidate, tuple[float, dict[BlockName, float]]] = {}
        for combo in itertools.product(*grids):
            weights = {n: w for n, w in zip(BLOCKS, combo, strict=True) if w > 0}
            if not weights:
                continue
            self._weights = weights
            score = validate(self)
            self.scores["+".join(f"{n}:{w:g}" for n, w in weights.items())] = score
            kind: Candidate = "hybrid" if len(weights) > 1 else next(iter(weights))  # type: ignore[assignment]
            if kind not in best or score > best[kind][0]:
                best[kind] = (score, weights)
        self.chosen = {c: best[c][1] for c in CANDIDATES if c in best}
        ranked = [c for c in CANDIDATES if c in best]
        # strict improvement needed to pass a simpler candidate
        shipped = ranked[0]
        for c in ranked[1:]:
            if best[c][0] > best[shipped][0]:
                shipped = c
        self.shipped = shipped
        self.use(shipped)

    def use(self, candidate: Candidate) -> BlendRanker:
        """Score with ``candidate``'s chosen weights from now on (after :meth:`fit`)."""
        if candidate not in self.chosen:
            raise InvalidInputError("candidate", candidate, f"not fitted; have {list(self.chosen)}")
        self._weights = dict(self.chosen[candidate])
        return self

    def candidate_score(self, candidate: Candidate) -> float:
        """Validation score of ``candidate``'s chosen weights."""
        key = "+".join(f"{n}:{w:g}" for n, w in self.chosen[candidate].items())
        return self.scores[key]

    # -- scoring and serving ------------------------------------------------------------------------
    def _score(self, users: list[str], items: ItemSet) -> NDArray[np.float32]:
        blocks = self._item_blocks(items)
        out = np.zeros((len(users), len(items.item_ids)), dtype=np.float32)
        rows = np.asarray([self._user_row.get(u, -1) for u in users], dtype=np.int64)
        known = rows >= 0
        for name, w in self._weights.items():
            prof = self._profiles[name][rows[known]]
            out[known] += (w / self._scales[name]) * (prof @ blocks[name].T)
        return out

    def representation(self) -> Representation:
        """The served representation of the current weights."""
        specs = [
            BlockSpec(n, self._train_blocks[n].shape[1], self._weights[n], self._scales[n])
            for n in BLOCKS
            if self._weights.get(n, 0.0) > 0
        ]
        return Representation(
            specs,
            lexical=self._lexical,
            content=self._content,
            info=self.describe(),
        )

    def item_vectors(self, items: ItemSet) -> F32:
        """Served item vectors of ``items`` for the current weights (what the encoder worker writes)."""
        return self.representation().compose_items(self._item_blocks(items))

    def user_vectors(self) -> tuple[list[str], F32]:
        """Served user vectors of the training users for the current weights."""
        users = sorted(self._user_row, key=self._user_row.__getitem__)
        rep = self.representation()
        return users, rep.compose_users({n: self._profiles[n] for n in rep.names})

    def describe(self) -> dict[str, Any]:
        """What was chosen and why (the manifest's ``representation`` section)."""
        return {
            "shipped": self.shipped,
            "weights": {n: self._weights.get(n, 0.0) for n in BLOCKS},
            "tower_user_mix": self._mix if not math.isinf(self._mix) else "history_only",
            "lexical_dim": self._lexical.out_dim if self._lexical is not None else 0,
            "validation": {c: round(self.candidate_score(c), 6) for c in self.chosen if self.scores},
            "chosen_weights": {c: dict(w) for c, w in self.chosen.items()},
            "reason": "highest cold-validation score (mean NDCG@10 and Recall@20) among "
            f"{list(self.chosen)}; ties go to the simpler",
        }
