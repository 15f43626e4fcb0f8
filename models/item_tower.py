"""The item tower: content features -> the recommendation space, after the KDD'24 cold-start paper.

A cold item's vector ``v = ItemTower(image_feat, text_feat, image_ok, text_ok)`` is directly
comparable (dot product) with the user vectors learned next to it, so an item with zero
interactions can be ranked for a user from its pixels and text alone.

Architecture (late fusion, ONNX-exportable ops only):

1. per modality: subtract the training-item mean (a buffer fitted on training items, so the ONNX
   graph includes it), L2-normalise (scaled by sqrt(dim)), zero the row if the modality is absent;
2. per modality projection into a common ``fusion_dim`` space ``z_c``; the image goes through a
   narrow bottleneck (``image_bottleneck``, default 64) because the 1280-d ImageNet features
   overfit otherwise;
3. a per-item modality gate: softmax over the modalities that are present of logits computed from
   ``[z_image, z_text, image_ok, text_ok]`` -- each item gets its own modality weights;
4. fusion (``config.fusion``): ``residual`` (the default) is text-anchored,
   ``v = mlp(z_text) + g_image * W z_image`` for items with text and a separate image head
   ``v = mlp_image(z_image)`` for items without; ``gated_concat`` / ``gated_sum`` feed the gated
   modality vectors (concatenated or summed) to one 1-2 layer MLP.

Training (:func:`train_item_tower`): users get learned embeddings; the loss is the paper's
two-sided softmax rating-ranking loss (Eq. 1) plus ``alignment_weight`` (λ) times its multimodal
alignment loss (Eq. 2-3). Negatives are, by config, the paper's in-batch negatives (optionally
with log-popularity correction), the full set of training items, or uniformly sampled training items
(both keep the popularity prior that in-batch negatives discard). Modality dropout (DropoutNet-style)
randomly hides one modality of training items so text-only and image-only items stay in the same
space. With the ``residual`` fusion, training has two stages: (1) the text model alone (text path and
user embeddings; exactly the ``modalities="text"`` model of the same seed), (2) with users and the text
path frozen, the image path (projection, gate, correction, image-only head) learns what the image
adds, optionally with some items shown with their title only (``short_text_rate``). The
cold-validation score, when given, drives early stopping in each stage and scores the text model
before stage 2, so an image path that does not help cold-validation items is left out (measured on
MovieLens posters: the image's frozen ImageNet features add little beyond plots; see
docs/results/cold_start.md).
"""

from __future__ import annotations

import copy
import logging
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Literal, Protocol

import numpy as np
import pandas as pd
import torch
from numpy.typing import NDArray
from pydantic import BaseModel, ConfigDict, Field
from torch import nn
from torch.nn import functional as F

from coldstart.errors import InvalidInputError, ModalityError

log = logging.getLogger(__name__)

_EPS = 1e-6
_MASK = 1e4


