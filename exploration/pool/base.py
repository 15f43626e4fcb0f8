"""The cold-pool index: in-process nearest-neighbour search over cold items' vectors.

Fed from the stream (``upsert`` as items are encoded, ``remove`` on graduation) and rebuilt from the
feature store at start-up. Feast 0.67's sqlite vector search is broken for a long-running service
and Redis has none, so this index is ours.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Literal

import numpy as np
from numpy.typing import NDArray

if TYPE_CHECKING:
    from feature_repo.base import FeatureStore
    from feature_repo.records import ItemStatus, StoredItem

#: Which vector a pool indexes: ``item`` = the item tower's ``item_vector`` (recommendation space,
#: compared with user vectors); ``content`` = ``content_vector`` (shared image/text space, search).
PoolSpace = Literal["item", "content"]
#: Statuses of the items that belong to the cold pool (graduated items leave it).
POOL_STATUSES: tuple[str, ...] = ("cold", "warming", "warm")


@dataclass(frozen=True, slots=True)
class PoolEntry:
    """One cold item in the pool. ``vector`` is ``(dim,)`` float32 in the space the pool indexes.

    Slotted: a million of them are held per replica, and a request reads ~100 at random (no
    per-instance dict: less memory, and one object to fetch per entry instead of two).
    """

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
class PoolCandidates:
    """A search's hits with their stored entries and vectors, best first: ``vectors[i]`` (float32) is
    ``entries[i]``'s indexed vector and ``scores[i]`` (float64) its inner product with the query.

    The slot service's form: an index reads entries and vectors by its own rows, where looking each
    hit up by id again costs cache misses in a dict of a million ids.
    """

    entries: list[PoolEntry]
    scores: NDArray[np.float64]
    vectors: NDArray[np.float32]

    @property
    def item_ids(self) -> list[str]:
        """The hits' ids, best first."""
        return [e.item_id for e in self.entries]


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

    def search_ids(
        self, query: NDArray[np.float32], k: int, filters: PoolFilter | None = None
    ) -> tuple[list[str], NDArray[np.float64]]:
        """:meth:`search` as ``(item_ids, scores)``, scores ``(len(item_ids),)`` float64, best first.

        The serving path's form (no :class:`PoolHit` per hit); implementations may override it.
        """
        hits = self.search(query, k, filters)
        return [h.item_id for h in hits], np.array([h.score for h in hits], dtype=np.float64)

    def search_candidates(
        self, query: NDArray[np.float32], k: int, filters: PoolFilter | None = None
    ) -> PoolCandidates:
        """:meth:`search` with each hit's entry and vector (:class:`PoolCandidates`).

        This default looks the hits up by id (:meth:`get`, :meth:`vectors`) and leaves out hits it
        cannot find (removed meanwhile); implementations read them by row instead.
        """
        ids, scores = self.search_ids(query, k, filters)
        found = [(n, e) for n, e in enumerate(self.get(i) for i in ids) if e is not None]
        entries = [e for _, e in found]
        vectors = self.vectors([e.item_id for e in entries])
        if vectors is None:
            dim = int(query.shape[0])
            vectors = np.asarray([e.vector for e in entries], dtype=np.float32).reshape(len(entries), dim)
        return PoolCandidates(entries, scores[[n for n, _ in found]], vectors)

    def get(self, item_id: str) -> PoolEntry | None:
        """The stored entry of ``item_id``, or ``None``; this default keeps no entries (``None``)."""
        return None

    def vectors(self, item_ids: Sequence[str]) -> NDArray[np.float32] | None:
        """``(len(item_ids), dim)`` float32: the indexed vectors of ``item_ids``, in that order (a copy).

        ``None`` when an id is not in the pool or the implementation cannot hand its vectors out
        (the caller then uses its own copies); this default always returns ``None``.
        """
        return None

    @abstractmethod
    def __len__(self) -> int:
        """Number of items in the pool."""

    def replace_all(self, entries: Sequence[PoolEntry]) -> None:
        """Replace the pool's content with ``entries``.

        This default only upserts (correct on an empty pool, e.g. at start-up); implementations
        that can enumerate their items override it with an atomic swap.
        """
        self.upsert(entries)

    def save(self, directory: Path) -> None:
        """Write what this index needs, beyond a snapshot's rows, to come back without rebuilding
        (:mod:`exploration.pool.snapshot`); this default writes nothing."""
        directory.mkdir(parents=True, exist_ok=True)

    def load(self, directory: Path, entries: Sequence[PoolEntry], vectors: NDArray[np.float32]) -> None:
        """Replace the content with a snapshot's rows (``vectors[i]`` is ``entries[i]``'s vector) and
        what :meth:`save` wrote to ``directory``; this default re-indexes the entries."""
        self.replace_all(entries)

    def rebuild_from_store(
        self,
        store: FeatureStore,
        space: PoolSpace = "item",
        statuses: Sequence[ItemStatus] | Sequence[str] = POOL_STATUSES,
    ) -> int:
        """Load every stored item whose status is in ``statuses`` (start-up); returns the pool size.

        Parameters
        ----------
        store
            The feature store; :meth:`FeatureStore.iter_items` is read once.
        space
            Which vector to index (see :data:`PoolSpace`).
        """
        keep = set(statuses)
        entries = [entry_from_item(it, space) for it in store.iter_items() if it.status in keep]
        self.replace_all(entries)
        return len(self)


def entry_from_item(item: StoredItem, space: PoolSpace = "item") -> PoolEntry:
    """The pool entry of a stored item in ``space`` (``attrs`` carries status and encoder version)."""
    vector = item.item_vector if space == "item" else item.content_vector
    return PoolEntry(
        item_id=item.item_id,
        vector=np.asarray(vector, dtype=np.float32),
        category=item.category,
        seller_id=item.seller_id,
        listed_at_s=item.listed_at.timestamp(),
        attrs={"status": item.status, "encoder_version": item.encoder_version},
    )
