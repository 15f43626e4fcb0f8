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

Training (:func:`models.tower_training.train_item_tower`; losses in :mod:`models.tower_losses`): users
get learned embeddings; the loss is the paper's two-sided softmax rating-ranking loss (Eq. 1) plus
``alignment_weight`` (λ) times its multimodal alignment loss (Eq. 2-3). Negatives are, by config, the
paper's in-batch negatives (optionally with log-popularity correction), the full set of training
items, or uniformly sampled training items (both keep the popularity prior that in-batch negatives
discard). Modality dropout (DropoutNet-style) randomly hides one modality of training items so
text-only and image-only items stay in the same space. With the ``residual`` fusion, training has two
stages: (1) the text model alone (text path and user embeddings; exactly the ``modalities="text"``
model of the same seed), (2) with users and the text path frozen, the image path (projection, gate,
correction, image-only head) learns what the image adds, optionally with some items shown with their
title only (``short_text_rate``). The cold-validation score, when given, drives early stopping in
each stage and scores the text model before stage 2, so an image path that does not help
cold-validation items is left out (measured on MovieLens posters: the image's frozen ImageNet
features add little beyond plots; see docs/results/cold_start.md).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Literal, Protocol

import numpy as np
import torch
from numpy.typing import NDArray
from pydantic import BaseModel, ConfigDict, Field
from torch import nn

from coldstart.errors import InvalidInputError

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
