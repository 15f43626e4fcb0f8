"""Synthetic catalogs for tests and benchmarks: random stored items (mechanics and speed only, never
quality; quality is measured on real catalogs)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import UTC, datetime

import numpy as np

from feature_repo.records import ItemStatus, StoredItem


def random_items(
    n: int,
    *,
    seed: int | np.random.Generator = 0,
    prefix: str = "item",
    ids: Callable[[int], str] | None = None,
    dim: int = 8,
    content_dim: int = 16,
    item_scale: float = 1.0,
    listed_at: datetime | Sequence[datetime] | None = None,
    categories: int | Sequence[str] = 0,
    sellers: int = 0,
    seller_id: str = "",
    statuses: Sequence[ItemStatus] = ("cold",),
    encoder_version: str = "synthetic",
) -> list[StoredItem]:
    """``n`` stored items with random vectors, both modalities.

    Parameters
    ----------
    prefix, ids
        Item ``k`` is ``ids(k)``, by default ``{prefix}-i{k}``.
    seed
        Seed, or the generator to draw from (its state advances).
    dim, content_dim
        ``item_vector`` is ``(dim,)`` standard normal times ``item_scale``; ``content_vector`` is
        ``(content_dim,)`` unit norm; both float32.
    listed_at
        One listing time for all (also ``updated_at``), one per item, or ``None``: now (UTC).
    categories
        Names to cycle through (item ``k`` gets ``categories[k % len]``), or how many: ``cat-{k % n}``;
        ``0`` or empty: category ``""``.
    sellers
        Item ``k`` is sold by ``seller-{k % sellers}`` when > 0, else by ``seller_id``.
    statuses
        Item ``k`` has status ``statuses[k % len(statuses)]``.
    """
    rng = seed if isinstance(seed, np.random.Generator) else np.random.default_rng(seed)
    if listed_at is None or isinstance(listed_at, datetime):
        times = [listed_at or datetime.now(UTC)] * n
    else:
        times = list(listed_at)
    names = [f"cat-{j}" for j in range(categories)] if isinstance(categories, int) else list(categories)
    out = []
    for k in range(n):
        c = rng.standard_normal(content_dim).astype(np.float32)
        out.append(
            StoredItem(
                item_id=ids(k) if ids is not None else f"{prefix}-i{k}",
                content_vector=c / np.linalg.norm(c),
                item_vector=(rng.standard_normal(dim) * item_scale).astype(np.float32),
                image_ok=True,
                text_ok=True,
                encoder_version=encoder_version,
                listed_at=times[k],
                updated_at=times[k],
                category=names[k % len(names)] if names else "",
                seller_id=f"seller-{k % sellers}" if sellers else seller_id,
                status=statuses[k % len(statuses)],
            )
        )
    return out