class ItemTowerConfig(BaseModel):
    """Hyperparameters of the item tower and its training.

    The defaults are the configuration measured in docs/results/cold_start.md (text-anchored residual
    fusion, 1024 sampled negatives, regularisation chosen on cold-VALIDATION items only).

    Parameters
    ----------
    modalities
        Which inputs the tower uses: both, image only or text only (the ablation rows).
    item_dim
        Output dimension (the recommendation space; user vectors have the same size).
    fusion_dim
        Size of the common per-modality space ``z_c`` (where the alignment loss acts).
    image_bottleneck
        Rank of the image projection (compression of the 1280-d features; 0 = no bottleneck).
    image_pca
        When > 0, the normalised image features are first projected on their top ``image_pca``
        principal directions, fitted (unsupervised) on the training items with the centring: a fixed,
        non-learned compression that cannot overfit the interactions (0 = off).
    hidden, layers
        The fusion MLP: ``layers=1`` is one linear map, ``layers=2`` adds a hidden ReLU layer.
    fusion
        ``gated_concat``: MLP over the concatenated gated modality vectors; ``gated_sum``: MLP over
        their gate-weighted sum; ``residual``: text-anchored -- the MLP maps the text vector alone and
        a per-item gate ``g`` in (0, 1) adds a linear image correction, ``v = mlp(z_text) +
        g * W z_image``; an item without text uses a separate image head, ``v = mlp_image(z_image)``
        (the image can only add to a text model that stands on its own).
    feature_dropout
        Dropout on the normalised input features during training.
    modality_dropout
        Probability, per training item and step, of hiding one of its two modalities.
    negatives
        ``in_batch`` (the paper's Eq. 1); ``full`` (softmax over all training items and, on the
        item side, over all users); ``sampled`` (``num_negatives`` uniformly sampled training items
        per step instead of all: the same objective in expectation, cheaper on large catalogs).
    logq_correction
        With in-batch negatives, subtract log(item popularity) from the logits (sampled-softmax
        correction, so the popularity prior is not trained away).
    alignment_weight
        λ of Eq. 3 (0 disables the multimodal alignment loss).
    short_text_rate
        ``residual`` fusion, stage 2 only: probability, per training item and step, of replacing its
        text features by those of its short text (title only), when :func:`train_item_tower` is given
        them -- the weak-vendor-description case, so the gate learns to lean on the image when the
        text says little (0 = off).
    alignment_temperature
        Temperature of the cosine similarities in the alignment loss.
    """

    model_config = ConfigDict(extra="forbid")

    modalities: Literal["image_text", "image", "text"] = "image_text"
    item_dim: int = Field(128, ge=1)
    fusion_dim: int = Field(128, ge=1)
    image_bottleneck: int = Field(16, ge=0)
    image_pca: int = Field(0, ge=0)
    hidden: int = Field(256, ge=1)
    layers: Literal[1, 2] = 2
    fusion: Literal["gated_concat", "gated_sum", "residual"] = "residual"
    feature_dropout: float = Field(0.3, ge=0.0, lt=1.0)
    modality_dropout: float = Field(0.5, ge=0.0, le=1.0)
    negatives: Literal["in_batch", "full", "sampled"] = "sampled"
    num_negatives: int = Field(1024, ge=1)
    logq_correction: bool = True
    alignment_weight: float = Field(0.1, ge=0.0)
    alignment_temperature: float = Field(0.1, gt=0.0)
    short_text_rate: float = Field(0.3, ge=0.0, le=1.0)
    batch_size: int = Field(1024, ge=2)
    lr: float = Field(1e-3, gt=0.0)
    weight_decay: float = Field(0.01, ge=0.0)
    max_epochs: int = Field(30, ge=1)
    patience: int = Field(5, ge=1)
    user_init_std: float = Field(0.1, gt=0.0)


