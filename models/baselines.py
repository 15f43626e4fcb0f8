"""Cold-start rankers compared by :mod:`models.evaluate`: the shared interface and the baselines.

Every ranker learns from the TRAINING items only (their features, texts and positive interactions)
and scores any set of unseen (cold) items for a list of users. Rows of the evaluation:

- :class:`RandomRanker` -- uniform random scores (the floor);
- :class:`TfidfKnn` -- TF-IDF of the item text; user profile = mean of the user's liked training
  items; cosine;
- :class:`ContentKnn` -- the same kNN over the frozen pretrained image+text features, each modality
  mean-centred on training items and L2-normalised;
- :class:`DropoutNetRanker` -- DropoutNet (Volkovs et al., NeurIPS 2017): a two-tower model whose
  item tower sees preference latents (truncated SVD of the training matrix) plus content, with
  input dropout on the preference part so that cold items (no preference input) are handled;
  trained to reproduce the latent scores.
"""

from __future__ import annotations

import copy
import math
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
import torch
from numpy.typing import NDArray
from torch import nn

from coldstart.errors import InvalidInputError
from models.base import l2_normalize
from models.representation import centre_modality, modality_means


@dataclass(frozen=True)
class Features:
    """Frozen per-item features, row-aligned with ``item_ids``.

    Attributes
    ----------
    item_ids
        ``n`` item ids.
    image, text
        ``(n, Di)`` / ``(n, Dt)`` float32 frozen tower outputs (zeros where the modality is absent).
    image_ok, text_ok
        ``(n,)`` bool, which modality is present.
    """

    item_ids: list[str]
    image: NDArray[np.float32]
    text: NDArray[np.float32]
    image_ok: NDArray[np.bool_]
    text_ok: NDArray[np.bool_]

    def take(self, rows: Sequence[int] | NDArray[np.int64]) -> Features:
        """The rows ``rows`` as a new table."""
        idx = np.asarray(rows, dtype=np.int64)
        return Features(
            [self.item_ids[int(r)] for r in idx],
            self.image[idx],
            self.text[idx],
            self.image_ok[idx],
            self.text_ok[idx],
        )

    def select(self, item_ids: Sequence[str]) -> Features:
        """The rows of ``item_ids``, in that order."""
        row = {i: r for r, i in enumerate(self.item_ids)}
        try:
            return self.take([row[i] for i in item_ids])
        except KeyError as exc:
            raise InvalidInputError("item_ids", exc.args[0], "no features for this item") from exc


@dataclass(frozen=True)
class ItemSet:
    """A set of items as a ranker sees them: features and texts, row-aligned."""

    features: Features
    texts: list[str]

    @property
    def item_ids(self) -> list[str]:
        """Item ids (rows)."""
        return self.features.item_ids


@dataclass(frozen=True)
class TrainSet:
    """What a ranker may learn from: the training items and their positive interactions.

    Attributes
    ----------
    items
        The training items.
    positives
        DataFrame ``user_id``, ``item_id`` (training items only, deduplicated).
    """

    items: ItemSet
    positives: pd.DataFrame


ValidationFn = Callable[["Ranker"], float]


class Ranker(ABC):
    """A cold-start ranker: fit on training items, score unseen items for users."""

    name: str = "ranker"

    def fit(self, train: TrainSet, *, validate: ValidationFn | None = None) -> Ranker:
        """Learn from ``train``; ``validate(self)`` (a score on cold-validation items to maximise) may
        drive early stopping / model selection. Returns ``self``."""
        if train.positives.empty:
            raise InvalidInputError("train.positives", 0, "no positive interactions on training items")
        self._fit(train, validate)
        return self

    def score(self, users: Sequence[str], items: ItemSet) -> NDArray[np.float32]:
        """Scores ``(len(users), len(items))``, higher = better; unknown users get uninformative rows."""
        out = self._score(list(users), items)
        if out.shape != (len(users), len(items.item_ids)):
            raise AssertionError(f"{type(self).__name__} returned {out.shape}")
        return out.astype(np.float32)

    @abstractmethod
    def _fit(self, train: TrainSet, validate: ValidationFn | None) -> None: ...

    @abstractmethod
    def _score(self, users: list[str], items: ItemSet) -> NDArray[np.float32]: ...


class RandomRanker(Ranker):
    """Uniform random scores (seeded, own generator)."""

    name = "random"

    def __init__(self, seed: int = 0) -> None:
        self.seed = seed
        self._rng = np.random.default_rng(seed)

    def _fit(self, train: TrainSet, validate: ValidationFn | None) -> None:
        self._rng = np.random.default_rng(self.seed)

    def _score(self, users: list[str], items: ItemSet) -> NDArray[np.float32]:
        return self._rng.random((len(users), len(items.item_ids))).astype(np.float32)


