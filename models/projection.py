"""Training of the projection heads into the shared image/text space (CLIP-style, on frozen features).

Loss per batch of items having both modalities, with unit vectors ``a_j = head_img(image_j)`` and
``b_j = head_txt(text_j)`` and a learnable temperature ``t = exp(-logit_scale)``:

- the symmetric CLIP loss ``(CE(a b^T / t, I) + CE(b a^T / t, I)) / 2``;
- modality dropout: each item's content vector ``c_j = normalize(a_j + b_j)`` must also be retrieved
  from one of its single-modality views (image or text, a coin per item), with the same symmetric loss,
  weighted by ``modality_dropout``. This keeps an image-only or text-only item close to where its full
  vector would be, so degraded vectors stay in the same space.

Heads only see cached features (:mod:`models.features`), so training takes seconds to minutes on CPU.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F
from pydantic import BaseModel, ConfigDict, Field
from tqdm import tqdm

from coldstart.errors import InvalidInputError
from models.feature_table import FeatureTable
from models.towers import ProjectionHead, Towers

log = logging.getLogger(__name__)


class ProjectionTrainConfig(BaseModel):
    """Hyperparameters of projection-head training.

    Parameters
    ----------
    epochs
        Maximum passes over the paired items.
    batch_size
        Items per contrastive batch (in-batch negatives).
    lr, weight_decay
        AdamW.
    init_temperature
        Initial softmax temperature (CLIP: 0.07); learned, clamped to ``>= 0.01``.
    modality_dropout
        Weight of the degraded-view loss (0 disables it).
    val_fraction
        Share of paired items held out for early stopping and the retrieval metrics.
    patience
        Epochs without validation improvement before stopping.
    """

    model_config = ConfigDict(extra="forbid")

    epochs: int = Field(40, ge=1)
    batch_size: int = Field(256, ge=2)
    lr: float = Field(1e-3, gt=0.0)
    weight_decay: float = Field(1e-4, ge=0.0)
    init_temperature: float = Field(0.07, gt=0.0)
    modality_dropout: float = Field(0.5, ge=0.0)
    val_fraction: float = Field(0.1, ge=0.0, lt=1.0)
    patience: int = Field(5, ge=1)


@dataclass
class ProjectionResult:
    """Metrics of head training (validation retrieval recall, losses, learned temperature)."""

    metrics: dict[str, float]
    history: list[dict[str, float]] = field(default_factory=list)


def _clip_loss(a: torch.Tensor, b: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    logits = scale * a @ b.T
    target = torch.arange(a.shape[0])
    return (F.cross_entropy(logits, target) + F.cross_entropy(logits.T, target)) / 2


def _recall_at(a: torch.Tensor, b: torch.Tensor, ks: tuple[int, ...] = (1, 10)) -> dict[str, float]:
    sims = a @ b.T
    ranks = (sims > sims.diagonal().unsqueeze(1)).sum(dim=1)
    return {f"recall@{k}": float((ranks < k).float().mean()) for k in ks}


def train_projection(
    towers: Towers,
    features: FeatureTable,
    config: ProjectionTrainConfig | None = None,
    seed: int = 0,
    progress: bool = True,
) -> ProjectionResult:
    """Fit ``towers.image.head`` and ``towers.text.head`` on the items of ``features`` having both modalities.

    The heads' centring vectors are set to the mean feature of the (training) items first.

    Returns
    -------
    ProjectionResult
        ``val/image_to_text_recall@1`` etc., ``loss``, ``temperature``, ``epochs``.

    Raises
    ------
    InvalidInputError
        Fewer than 4 items have both an image and a text.
    """
    cfg = config or ProjectionTrainConfig()
    img_head, txt_head = towers.image.head, towers.text.head
    if not isinstance(img_head, ProjectionHead) or not isinstance(txt_head, ProjectionHead):
        return ProjectionResult(metrics={"projection/trained": 0.0})
    both = np.flatnonzero(features.image_ok & features.text_ok)
    if both.size < 4:
        raise InvalidInputError("features", int(both.size), "need >= 4 items with both an image and a text")
    gen = torch.Generator().manual_seed(seed)
    img_all = torch.from_numpy(np.ascontiguousarray(features.image, dtype=np.float32))
    txt_all = torch.from_numpy(np.ascontiguousarray(features.text, dtype=np.float32))
    perm = both[torch.randperm(both.size, generator=gen).numpy()]
    n_val = round(cfg.val_fraction * perm.size)
    n_val = min(n_val, perm.size - 2)
    val_rows, train_rows = perm[:n_val], perm[n_val:]
    img_head.set_center(img_all[features.image_ok].mean(dim=0))
    txt_head.set_center(txt_all[features.text_ok].mean(dim=0))

    logit_scale = torch.nn.Parameter(torch.tensor(math.log(1.0 / cfg.init_temperature)))
    params = [*img_head.parameters(), *txt_head.parameters(), logit_scale]
    opt = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    train_idx = torch.from_numpy(train_rows)
    history: list[dict[str, float]] = []
    best: tuple[float, dict[str, torch.Tensor], dict[str, torch.Tensor], float] | None = None
    bad = 0
    bar = tqdm(range(cfg.epochs), desc="projection", unit="epoch", disable=not progress)
    for epoch in bar:
        img_head.train()
        txt_head.train()
        order = train_idx[torch.randperm(train_idx.numel(), generator=gen)]
        total, steps = 0.0, 0
        for s in range(0, order.numel(), cfg.batch_size):
            rows = order[s : s + cfg.batch_size]
            if rows.numel() < 2:
                continue
            a = img_head(img_all[rows])
            b = txt_head(txt_all[rows])
            scale = logit_scale.exp().clamp(max=100.0)
            loss = _clip_loss(a, b, scale)
            if cfg.modality_dropout > 0:
                c = F.normalize(a + b, dim=-1)
                coin = (torch.rand(rows.numel(), generator=gen) < 0.5).unsqueeze(1)
                view = torch.where(coin, a, b)
                loss = loss + cfg.modality_dropout * _clip_loss(c, view, scale)
            opt.zero_grad()
            loss.backward()  # type: ignore[no-untyped-call]
            opt.step()
            total += float(loss.detach())
            steps += 1
        entry = {"epoch": float(epoch + 1), "loss": total / max(steps, 1)}
        if val_rows.size >= 2:
            vm = _evaluate(towers, img_all, txt_all, val_rows, logit_scale)
            entry.update(vm)
            score = -vm["val/loss"]
        else:
            score = -entry["loss"]
        history.append(entry)
        bar.set_postfix(loss=f"{entry['loss']:.3f}", val=f"{entry.get('val/loss', float('nan')):.3f}")
        if best is None or score > best[0]:
            best = (score, _copy(img_head), _copy(txt_head), float(logit_scale.detach()))
            bad = 0
        else:
            bad += 1
            if bad >= cfg.patience:
                break
    assert best is not None
    img_head.load_state_dict(best[1])
    txt_head.load_state_dict(best[2])
    img_head.eval()
    txt_head.eval()
    final = _evaluate(towers, img_all, txt_all, val_rows, torch.tensor(best[3])) if val_rows.size >= 2 else {}
    metrics = {
        **{f"projection/{k}": v for k, v in final.items()},
        "projection/temperature": float(math.exp(-best[3])),
        "projection/epochs": float(len(history)),
        "projection/train_pairs": float(train_rows.size),
        "projection/trained": 1.0,
    }
    return ProjectionResult(metrics=metrics, history=history)


def _copy(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


@torch.no_grad()
def _evaluate(
    towers: Towers, img_all: torch.Tensor, txt_all: torch.Tensor, rows: np.ndarray, logit_scale: torch.Tensor
) -> dict[str, float]:
    towers.image.head.eval()
    towers.text.head.eval()
    idx = torch.from_numpy(rows)
    a = towers.image.head(img_all[idx])
    b = towers.text.head(txt_all[idx])
    scale = logit_scale.exp().clamp(max=100.0)
    out = {"val/loss": float(_clip_loss(a, b, scale))}
    out.update({f"val/image_to_text_{k}": v for k, v in _recall_at(a, b).items()})
    out.update({f"val/text_to_image_{k}": v for k, v in _recall_at(b, a).items()})
    c = F.normalize(a + b, dim=-1)
    out["val/image_only_to_full_cos"] = float((a * c).sum(dim=1).mean())
    out["val/text_only_to_full_cos"] = float((b * c).sum(dim=1).mean())
    out["val/chance_recall@10"] = min(1.0, 10.0 / max(1, len(rows)))
    return out