class ItemTower(nn.Module):
    """Late-fusion item tower over frozen image and text features.

    Parameters
    ----------
    image_dim, text_dim
        Sizes of the input features (1280 and 384 for the offline towers).
    config
        Architecture hyperparameters (the training ones are ignored here).

    Notes
    -----
    ``image_mean`` / ``text_mean`` are buffers (part of ``state_dict`` and of the ONNX graph);
    :meth:`fit_centering` sets them from training items.
    """

    image_mean: torch.Tensor
    text_mean: torch.Tensor
    image_basis: torch.Tensor
    use_image: torch.Tensor
    use_text: torch.Tensor

    def __init__(self, image_dim: int, text_dim: int, config: ItemTowerConfig | None = None) -> None:
        super().__init__()
        cfg = config or ItemTowerConfig()
        self.config = cfg
        self.image_dim = image_dim
        self.text_dim = text_dim
        self.item_dim = cfg.item_dim
        self.register_buffer("image_mean", torch.zeros(image_dim))
        self.register_buffer("text_mean", torch.zeros(text_dim))
        self.register_buffer("use_image", torch.tensor(0.0 if cfg.modalities == "text" else 1.0))
        self.register_buffer("use_text", torch.tensor(0.0 if cfg.modalities == "image" else 1.0))
        d = cfg.fusion_dim
        image_in = image_dim
        if cfg.image_pca > 0:
            if cfg.image_pca > image_dim:
                raise InvalidInputError("image_pca", cfg.image_pca, f"must be <= image_dim {image_dim}")
            self.register_buffer("image_basis", torch.zeros(image_dim, cfg.image_pca))
            image_in = cfg.image_pca
        if cfg.image_bottleneck > 0:
            self.image_proj: nn.Module = nn.Sequential(
                nn.Linear(image_in, cfg.image_bottleneck, bias=False), nn.Linear(cfg.image_bottleneck, d)
            )
        else:
            self.image_proj = nn.Linear(image_in, d)
        self.text_proj = nn.Linear(text_dim, d)
        self.gate = nn.Linear(2 * d + 2, 2)
        nn.init.zeros_(self.gate.weight)
        nn.init.zeros_(self.gate.bias)
        fused = 2 * d if cfg.fusion == "gated_concat" else d
        self.mlp: nn.Module = self._head(fused, cfg)
        if cfg.fusion == "residual":
            # the image correction starts at zero: training begins from the text-only model
            self.image_residual = nn.Linear(d, cfg.item_dim, bias=False)
            nn.init.zeros_(self.image_residual.weight)
            self.image_alone = self._head(d, cfg)

    @staticmethod
    def _head(fan_in: int, cfg: ItemTowerConfig) -> nn.Module:
        if cfg.layers == 1:
            return nn.Linear(fan_in, cfg.item_dim)
        return nn.Sequential(nn.Linear(fan_in, cfg.hidden), nn.ReLU(), nn.Linear(cfg.hidden, cfg.item_dim))

    @torch.no_grad()
    def fit_centering(
        self,
        image: NDArray[np.float32],
        text: NDArray[np.float32],
        image_ok: NDArray[np.bool_],
        text_ok: NDArray[np.bool_],
    ) -> None:
        """Set the centring buffers to the mean of the present features of (training) items."""
        if image_ok.any():
            self.image_mean.copy_(torch.from_numpy(image[image_ok].mean(axis=0).astype(np.float32)))
            if self.config.image_pca > 0:
                self._fit_image_basis(
                    torch.from_numpy(np.ascontiguousarray(image[image_ok], dtype=np.float32))
                )
        if text_ok.any():
            self.text_mean.copy_(torch.from_numpy(text[text_ok].mean(axis=0).astype(np.float32)))

    @torch.no_grad()
    def _fit_image_basis(self, image: torch.Tensor) -> None:
        """Top principal directions of the normalised (training) image features, ``(image_dim, p)``.

        Scaled by one scalar so that projected rows have mean squared norm ``p`` (entries of order 1).
        """
        p = self.config.image_pca
        x = self._normalise(image, self.image_mean, torch.ones(image.shape[0]), self.image_dim)
        _, _, vh = torch.linalg.svd(x, full_matrices=False)
        basis = vh[:p].T.contiguous()
        k = min(p, basis.shape[1])
        full = torch.zeros(self.image_dim, p)
        full[:, :k] = basis[:, :k]
        energy = float(((x @ full) ** 2).sum(dim=1).mean())
        self.image_basis.copy_(full * math.sqrt(p / max(energy, _EPS)))

    @staticmethod
    def _normalise(x: torch.Tensor, mean: torch.Tensor, ok: torch.Tensor, dim: int) -> torch.Tensor:
        centred = x - mean
        norm = torch.sqrt((centred * centred).sum(dim=1, keepdim=True) + _EPS)
        # unit L2 norm times sqrt(dim): entries of order 1 whatever the feature size
        return centred / norm * (math.sqrt(dim) * ok.unsqueeze(1))

    def modality_embeddings(
        self,
        image_feat: torch.Tensor,
        text_feat: torch.Tensor,
        image_ok: torch.Tensor,
        text_ok: torch.Tensor,
        generator: torch.Generator | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """Per-modality vectors in the common space.

        Parameters
        ----------
        generator
            Training only: draws the feature-dropout masks (``config.feature_dropout``); ``None``
            (inference, ONNX) applies no dropout.

        Returns
        -------
        z_image, z_text : (B, fusion_dim)
        image_on, text_on : (B,) float, the effective availability (input flags x configured modalities)
        """
        image_on = image_ok * self.use_image
        text_on = text_ok * self.use_text
        img = self._normalise(image_feat, self.image_mean, image_on, self.image_dim)
        txt = self._normalise(text_feat, self.text_mean, text_on, self.text_dim)
        p = self.config.feature_dropout
        if generator is not None and p > 0.0:
            img = img * (torch.rand(img.shape, generator=generator) >= p).float() / (1.0 - p)
            txt = txt * (torch.rand(txt.shape, generator=generator) >= p).float() / (1.0 - p)
        if self.config.image_pca > 0:
            img = img @ self.image_basis
        z_image = self.image_proj(img) * image_on.unsqueeze(1)
        z_text = self.text_proj(txt) * text_on.unsqueeze(1)
        return z_image, z_text, image_on, text_on

    def gates(
        self, z_image: torch.Tensor, z_text: torch.Tensor, image_on: torch.Tensor, text_on: torch.Tensor
    ) -> torch.Tensor:
        """Per-item modality weights ``(B, 2)`` (image, text), zero for absent modalities, rows sum to 1."""
        flags = torch.stack([image_on, text_on], dim=1)
        logits = self.gate(torch.cat([z_image, z_text, flags], dim=1)) + (flags - 1.0) * _MASK
        return torch.softmax(logits, dim=1)

    def forward(
        self,
        image_feat: torch.Tensor,
        text_feat: torch.Tensor,
        image_ok: torch.Tensor,
        text_ok: torch.Tensor,
    ) -> torch.Tensor:
        """Item vectors.

        Parameters
        ----------
        image_feat
            ``(B, image_dim)`` float32 frozen image features (any values where ``image_ok`` is 0).
        text_feat
            ``(B, text_dim)`` float32 frozen text features.
        image_ok, text_ok
            ``(B,)`` float32 in {0, 1}: which modality is present.

        Returns
        -------
        Tensor
            ``(B, item_dim)`` float32, compared with user vectors by dot product.
        """
        z_image, z_text, image_on, text_on = self.modality_embeddings(
            image_feat, text_feat, image_ok, text_ok
        )
        return self.fuse(z_image, z_text, image_on, text_on)

    def fuse(
        self, z_image: torch.Tensor, z_text: torch.Tensor, image_on: torch.Tensor, text_on: torch.Tensor
    ) -> torch.Tensor:
        """Gate + fusion MLP on the modality vectors of :meth:`modality_embeddings`; ``(B, item_dim)``."""
        g = self.gates(z_image, z_text, image_on, text_on)
        gi = g[:, 0:1]
        gt = g[:, 1:2]
        if self.config.fusion == "residual":
            # text present: text model + gated image correction; text absent: the image head alone
            t = text_on.unsqueeze(1)
            anchored: torch.Tensor = self.mlp(z_text) + gi * self.image_residual(z_image)
            alone: torch.Tensor = self.image_alone(z_image)
            return t * anchored + (1.0 - t) * alone
        if self.config.fusion == "gated_concat":
            fused = torch.cat([2.0 * gi * z_image, 2.0 * gt * z_text], dim=1)
        else:
            fused = gi * z_image + gt * z_text
        out: torch.Tensor = self.mlp(fused)
        return out


@dataclass
class TrainedItemTower:
    """Result of :func:`train_item_tower`.

    Attributes
    ----------
    module
        The trained :class:`ItemTower` (eval mode, best cold-validation state when validation given).
    user_ids
        ``U`` user ids, row order of ``user_embeddings``.
    user_embeddings
        ``(U, item_dim)`` float32 learned user vectors.
    metrics
        Training metrics: final/best losses, best validation NDCG@10, epochs run.
    history
        Per-epoch ``{"epoch", "loss", "val_score"}``.
    """

    module: ItemTower
    user_ids: list[str]
    user_embeddings: NDArray[np.float32]
    metrics: dict[str, float]
    history: list[dict[str, float]] = field(default_factory=list)

    def encode(self, features: FeatureRows, *, batch_size: int = 4096) -> NDArray[np.float32]:
        """Item vectors ``(n, item_dim)`` of ``features`` (eval mode, no dropout)."""
        return encode_items(self.module, features, batch_size=batch_size)

    def user_index(self) -> dict[str, int]:
        """Map user id -> row of ``user_embeddings``."""
        return {u: i for i, u in enumerate(self.user_ids)}


class FeatureRows(Protocol):
    """Frozen per-item features (what models/features.py's ``FeatureTable`` provides).

    Attributes
    ----------
    item_ids
        ``n`` item ids, row order of the arrays.
    image, text
        ``(n, Di)`` / ``(n, Dt)`` float32 frozen tower outputs (rows of absent modalities: any value).
    image_ok, text_ok
        ``(n,)`` bool: which modality is present.
    """

    @property
    def item_ids(self) -> Sequence[str]: ...
    @property
    def image(self) -> NDArray[np.float32]: ...
    @property
    def text(self) -> NDArray[np.float32]: ...
    @property
    def image_ok(self) -> NDArray[np.bool_]: ...
    @property
    def text_ok(self) -> NDArray[np.bool_]: ...


def _tensors(features: FeatureRows) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    return (
        torch.from_numpy(np.ascontiguousarray(features.image, dtype=np.float32)),
        torch.from_numpy(np.ascontiguousarray(features.text, dtype=np.float32)),
        torch.from_numpy(np.asarray(features.image_ok, dtype=np.float32)),
        torch.from_numpy(np.asarray(features.text_ok, dtype=np.float32)),
    )


@torch.no_grad()
def encode_items(module: ItemTower, features: FeatureRows, *, batch_size: int = 4096) -> NDArray[np.float32]:
    """Run ``module`` in eval mode over all rows of ``features``; returns ``(n, item_dim)`` float32."""
    was_training = module.training
    module.eval()
    img, txt, iok, tok = _tensors(features)
    outs = [
        module(
            img[s : s + batch_size], txt[s : s + batch_size], iok[s : s + batch_size], tok[s : s + batch_size]
        )
        for s in range(0, img.shape[0], batch_size)
    ]
    module.train(was_training)
    if not outs:
        return np.zeros((0, module.item_dim), dtype=np.float32)
    return torch.cat(outs).numpy().astype(np.float32)


def alignment_loss(z_image: torch.Tensor, z_text: torch.Tensor, temperature: float) -> torch.Tensor:
    """Multimodal alignment loss of the KDD'24 paper (Eq. 2) for C = 2 modalities.

    For each item j of the batch: ``-log( exp(s(z_j^img, z_j^txt)) / Z_j )`` with
    ``Z_j = sum_{j'} sum_{c, c'} exp(s(z_j^c, z_j'^c'))`` excluding the trivial self-pair
    ``(j, c) == (j', c')``; ``s`` is cosine similarity / temperature. Averaged over the batch.

    Parameters
    ----------
    z_image, z_text
        ``(B, d)`` modality embeddings of the same B items (all with both modalities present).
    """
    b = z_image.shape[0]
    z = F.normalize(torch.cat([z_image, z_text], dim=0), dim=1)  # (2B, d): rows 0..B-1 image, B..2B-1 text
    sim = z @ z.T / temperature
    sim = sim - torch.eye(2 * b, device=sim.device, dtype=sim.dtype) * _MASK  # drop (j,c)==(j',c')
    idx = torch.arange(b, device=sim.device)
    # Z_j sums over both of item j's modality rows c and all columns (j', c').
    log_z = torch.logsumexp(torch.cat([sim[idx], sim[idx + b]], dim=1), dim=1)
    positive = sim[idx, idx + b]
    return (log_z - positive).mean()


def rating_ranking_loss(
    user_vecs: torch.Tensor,
    item_vecs: torch.Tensor,
    *,
    item_log_prior: torch.Tensor | None = None,
) -> torch.Tensor:
    """Two-sided in-batch softmax rating-ranking loss (KDD'24 Eq. 1).

    Parameters
    ----------
    user_vecs, item_vecs
        ``(B, D)``: row b is a (user, liked item) pair; the other rows are the negatives.
    item_log_prior
        ``(B,)`` optional log-popularity of each item, subtracted from the user-side logits
        (sampled-softmax logQ correction).
    """
    logits = user_vecs @ item_vecs.T  # (B users, B items)
    target = torch.arange(logits.shape[0], device=logits.device)
    user_side = logits if item_log_prior is None else logits - item_log_prior.unsqueeze(0)
    return F.cross_entropy(user_side, target) + F.cross_entropy(logits.T, target)


def full_rating_ranking_loss(
    user_vecs_all: torch.Tensor,
    item_vecs_all: torch.Tensor,
    user_idx: torch.Tensor,
    item_idx: torch.Tensor,
) -> torch.Tensor:
    """Two-sided softmax rating-ranking loss with all training items / all users as negatives.

    ``-log softmax_j'(u_i . v_j') [j] - log softmax_i'(u_i' . v_j) [i]`` for each positive pair
    ``(user_idx[b], item_idx[b])``.
    """
    u = user_vecs_all[user_idx]
    v = item_vecs_all[item_idx]
    user_side = F.cross_entropy(u @ item_vecs_all.T, item_idx)
    item_side = F.cross_entropy(v @ user_vecs_all.T, user_idx)
    return user_side + item_side


def sampled_rating_ranking_loss(
    user_vecs_all: torch.Tensor,
    item_vecs: torch.Tensor,
    user_idx: torch.Tensor,
    pos_rows: torch.Tensor,
    neg_rows: torch.Tensor,
) -> torch.Tensor:
    """Two-sided softmax loss with uniformly sampled item negatives (shared by the batch).

    User side: softmax over the positive and ``M`` uniformly sampled items (uniform sampling needs no
    logQ correction, so the popularity prior is kept; accidental hits are masked). Item side:
    softmax over all users.

    Parameters
    ----------
    user_vecs_all
        ``(U, D)`` all user vectors.
    item_vecs
        ``(R, D)`` vectors of the items referenced by ``pos_rows`` and ``neg_rows``.
    user_idx, pos_rows
        ``(B,)`` the positive pairs (user row, row of ``item_vecs``).
    neg_rows
        ``(M,)`` rows of ``item_vecs`` used as negatives.
    """
    u = user_vecs_all[user_idx]
    v = item_vecs[pos_rows]
    pos = (u * v).sum(dim=1, keepdim=True)
    negs = u @ item_vecs[neg_rows].T
    negs = negs - (neg_rows.unsqueeze(0) == pos_rows.unsqueeze(1)).float() * _MASK
    logits = torch.cat([pos, negs], dim=1)
    target = torch.zeros(logits.shape[0], dtype=torch.long, device=logits.device)
    return F.cross_entropy(logits, target) + F.cross_entropy(v @ user_vecs_all.T, user_idx)


def _modality_dropout(
    image_ok: torch.Tensor, text_ok: torch.Tensor, p: float, gen: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor]:
    """Hide one modality of an item that has both, with probability ``p`` (which one: a fair coin)."""
    if p <= 0.0:
        return image_ok, text_ok
    both = (image_ok > 0) & (text_ok > 0)
    drop = (torch.rand(image_ok.shape, generator=gen) < p) & both
    coin = torch.rand(image_ok.shape, generator=gen) < 0.5
    new_image = torch.where(drop & coin, torch.zeros_like(image_ok), image_ok)
    new_text = torch.where(drop & ~coin, torch.zeros_like(text_ok), text_ok)
    return new_image, new_text


def _step_loss(
    module: ItemTower,
    users: nn.Embedding,
    cfg: ItemTowerConfig,
    gen: torch.Generator,
    img: torch.Tensor,
    txt: torch.Tensor,
    iok: torch.Tensor,
    tok: torch.Tensor,
    modality_dropout: float,
    use_both: bool,
    u_idx: torch.Tensor,
    j_idx: torch.Tensor,
    log_prior: torch.Tensor,
    n_items: int,
) -> torch.Tensor:
    """Loss of one training step: rating-ranking loss (by ``cfg.negatives``) + λ · alignment."""
    if cfg.negatives == "full":
        d_iok, d_tok = _modality_dropout(iok, tok, modality_dropout, gen)
        z_i, z_t, i_on, t_on = module.modality_embeddings(img, txt, d_iok, d_tok, gen)
        item_vecs = module.fuse(z_i, z_t, i_on, t_on)
        loss = full_rating_ranking_loss(users.weight, item_vecs, u_idx, j_idx)
        align_rows = torch.unique(j_idx)
    elif cfg.negatives == "sampled":
        neg = torch.randint(0, n_items, (cfg.num_negatives,), generator=gen)
        rows_needed, inverse = torch.unique(torch.cat([j_idx, neg]), return_inverse=True)
        d_iok, d_tok = _modality_dropout(iok[rows_needed], tok[rows_needed], modality_dropout, gen)
        z_i, z_t, i_on, t_on = module.modality_embeddings(
            img[rows_needed], txt[rows_needed], d_iok, d_tok, gen
        )
        item_vecs = module.fuse(z_i, z_t, i_on, t_on)
        loss = sampled_rating_ranking_loss(
            users.weight, item_vecs, u_idx, inverse[: j_idx.shape[0]], inverse[j_idx.shape[0] :]
        )
        align_rows = torch.unique(inverse[: j_idx.shape[0]])
    else:
        d_iok, d_tok = _modality_dropout(iok[j_idx], tok[j_idx], modality_dropout, gen)
        z_i, z_t, i_on, t_on = module.modality_embeddings(img[j_idx], txt[j_idx], d_iok, d_tok, gen)
        item_vecs = module.fuse(z_i, z_t, i_on, t_on)
        prior = log_prior[j_idx] if cfg.logq_correction else None
        loss = rating_ranking_loss(users(u_idx), item_vecs, item_log_prior=prior)
        align_rows = torch.arange(j_idx.shape[0])
    if use_both and cfg.alignment_weight > 0:
        both = (i_on[align_rows] > 0) & (t_on[align_rows] > 0)
        rows = align_rows[both]
        if rows.numel() >= 2:
            loss = loss + cfg.alignment_weight * alignment_loss(
                z_i[rows], z_t[rows], cfg.alignment_temperature
            )
    return loss


ValidationFn = Callable[["TrainedItemTower"], float]


def train_item_tower(
    features: FeatureRows,
    interactions: pd.DataFrame,
    config: ItemTowerConfig | None = None,
    seed: int = 0,
    *,
    validate: ValidationFn | None = None,
    progress: bool = False,
    short_text: FeatureRows | None = None,
) -> TrainedItemTower:
    """Train the item tower and user embeddings on warm items' positive interactions.

    Parameters
    ----------
    features
        Frozen features of the TRAINING items (``item_ids``, ``image``, ``text``, ``image_ok``,
        ``text_ok``), e.g. models.features.FeatureTable.
    interactions
        Positive (user, item) pairs: columns ``user_id`` and ``item_id``; rows whose item is not in
        ``features`` are ignored.
    config
        Hyperparameters (:class:`ItemTowerConfig`).
    seed
        Seeds the tower's own ``torch.Generator`` (initialisation, shuffling, dropout masks).
    validate
        Called after every epoch with the current model; returns a score to maximise (e.g. NDCG@10
        on cold-validation items). The best epoch is kept; training stops after ``patience`` epochs
        without improvement. Without it, training runs ``max_epochs``.
    short_text
        Optional features of the same items with their text cut to the title (only ``text`` and
        ``text_ok`` are used, matched by item id); with ``config.short_text_rate`` > 0 they replace
        the full text of random items in stage 2 of the ``residual`` fusion.

    Raises
    ------
    InvalidInputError
        No positive pair matches a feature row, or ``interactions`` lacks user_id/item_id.
    ModalityError
        The configured modalities are absent from every training item.
    """
    cfg = config or ItemTowerConfig()
    for column in ("user_id", "item_id"):
        if column not in interactions.columns:
            raise InvalidInputError("interactions.columns", list(interactions.columns), f"missing {column!r}")
    row_of = {str(i): r for r, i in enumerate(features.item_ids)}
    items = interactions["item_id"].astype(str).map(row_of)
    pairs = interactions.assign(_row=items).dropna(subset=["_row"])
    if pairs.empty:
        raise InvalidInputError("interactions", len(interactions), "no positive pair on a training item")
    image_ok_np = np.asarray(features.image_ok, dtype=bool)
    text_ok_np = np.asarray(features.text_ok, dtype=bool)
    usable = (image_ok_np if cfg.modalities != "text" else 0) | (
        text_ok_np if cfg.modalities != "image" else 0
    )
    if not np.any(usable):
        raise ModalityError("config.modalities", cfg.modalities, "no training item has that modality")

    user_ids = sorted(pairs["user_id"].astype(str).unique())
    user_row = {u: i for i, u in enumerate(user_ids)}
    user_idx_all = torch.tensor(pairs["user_id"].astype(str).map(user_row).to_numpy(), dtype=torch.long)
    item_idx_all = torch.tensor(pairs["_row"].to_numpy(dtype=np.int64), dtype=torch.long)
    n_items = len(features.item_ids)
    counts = np.bincount(item_idx_all.numpy(), minlength=n_items).astype(np.float64)
    log_prior = torch.tensor(np.log((counts + 1.0) / (counts.sum() + n_items)), dtype=torch.float32)

    gen = torch.Generator().manual_seed(int(seed))
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(int(seed))  # module init draws from the default generator inside this scope only
        module = ItemTower(features.image.shape[1], features.text.shape[1], cfg)
        users = nn.Embedding(len(user_ids), cfg.item_dim)
    nn.init.normal_(users.weight, std=cfg.user_init_std, generator=gen)
    module.fit_centering(
        np.asarray(features.image, dtype=np.float32),
        np.asarray(features.text, dtype=np.float32),
        image_ok_np,
        text_ok_np,
    )
    img, txt, iok, tok = _tensors(features)
    short_txt, short_tok = txt, tok
    if short_text is not None and cfg.short_text_rate > 0:
        short_row = {str(i): r for r, i in enumerate(short_text.item_ids)}
        missing = [str(i) for i in features.item_ids if str(i) not in short_row]
        if missing:
            raise InvalidInputError("short_text", missing[:3], "no short-text features for these items")
        rows = np.array([short_row[str(i)] for i in features.item_ids], dtype=np.int64)
        short_txt = torch.from_numpy(
            np.ascontiguousarray(np.asarray(short_text.text)[rows], dtype=np.float32)
        )
        short_tok = torch.from_numpy(np.asarray(short_text.text_ok, dtype=np.float32)[rows])
    n_pairs = int(user_idx_all.shape[0])
    steps_per_epoch = max(1, math.ceil(n_pairs / cfg.batch_size))
    history: list[dict[str, float]] = []

    def snapshot() -> TrainedItemTower:
        module.eval()
        return TrainedItemTower(
            module=module,
            user_ids=list(user_ids),
            user_embeddings=users.weight.detach().numpy().astype(np.float32).copy(),
            metrics={},
        )

    def run_stage(
        params: list[nn.Parameter],
        *,
        stage: int,
        with_image: bool,
        both: bool,
        validate_first: bool,
        short_rate: float = 0.0,
    ) -> tuple[float, float, int, int]:
        """Train ``params`` (the others stay fixed).

        Returns (best validation score, last epoch's loss, epochs run, best epoch; 0 = the state before
        this stage).
        """
        opt = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
        image_mask = iok if with_image else torch.zeros_like(iok)
        md = cfg.modality_dropout if both else 0.0
        best_score = -math.inf
        best_state: tuple[dict[str, torch.Tensor], torch.Tensor] | None = None
        bad_epochs = 0
        best_epoch = 0
        epoch_loss = math.nan
        epochs = 0

        def checkpoint(score: float) -> None:
            nonlocal best_score, best_state, bad_epochs, best_epoch
            if score > best_score:
                best_score = score
                best_epoch = epochs
                best_state = (copy.deepcopy(module.state_dict()), users.weight.detach().clone())
                bad_epochs = 0
            else:
                bad_epochs += 1

        if validate is not None and validate_first:
            checkpoint(float(validate(snapshot())))
            history.append({"stage": float(stage), "epoch": 0.0, "loss": math.nan, "val_score": best_score})
        for epoch in range(cfg.max_epochs):
            epochs = epoch + 1
            module.train()
            perm = torch.randperm(n_pairs, generator=gen)
            total = 0.0
            for step in range(steps_per_epoch):
                batch = perm[step * cfg.batch_size : (step + 1) * cfg.batch_size]
                if batch.numel() < 2:
                    continue
                step_txt, step_tok = txt, tok
                if short_rate > 0:
                    swap = torch.rand(tok.shape, generator=gen) < short_rate
                    step_txt = torch.where(swap.unsqueeze(1), short_txt, txt)
                    step_tok = torch.where(swap, short_tok, tok)
                loss = _step_loss(
                    module,
                    users,
                    cfg,
                    gen,
                    img,
                    step_txt,
                    image_mask,
                    step_tok,
                    md,
                    both,
                    user_idx_all[batch],
                    item_idx_all[batch],
                    log_prior,
                    n_items,
                )
                opt.zero_grad()
                loss.backward()  # type: ignore[no-untyped-call]
                opt.step()
                total += float(loss.detach())
            epoch_loss = total / steps_per_epoch
            record: dict[str, float] = {"stage": float(stage), "epoch": float(epoch + 1), "loss": epoch_loss}
            if validate is not None:
                score = float(validate(snapshot()))
                checkpoint(score)
                record["val_score"] = score
            history.append(record)
            if progress:
                log.info("item tower stage %d epoch %d: %s", stage, epoch + 1, record)
            if validate is not None and bad_epochs >= cfg.patience:
                break
        if best_state is not None:
            module.load_state_dict(best_state[0])
            with torch.no_grad():
                users.weight.copy_(best_state[1])
        return best_score, epoch_loss, epochs, best_epoch if validate is not None else epochs

    use_both = cfg.modalities == "image_text"
    image_epoch = -1
    if use_both and cfg.fusion == "residual":
        # Stage 1: the text model on its own (text projection, MLP, users). Stage 2: users and the text
        # path frozen; the image path (projection, gate, correction, image-only head) learns what the
        # image adds. With validation, stage 2 starts by scoring the text model, so an image that does
        # not help on cold-validation items is left out (its correction is zero at that point).
        text_params = [*module.text_proj.parameters(), *module.mlp.parameters(), *users.parameters()]
        best_score, epoch_loss, epochs_run, _ = run_stage(
            text_params, stage=1, with_image=False, both=False, validate_first=False
        )
        image_params = [
            *module.image_proj.parameters(),
            *module.gate.parameters(),
            *module.image_residual.parameters(),
            *module.image_alone.parameters(),
        ]
        best_score, epoch_loss, more, image_epoch = run_stage(
            image_params,
            stage=2,
            with_image=True,
            both=True,
            validate_first=True,
            short_rate=cfg.short_text_rate if short_text is not None else 0.0,
        )
        epochs_run += more
    else:
        params = [*module.parameters(), *users.parameters()]
        best_score, epoch_loss, epochs_run, _ = run_stage(
            params, stage=1, with_image=True, both=use_both, validate_first=False
        )
    result = snapshot()
    result.metrics = {
        "final_loss": float(epoch_loss),
        "first_loss": float(next((h["loss"] for h in history if not math.isnan(h["loss"])), math.nan)),
        "epochs": float(epochs_run),
        "best_val_score": float(best_score) if validate is not None else math.nan,
        "pairs": float(n_pairs),
        # residual fusion: the kept epoch of the image stage (0 = the image was left out; -1 = n/a)
        "image_stage_epoch": float(image_epoch),
        "users": float(len(user_ids)),
        "items": float(n_items),
    }
    result.history = history
    return result