class _ProfileKnn(Ranker):
    """Cosine between a user's mean liked-item vector and each candidate's vector."""

    _profiles: dict[str, NDArray[np.float32]]

    @abstractmethod
    def _vectors(self, items: ItemSet) -> Any:
        """``(n, dim)`` item vectors: a dense float32 array or a scipy sparse matrix."""

    def _fit_vectors(self, train: TrainSet) -> Any:
        return self._vectors(train.items)

    def _fit(self, train: TrainSet, validate: ValidationFn | None) -> None:
        # deferred import: scikit-learn
        from sklearn.preprocessing import normalize

        vectors = normalize(self._fit_vectors(train))
        row = {i: r for r, i in enumerate(train.items.item_ids)}
        frame = train.positives.assign(_row=train.positives["item_id"].map(row)).dropna(subset=["_row"])
        self._profiles = {}
        for user, group in frame.groupby("user_id", sort=False):
            idx = group["_row"].to_numpy(dtype=np.int64)
            self._profiles[str(user)] = np.asarray(vectors[idx].mean(axis=0), dtype=np.float32).ravel()

    def _score(self, users: list[str], items: ItemSet) -> NDArray[np.float32]:
        # deferred import: scikit-learn
        from sklearn.preprocessing import normalize

        cand = normalize(self._vectors(items))
        dim = cand.shape[1]
        prof = l2_normalize(np.stack([self._profiles.get(u, np.zeros(dim, dtype=np.float32)) for u in users]))
        out: NDArray[np.float32] = np.asarray((cand @ prof.T).T, dtype=np.float32)
        return out


class TfidfKnn(_ProfileKnn):
    """TF-IDF (fitted on training items' texts, sublinear tf) kNN; sparse throughout."""

    name = "tfidf_knn"

    def __init__(self, *, max_features: int | None = None, ngram_max: int = 2, min_df: int = 1) -> None:
        self.max_features = max_features
        self.ngram_max = ngram_max
        self.min_df = min_df

    def _fit_vectors(self, train: TrainSet) -> Any:
        # deferred import: scikit-learn
        from sklearn.feature_extraction.text import TfidfVectorizer

        self._vectorizer = TfidfVectorizer(
            sublinear_tf=True,
            ngram_range=(1, self.ngram_max),
            min_df=self.min_df,
            max_features=self.max_features,
            dtype=np.float32,
        )
        self._vectorizer.fit(train.items.texts)
        return self._vectors(train.items)

    def _vectors(self, items: ItemSet) -> Any:
        return self._vectorizer.transform(items.texts)


def centred_content(
    features: Features,
    image_mean: NDArray[np.float32],
    text_mean: NDArray[np.float32],
    use: str = "image_text",
) -> NDArray[np.float32]:
    """Mean-centred, per-modality L2-normalised ``[image | text]`` (absent/unused modality = zeros)."""
    parts = []
    if use in ("image_text", "image"):
        parts.append(centre_modality(features.image, features.image_ok, image_mean))
    if use in ("image_text", "text"):
        parts.append(centre_modality(features.text, features.text_ok, text_mean))
    return np.concatenate(parts, axis=1).astype(np.float32)


def _means(features: Features) -> tuple[NDArray[np.float32], NDArray[np.float32]]:
    return modality_means(features.image, features.text, features.image_ok, features.text_ok)


class ContentKnn(_ProfileKnn):
    """kNN over frozen pretrained features, each modality mean-centred (training items) and L2-normalised."""

    name = "content_knn"

    def __init__(self, modalities: str = "image_text") -> None:
        if modalities not in ("image_text", "image", "text"):
            raise InvalidInputError("modalities", modalities, "expected image_text, image or text")
        self.modalities = modalities

    def _fit_vectors(self, train: TrainSet) -> NDArray[np.float32]:
        self._image_mean, self._text_mean = _means(train.items.features)
        return self._vectors(train.items)

    def _vectors(self, items: ItemSet) -> NDArray[np.float32]:
        return centred_content(items.features, self._image_mean, self._text_mean, self.modalities)


class _DropoutNet(nn.Module):
    def __init__(self, pref_dim: int, content_dim: int, hidden: int, out_dim: int) -> None:
        super().__init__()
        self.user = nn.Sequential(nn.Linear(pref_dim, hidden), nn.Tanh(), nn.Linear(hidden, out_dim))
        self.item = nn.Sequential(
            nn.Linear(pref_dim + content_dim, hidden), nn.Tanh(), nn.Linear(hidden, out_dim)
        )


