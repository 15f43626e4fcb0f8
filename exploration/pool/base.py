"""The cold-pool index: in-process nearest-neighbour search over cold items' vectors.

Fed from the stream (``upsert`` as items are encoded, ``remove`` on graduation) and rebuilt from the
feature store at start-up. Feast 0.67's sqlite vector search is broken for a long-running service
and Redis has none, so this index is ours.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
from numpy.typing import NDArray


@dataclass(frozen=True)
class PoolEntry:
    """One cold item in the pool. ``vector`` is ``(dim,)`` float32 in the space the pool indexes."""

    item_id: str
    vector: NDArray[np.float32]
    category: str = ""
    seller_id: str = ""
    listed_at_s: float = 0.0
    attrs: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class PoolHit:
    """A search result: ``score`` is the inner product of the query with the item vector."""

    item_id: str
    score: float


@dataclass(frozen=True)
class PoolFilter:
    """Restrictions on a search (empty tuples mean no restriction)."""

    categories: tuple[str, ...] = ()
    sellers: tuple[str, ...] = ()
    exclude_item_ids: frozenset[str] = frozenset()


class CandidatePool(ABC):
    """Thread-safe nearest-neighbour index over the cold pool."""

    @abstractmethod
    def upsert(self, entries: Sequence[PoolEntry]) -> None:
        """Add or replace items (idempotent)."""

    @abstractmethod
    def remove(self, item_ids: Sequence[str]) -> None:
        """Remove items (graduation); unknown ids are ignored."""

    @abstractmethod
    def search(self, query: NDArray[np.float32], k: int, filters: PoolFilter | None = None) -> list[PoolHit]:
        """Top-``k`` items by inner product with ``query`` (shape ``(dim,)``), best first."""

    @abstractmethod
    def __len__(self) -> int:
        """Number of items in the pool."""
