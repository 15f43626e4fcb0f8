"""The item tower's losses (the KDD'24 cold-start paper): the two-sided softmax rating-ranking loss
(Eq. 1) with in-batch, full or sampled negatives, and the multimodal alignment loss (Eq. 2-3)."""

from __future__ import annotations

import torch
from torch.nn import functional as F

_MASK = 1e4  # added to a logit to take it out of a softmax


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
