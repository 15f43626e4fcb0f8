"""Training of the item tower and the user embeddings beside it (see :mod:`models.item_tower` for
the architecture and the two training stages; losses in :mod:`models.tower_losses`)."""

from __future__ import annotations

import copy
import logging
import math
from collections.abc import Callable

import numpy as np
import pandas as pd
import torch
from torch import nn

from coldstart.errors import InvalidInputError, ModalityError
from models.item_tower import FeatureRows, ItemTower, ItemTowerConfig, TrainedItemTower, _tensors
from models.tower_losses import (
    alignment_loss,
    full_rating_ranking_loss,
    rating_ranking_loss,
    sampled_rating_ranking_loss,
)

log = logging.getLogger(__name__)


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
