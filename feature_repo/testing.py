"""Synthetic catalogs for tests and benchmarks: random stored items (mechanics and speed only, never
quality; quality is measured on real catalogs)."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime

import numpy as np

from feature_repo.records import ItemStatus, StoredItem


def random_items(
    n: int,
    *,
    seed: int | np.random.Generator = 0,
    prefix: str = "item",
    dim: int = 8,
    content_dim: int = 16,
    item_scale: float = 1.0,
    listed_at: datetime | Sequence[datetime] | None = None,
    categories: int = 0,
    sellers: int = 0,
    seller_id: str = "",
    statuses: Sequence[ItemStatus] = ("cold",),
    encoder_version: str = "synthetic",
) -> list[StoredItem]:
    """``n`` stored items ``{prefix}-i{k}`` with random vectors, both modalities.

    Parameters
    ----------
    seed
        Seed, or the generator to draw from (its state advances).
    dim, content_dim
        ``item_vector`` is ``(dim,)`` standard normal times ``item_scale``; ``content_vector`` is
        ``(content_dim,)`` unit norm; both float32.
    listed_at
        One listing time for all (also ``updated_at``), one per item, or ``None``: now (UTC).
    categories, sellers
        Item ``k`` is in category ``cat-{k % categories}`` and sold by ``s{k % sellers}`` when these
        are > 0 (else category ``""`` and seller ``seller_id``).
    statuses
        Item ``k`` has status ``statuses[k % len(statuses)]``.
    """
    rng = seed if isinstance(seed, np.random.Generator) else np.random.default_rng(seed)
    if listed_at is None or isinstance(listed_at, datetime):
        times = [listed_at or datetime.now(UTC)] * n
    else:
        times = list(listed_at)
    out = []
    for k in range(n):
        c = rng.standard_normal(content_dim).astype(np.float32)
        out.append(
            StoredItem(
                item_id=f"{prefix}-i{k}",
                content_vector=c / np.linalg.norm(c),
                item_vector=(rng.standard_normal(dim) * item_scale).astype(np.float32),
                image_ok=True,
                text_ok=True,
                encoder_version=encoder_version,
                listed_at=times[k],
                updated_at=times[k],
                category=f"cat-{k % categories}" if categories else "",
                seller_id=f"s{k % sellers}" if sellers else seller_id,
                status=statuses[k % len(statuses)],
            )
        )
    return out
