"""The cold-pool index: in-process nearest-neighbour search over the cold items (see :mod:`.base`)."""

from __future__ import annotations

from exploration.pool.base import (
    POOL_STATUSES,
    CandidatePool,
    PoolCandidates,
    PoolEntry,
    PoolFilter,
    PoolHit,
    PoolSpace,
    entry_from_item,
)
from exploration.pool.config import ExactPoolConfig, HnswPoolConfig, PoolConfig
from exploration.pool.exact import ExactPool
from exploration.pool.hnsw import HnswPool
from exploration.pool.pools import ItemPools


def build_pool(config: PoolConfig | None = None) -> CandidatePool:
    """Build the pool a config selects (default: an empty :class:`ExactPool`)."""
    cfg = config or ExactPoolConfig()
    if cfg.type == "exact":
        return ExactPool(dim=cfg.dim, initial_capacity=cfg.initial_capacity)
    if cfg.type == "hnsw":
        return HnswPool(**cfg.model_dump(exclude={"type", "space"}))
    raise AssertionError(f"unhandled pool type {cfg.type!r}")  # pragma: no cover - exhaustive Literal


__all__ = [
    "POOL_STATUSES",
    "CandidatePool",
    "ExactPool",
    "ExactPoolConfig",
    "HnswPool",
    "HnswPoolConfig",
    "ItemPools",
    "PoolCandidates",
    "PoolConfig",
    "PoolEntry",
    "PoolFilter",
    "PoolHit",
    "PoolSpace",
    "build_pool",
    "entry_from_item",
]
