"""Both spaces at once: the recommendation-space pool and the content-space (search) pool."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from exploration.pool.base import POOL_STATUSES, CandidatePool, PoolSpace, entry_from_item
from exploration.pool.exact import ExactPool

if TYPE_CHECKING:
    from feature_repo.base import FeatureStore
    from feature_repo.records import StoredItem


class ItemPools:
    """Keeps an ``item``-space and a ``content``-space pool in step with the stored items.

    Parameters
    ----------
    item, content
        The two pools (default: empty :class:`ExactPool` each).
    statuses
        Item statuses that belong to the cold pool; an upserted item with another status (e.g.
        ``graduated``) is removed from both pools.
    """

    def __init__(
        self,
        item: CandidatePool | None = None,
        content: CandidatePool | None = None,
        statuses: Sequence[str] = POOL_STATUSES,
    ) -> None:
        self.item = item if item is not None else ExactPool()
        self.content = content if content is not None else ExactPool()
        self.statuses = frozenset(statuses)

    def pool(self, space: PoolSpace) -> CandidatePool:
        """The pool of ``space``."""
        return self.item if space == "item" else self.content

    def upsert_items(self, items: Sequence[StoredItem]) -> None:
        """Upsert cold items into both pools; remove those whose status left the cold pool."""
        keep = [it for it in items if it.status in self.statuses]
        gone = [it.item_id for it in items if it.status not in self.statuses]
        self.item.upsert([entry_from_item(it, "item") for it in keep])
        self.content.upsert([entry_from_item(it, "content") for it in keep])
        if gone:
            self.remove(gone)

    def remove(self, item_ids: Sequence[str]) -> None:
        """Remove items from both pools (graduation)."""
        self.item.remove(item_ids)
        self.content.remove(item_ids)

    def rebuild_from_store(self, store: FeatureStore) -> int:
        """Reload both pools from one pass over the store (start-up); returns the pool size."""
        items = [it for it in store.iter_items() if it.status in self.statuses]
        self.item.replace_all([entry_from_item(it, "item") for it in items])
        self.content.replace_all([entry_from_item(it, "content") for it in items])
        return len(self.item)
