"""The exposure ledger: per-item impressions and clicks of the cold items a process serves.

One row per tracked item in numpy arrays (listing time, impressions, clicks, seller and category
codes) beside the list of ids, swap-removed, so that pacing can rank and filter a large pool with
array operations. The counters live in the process (an API replica counts the impressions it serves
and the positive interactions posted to it); at start-up they are seeded from the feature store's
``impressions`` and ``clicks`` columns (:meth:`ExposureLedger.register`).
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Collection, Iterable, Sequence
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

#: Up to this many filter values are matched by one comparison each, more through a table.
_COMPARED_NAMES = 8
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


class _Labels:
    """Integer codes of label values (sellers or categories): rows hold an ``int32`` code, so that a
    filter over a million rows is one array comparison (a Python pass over their strings costs
    ~150 ms a request). Codes are never reused; the table grows with the distinct values seen."""

    def __init__(self) -> None:
        self._code: dict[str, int] = {}
        self.names: list[str] = []

    def code(self, name: str) -> int:
        """The code of ``name`` (a new one the first time)."""
        code = self._code.get(name)
        if code is None:
            code = self._code[name] = len(self.names)
            self.names.append(name)
        return code

    def match(self, codes: NDArray[np.int32], names: Collection[str]) -> NDArray[np.bool_]:
        """Which of the rows' ``codes`` stand for one of ``names``. A few names: one comparison each
        (~0.14 ms per million rows); more: one gather through a table of the codes (~1.8 ms), which
        ``np.isin`` is slower than in both cases."""
        wanted = [self._code[v] for v in names if v in self._code]
        if len(wanted) <= _COMPARED_NAMES:
            out = np.zeros(codes.shape[0], dtype=bool)
            for code in wanted:
                out |= codes == code
            return out
        table = np.zeros(len(self.names), dtype=bool)
        table[wanted] = True
        return np.take(table, codes)


class ExposureLedger:
    """Thread-safe per-item exposure counters (the state :class:`~exploration.pacing.ExposurePacer`
    paces)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._counted: OrderedDict[str, None] = OrderedDict()  # recent click count keys
        self._ids: list[str] = []
        self._index: dict[str, int] = {}
        self._seller_labels = _Labels()
        self._category_labels = _Labels()
        cap = 1024
        self._listed = np.zeros(cap, dtype=np.float64)
        self._imps = np.zeros(cap, dtype=np.int64)
        self._clicks = np.zeros(cap, dtype=np.int64)
        self._seller = np.zeros(cap, dtype=np.int32)
        self._category = np.zeros(cap, dtype=np.int32)
        # rows sorted by listing time and those times (:meth:`_by_listing`), kept up to date as rows
        # come and go; -1 marks a removed item's place until the next compaction
        self._sorted: tuple[NDArray[np.intp], NDArray[np.float64]] | None = None
        self._sorted_added: list[int] = []  # new rows not merged into ``_sorted`` yet
        self._sorted_dead = 0  # places marked -1
        self._sorted_version = 0  # changes when places move (a merge, a compaction, a rebuild)
        # ids whose counters reached what :meth:`_on_counters` checks for (the pacer: graduation evidence),
        # so that a periodic pass finds them without scanning every row; forgotten with their item
        self._flagged: set[str] = set()

    def __len__(self) -> int:
        return len(self._ids)

    def __contains__(self, item_id: object) -> bool:
        return item_id in self._index

    def _grow(self) -> None:
        cap = max(1024, 2 * len(self._listed))
        for name in ("_listed", "_imps", "_clicks", "_seller", "_category"):
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
                if self._sorted is not None:
                    self._sorted_added.append(i)
                self._ids.append(item_id)
                self._index[item_id] = i
                self._listed[i] = listed_at_s
                self._imps[i] = impressions
                self._clicks[i] = clicks
                self._seller[i] = self._seller_labels.code(seller_id)
                self._category[i] = self._category_labels.code(category)
            else:
                self._imps[i] = max(int(self._imps[i]), impressions)
                self._clicks[i] = max(int(self._clicks[i]), clicks)
                if seller_id:
                    self._seller[i] = self._seller_labels.code(seller_id)
                if category:
                    self._category[i] = self._category_labels.code(category)
            self._on_counters(i)

    def _on_counters(self, row: int) -> None:
        """Called (lock held) after ``row``'s counters changed; counters only grow. A subclass flags
        the rows whose counters reached a threshold (``_flagged``); this ledger flags none."""

    def forget(self, item_ids: Iterable[str]) -> None:
        """Stop tracking items (unknown ids are ignored)."""
        with self._lock:
            for item_id in item_ids:
                self._remove(item_id)

    def _remove(self, item_id: str) -> None:
        i = self._index.pop(item_id, None)
        if i is None:
            return
        self._flagged.discard(item_id)
        last = len(self._ids) - 1
        if self._sorted is not None:
            self._unsort(i, last)
        if i != last:
            moved = self._ids[last]
            self._ids[i] = moved
            for column in (self._listed, self._imps, self._clicks, self._seller, self._category):
                column[i] = column[last]
            self._index[moved] = i
        self._ids.pop()

    def _by_listing(self) -> tuple[NDArray[np.intp], NDArray[np.float64], int]:
        """Tracked rows sorted by listing time (ties in any order), their listing times, and a version
        that changes whenever an item's place in them moves (lock held).

        Built by one sort at the first call, then kept: new rows are merged in (``searchsorted`` +
        ``insert``) and removed ones compacted away, each in one O(n) pass at the next call. With a
        million items a full sort costs 0.1-0.3 s, and a replica registers new items at every pool
        sync and removes graduated ones every few seconds.
        """
        if self._sorted is None:
            listed = self._listed[: len(self._ids)]
            order = np.argsort(listed, kind="stable")
            self._sorted, self._sorted_added, self._sorted_dead = (order, listed[order]), [], 0
            self._sorted_version += 1
        if self._sorted_dead or self._sorted_added:
            order, times = self._sorted
            if self._sorted_dead:
                keep = order >= 0
                order, times = order[keep], times[keep]
            if self._sorted_added:
                rows = np.asarray(self._sorted_added, dtype=order.dtype)
                new = self._listed[rows]
                by = np.argsort(new, kind="stable")
                at = np.searchsorted(times, new[by], side="right")
                order, times = np.insert(order, at, rows[by]), np.insert(times, at, new[by])
            self._sorted, self._sorted_added, self._sorted_dead = (order, times), [], 0
            self._sorted_version += 1
        order, times = self._sorted
        return order, times, self._sorted_version

    def _unsort(self, row: int, last: int) -> None:
        """Before ``row`` is removed and ``last`` moves into it (:meth:`_remove`): mark ``row``'s place
        in the sorted rows removed and relabel ``last``'s place (lock held, O(log n))."""
        if self._sorted_added:
            self._by_listing()  # every row has its place before any is looked up
        assert self._sorted is not None  # the caller checked
        order, times = self._sorted
        order[self._place(order, times, row)] = -1
        self._sorted_dead += 1
        if row != last:
            order[self._place(order, times, last)] = row

    def _place(self, order: NDArray[np.intp], times: NDArray[np.float64], row: int) -> int:
        """Where ``row`` is in the sorted rows (among the items listed at the same time)."""
        p = int(np.searchsorted(times, self._listed[row], side="left"))
        while order[p] != row:
            p += 1
        return p

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
            seller_id=self._seller_labels.names[self._seller[i]],
            category=self._category_labels.names[self._category[i]],
            impressions=int(self._imps[i]),
            clicks=int(self._clicks[i]),
        )

    def _allowed(self, categories: Collection[str], sellers: Collection[str]) -> NDArray[np.bool_] | None:
        """Which tracked rows are in one of ``categories`` and sold by one of ``sellers`` (an empty
        restriction allows every value); ``None`` when neither restricts (lock held)."""
        if not (categories or sellers):
            return None
        size = len(self._ids)
        allowed = np.ones(size, dtype=bool)
        for labels, column, wanted in (
            (self._category_labels, self._category, categories),
            (self._seller_labels, self._seller, sellers),
        ):
            if wanted:
                allowed &= labels.match(column[:size], wanted)
        return allowed

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
                self._on_counters(i)