class DropoutNetRanker(Ranker):
    """DropoutNet-style two-tower baseline.

    Preference latents ``U, V`` come from a truncated SVD (rank ``rank``) of the binary training
    matrix. The user tower maps ``U_u``; the item tower maps ``[V_j, content_j]`` where content is the
    mean-centred frozen image+text features (PCA to ``content_dim``, fitted on training items) and
    ``V_j`` is zeroed with probability ``dropout`` during training (always zero for cold items). The
    towers are trained to reproduce ``U_u . V_j`` on positive pairs and uniformly sampled pairs (MSE),
    as in the paper; early stopping on validation.
    """

    name = "dropoutnet"

    def __init__(
        self,
        seed: int = 0,
        *,
        rank: int = 64,
        hidden: int = 256,
        out_dim: int = 128,
        dropout: float = 0.5,
        content_dim: int = 256,
        negatives_per_positive: int = 2,
        batch_size: int = 2048,
        lr: float = 1e-3,
        max_epochs: int = 12,
        patience: int = 3,
    ) -> None:
        self.seed = seed
        self.rank = rank
        self.hidden = hidden
        self.out_dim = out_dim
        self.dropout = dropout
        self.content_dim = content_dim
        self.negatives_per_positive = negatives_per_positive
        self.batch_size = batch_size
        self.lr = lr
        self.max_epochs = max_epochs
        self.patience = patience

    def _fit(self, train: TrainSet, validate: ValidationFn | None) -> None:
        from scipy.sparse import csr_matrix
        from scipy.sparse.linalg import svds

        gen = torch.Generator().manual_seed(self.seed)
        item_ids = train.items.item_ids
        item_row = {i: r for r, i in enumerate(item_ids)}
        users = sorted(train.positives["user_id"].astype(str).unique())
        self._user_row = {u: r for r, u in enumerate(users)}
        u_idx = train.positives["user_id"].astype(str).map(self._user_row).to_numpy(dtype=np.int64)
        i_idx = train.positives["item_id"].astype(str).map(item_row).to_numpy(dtype=np.int64)
        matrix = csr_matrix(
            (np.ones(len(u_idx), dtype=np.float64), (u_idx, i_idx)), shape=(len(users), len(item_ids))
        )
        k = max(1, min(self.rank, min(matrix.shape) - 1))
        rng = np.random.default_rng(self.seed)
        left, sing, right_t = svds(matrix, k=k, v0=rng.random(min(matrix.shape)))
        root = np.sqrt(sing)
        self._u_pref = (left * root).astype(np.float32)
        v_pref = (right_t.T * root).astype(np.float32)
        scale = float(np.abs(self._u_pref @ v_pref.T).max()) or 1.0
        self._u_pref /= math.sqrt(scale)
        v_pref /= math.sqrt(scale)
        self._image_mean, self._text_mean = _means(train.items.features)
        raw = centred_content(train.items.features, self._image_mean, self._text_mean)
        # PCA of the content (fitted on training items) keeps the baseline cheap to train.
        self._content_mean = raw.mean(axis=0)
        _, _, vt = np.linalg.svd(raw - self._content_mean, full_matrices=False)
        self._content_basis = vt[: min(self.content_dim, vt.shape[0])].T.astype(np.float32)
        content = self._content(train.items.features)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(self.seed)
            self._net = _DropoutNet(k, content.shape[1], self.hidden, self.out_dim)
        U = torch.from_numpy(self._u_pref)
        V = torch.from_numpy(v_pref)
        C = torch.from_numpy(content)
        pos_u = torch.from_numpy(u_idx)
        pos_i = torch.from_numpy(i_idx)
        opt = torch.optim.Adam(self._net.parameters(), lr=self.lr)
        best = -math.inf
        best_state = None
        bad = 0
        n_items = len(item_ids)
        for _epoch in range(self.max_epochs):
            self._net.train()
            perm = torch.randperm(len(pos_u), generator=gen)
            for start in range(0, len(perm), self.batch_size):
                b = perm[start : start + self.batch_size]
                neg_u = pos_u[b].repeat(self.negatives_per_positive)
                neg_i = torch.randint(0, n_items, (neg_u.shape[0],), generator=gen)
                bu = torch.cat([pos_u[b], neg_u])
                bi = torch.cat([pos_i[b], neg_i])
                target = (U[bu] * V[bi]).sum(dim=1)
                keep = (torch.rand(bi.shape[0], 1, generator=gen) >= self.dropout).float()
                item_in = torch.cat([V[bi] * keep, C[bi]], dim=1)
                pred = (self._net.user(U[bu]) * self._net.item(item_in)).sum(dim=1)
                loss = torch.mean((pred - target) ** 2)
                opt.zero_grad()
                loss.backward()  # type: ignore[no-untyped-call]
                opt.step()
            if validate is not None:
                score = validate(self)
                if score > best:
                    best, best_state, bad = score, copy.deepcopy(self._net.state_dict()), 0
                else:
                    bad += 1
                    if bad >= self.patience:
                        break
        if best_state is not None:
            self._net.load_state_dict(best_state)

    def _content(self, features: Features) -> NDArray[np.float32]:
        raw = centred_content(features, self._image_mean, self._text_mean)
        out: NDArray[np.float32] = ((raw - self._content_mean) @ self._content_basis).astype(np.float32)
        return out

    @torch.no_grad()
    def _score(self, users: list[str], items: ItemSet) -> NDArray[np.float32]:
        self._net.eval()
        content = torch.from_numpy(self._content(items.features))
        cold_pref = torch.zeros(content.shape[0], self._u_pref.shape[1])
        item_vecs = self._net.item(torch.cat([cold_pref, content], dim=1))
        rows = [self._user_row.get(u, -1) for u in users]
        u_pref = np.stack(
            [self._u_pref[r] if r >= 0 else np.zeros(self._u_pref.shape[1], dtype=np.float32) for r in rows]
        )
        user_vecs = self._net.user(torch.from_numpy(u_pref))
        out: NDArray[np.float32] = (user_vecs @ item_vecs.T).numpy().astype(np.float32)
        return out
