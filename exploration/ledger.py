"""The exposure ledger: per-item impressions and clicks of the cold items a process serves.

One row per tracked item in numpy arrays (listing time, impressions, clicks) beside lists of ids,
sellers and categories, swap-removed, so that pacing can rank a large pool with array operations. The
counters live in the process (an API replica counts the impressions it serves and the positive
interactions posted to it); at start-up they are seeded from the feature store's ``impressions`` and
``clicks`` columns (:meth:`ExposureLedger.register`).
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

#: Click count keys remembered to count a repeated click once (a bounded, most-recent window).
_COUNTED_KEYS = 100_000


@dataclass
class Exposure:
    """Pacing state of one cold item (times in epoch seconds)."""

    item_id: str
    listed_at_s: float
    seller_id: str = ""
    category: str = ""
    impressions: int = 0
    clicks: int = 0


class ExposureLedger:
    """Thread-safe per-item exposure counters (the state :class:`~exploration.pacing.ExposurePacer`
    paces)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._counted: OrderedDict[str, None] = OrderedDict()  # recent click count keys
        self._ids: list[str] = []
        self._index: dict[str, int] = {}
        self._sellers: list[str] = []
        self._categories: list[str] = []
        cap = 1024
        self._listed = np.zeros(cap, dtype=np.float64)
        self._imps = np.zeros(cap, dtype=np.int64)
        self._clicks = np.zeros(cap, dtype=np.int64)
        # rows sorted by deadline and those deadlines, kept by the pacer; cleared when rows change
        self._order: tuple[NDArray[np.intp], NDArray[np.float64]] | None = None

    def __len__(self) -> int:
        return len(self._ids)

    def __contains__(self, item_id: object) -> bool:
        return item_id in self._index

    def _grow(self) -> None:
        cap = max(1024, 2 * len(self._listed))
        for name in ("_listed", "_imps", "_clicks"):
            old = getattr(self, name)
            new = np.zeros(cap, dtype=old.dtype)
            new[: len(old)] = old
            setattr(self, name, new)

    def register(
        self,
        item_id: str,
        listed_at_s: float,
        *,
        seller_id: str = "",
        category: str = "",
        impressions: int = 0,
        clicks: int = 0,
    ) -> None:
        """Start tracking an item (idempotent: counters of a known item are kept, max with the given)."""
        with self._lock:
            i = self._index.get(item_id)
            if i is None:
                i = len(self._ids)
                if i >= len(self._listed):
                    self._grow()
                self._order = None
                self._ids.append(item_id)
                self._sellers.append(seller_id)
                self._categories.append(category)
                self._index[item_id] = i
                self._listed[i] = listed_at_s
                self._imps[i] = impressions
                self._clicks[i] = clicks
            else:
                self._imps[i] = max(int(self._imps[i]), impressions)
                self._clicks[i] = max(int(self._clicks[i]), clicks)
                self._sellers[i] = seller_id or self._sellers[i]
                self._categories[i] = category or self._categories[i]

    def forget(self, item_ids: Iterable[str]) -> None:
        """Stop tracking items (unknown ids are ignored)."""
        with self._lock:
            for item_id in item_ids:
                self._remove(item_id)

    def _remove(self, item_id: str) -> None:
        i = self._index.pop(item_id, None)
        if i is None:
            return
        self._order = None
        last = len(self._ids) - 1
        if i != last:
            moved = self._ids[last]
            self._ids[i] = moved
            self._sellers[i] = self._sellers[last]
            self._categories[i] = self._categories[last]
            self._listed[i] = self._listed[last]
            self._imps[i] = self._imps[last]
            self._clicks[i] = self._clicks[last]
            self._index[moved] = i
        self._ids.pop()
        self._sellers.pop()
        self._categories.pop()

    def get(self, item_id: str) -> Exposure | None:
        """A copy of an item's state, or ``None``."""
        with self._lock:
            i = self._index.get(item_id)
            if i is None:
                return None
            return self._exposure(i)

    def _exposure(self, i: int) -> Exposure:
        return Exposure(
            item_id=self._ids[i],
            listed_at_s=float(self._listed[i]),
            seller_id=self._sellers[i],
            category=self._categories[i],
            impressions=int(self._imps[i]),
            clicks=int(self._clicks[i]),
        )

    def impressions(self, item_ids: Sequence[str]) -> NDArray[np.int64]:
        """``(len(item_ids),)`` impression counts (0 for unknown ids)."""
        with self._lock:
            get = self._index.get
            idx = np.array([get(i, -1) for i in item_ids], dtype=np.int64)
            out = np.where(idx >= 0, self._imps[np.maximum(idx, 0)], 0)
        return out

    def record_click(self, item_id: str, count: int = 1, *, key: str | None = None) -> None:
        """Count clicks (or any positive interaction) of an item.

        ``key`` (``Interaction.count_key()``): a click whose key was already counted among the last
        ``_COUNTED_KEYS`` keys is not counted again (ten clicks on one slot are one click).
        """
        with self._lock:
            if key is not None:
                if key in self._counted:
                    return
                self._counted[key] = None
                if len(self._counted) > _COUNTED_KEYS:
                    self._counted.popitem(last=False)
            i = self._index.get(item_id)
            if i is not None:
                self._clicks[i] += count
