"""Approximate cold-pool index: FAISS HNSW graphs, partitioned by category and seller.

Why FAISS (``faiss-cpu``): measured against USearch at 100,000 clustered 128-d vectors (M 32, one
search thread), both reached recall@100 0.98 at ef 128; FAISS searched faster (p99 0.43 ms against
0.66 ms) and filters in C++ through ``IDSelector`` instead of a Python callback. HNSW alone is poor
on selective filters: with a filter matching 5% of the items, recall@100 was 0.45 at ef 256 and 0.87
at ef 2048 (p99 22 ms). So filters are not pushed into one graph: every category and every seller has
its own part, and a filtered search runs in the parts the filter names.

A part (:class:`_Part`) is an :class:`~exploration.pool.exact.ExactPool` (entries, vectors, the source
of truth) plus, once it holds ``graph_min`` items, an HNSW graph over the same vectors. The graph only
proposes candidates (``rerank_factor × k``); the part's exact vectors score and order them. So the graph
may store its vectors as 8-bit codes (``storage="sq8"``, the default): at 1,000,000 items the graph walk
is bound by memory traffic, and a quarter of it makes inserts, searches and builds faster
(docs/results/pool.md). A part below
that size is searched exactly (faster than a graph there, and exact). FAISS graphs cannot delete, so
a replaced or removed item leaves a tombstone that an ``IDSelectorBitmap`` hides from searches; the
graph is rebuilt from the part's live vectors when tombstones pass ``rebuild_ratio`` of its rows.

Cost: every vector is held by the global part and by its category and seller parts (three exact
copies, plus FAISS's copies inside the graphs), traded for filtered searches that stay fast and
exact-or-nearly.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
from numpy.typing import NDArray

from coldstart.errors import InvalidInputError
from exploration.pool.base import CandidatePool, PoolCandidates, PoolEntry, PoolFilter, PoolHit
from exploration.pool.exact import ExactPool
from exploration.pool.hnsw_graph import Graph, Storage, WriterFirstLock, run_graph_work


def _same_vector(old: PoolEntry | None, new: PoolEntry) -> bool:
    return old is not None and bool(np.array_equal(old.vector, np.asarray(new.vector, dtype=np.float32)))


class _Part:
    """Exact entries of one slice of the pool, with a graph once it is large.

    ``_slot_of_row[r]`` is the exact part's matrix row of graph row ``r``'s item (stale for tombstoned
    rows, which searches never return): a search re-ranks its candidates with one gather instead of one
    id lookup each (at a million items each lookup in a dict that large is a cache miss). The exact
    part reports the rows its removals move, and the map follows them.
    """

    def __init__(self, owner: HnswPool) -> None:
        self.owner = owner
        self.exact = ExactPool(owner.dim, initial_capacity=16)
        self.graph: Graph | None = None
        self._slot_of_row: NDArray[np.int64] = np.zeros(16, dtype=np.int64)

    def upsert(self, entries: Sequence[PoolEntry]) -> Callable[[], None] | None:
        """Write ``entries`` to the exact part (validated first); return the graph work they call for
        (inserts, or a first build), for the caller to run, or ``None``."""
        # an unchanged vector keeps its graph row (a re-sent or re-announced item: a status or counter
        # change, the periodic sync) and costs no graph work
        moved = [e for e in entries if not _same_vector(self.exact.get(e.item_id), e)]
        self.exact.upsert(entries)  # existing items keep their rows; new ones are appended
        if self.graph is not None:
            return (lambda: self._insert(moved)) if moved else None
        return self._build if len(self.exact) >= self.owner.graph_min else None

    def _insert(self, moved: Sequence[PoolEntry]) -> None:
        assert self.graph is not None
        ids = [e.item_id for e in moved]
        start = len(self.graph.rows)
        self.graph.add(ids, np.stack([e.vector for e in moved]))
        self._map_rows(start, self.exact.slots(ids))
        if self.graph.dead > self.owner.rebuild_ratio * max(len(self.graph.rows), 1):
            self._build()

    def remove(self, item_ids: Sequence[str]) -> None:
        moves = self.exact.remove_moving(item_ids)
        if self.graph is not None:
            row_of = self.graph.row_of
            for item_id, slot in moves:
                row = row_of.get(item_id)
                if row is not None:
                    self._slot_of_row[row] = slot
            self.graph.drop(item_ids)

    def _build(self) -> None:
        ids = self.exact.ids()  # in matrix-row order: graph row r is exact row r
        vectors = self.exact.vectors(ids)
        o = self.owner
        graph = Graph(int(self.exact.dim or 1), o.m, o.ef_construction, o.ef_search, o.ef_add, o.storage)
        slots = np.arange(len(ids), dtype=np.int64)
        if ids and vectors is not None:
            graph.add(ids, vectors)
            slots = graph.reorder()  # graph row r now holds exact row slots[r]
        # the bulk of the graph is built with the wide ef_construction; items streamed in later are
        # inserted with the narrower ef_add, which bounds the cost of an upsert
        graph.index.hnsw.efConstruction = o.ef_add
        self.graph = graph
        self._slot_of_row = np.zeros(0, dtype=np.int64)
        self._map_rows(0, slots)

    def attach(self, graph: Graph) -> None:
        """Serve ``graph`` (a saved one whose live rows are this part's items)."""
        self.graph = graph
        self._slot_of_row = np.zeros(0, dtype=np.int64)
        self._map_rows(0, self.exact.slots(graph.rows))

    def _map_rows(self, start: int, slots: NDArray[np.int64]) -> None:
        """Graph rows ``start, start + 1, ...`` hold the exact rows ``slots`` (capacity doubles)."""
        end = start + len(slots)
        if end > len(self._slot_of_row):
            grown = np.zeros(max(end, 2 * len(self._slot_of_row)), dtype=np.int64)
            grown[:start] = self._slot_of_row[:start]
            self._slot_of_row = grown
        self._slot_of_row[start:end] = slots

    def search(self, query: NDArray[np.float32], k: int, filters: PoolFilter | None) -> PoolCandidates:
        narrowed = filters is not None and bool(filters.categories or filters.sellers)
        if self.graph is None or narrowed:
            return self.exact.search_candidates(query, k, filters)
        graph = self.graph
        exclude = filters.exclude_item_ids if filters is not None else frozenset()
        present = sum(1 for i in exclude if i in graph.row_of)
        # the graph proposes candidates (a few more than k: its order is approximate, and with sq8
        # storage so are its scores); the part's exact vectors score and order them
        rows, _ = graph.search_rows(query, math.ceil(k * self.owner.rerank_factor) + present)
        if present:
            rows = rows[[graph.rows[r] not in exclude for r in rows.tolist()]]
        slots = self._slot_of_row[rows]
        scores = self.exact.rows(slots).astype(np.float64) @ query.astype(np.float64)
        top = np.argsort(-scores, kind="stable")[:k]
        return self.exact.candidates_at(slots[top], scores[top])


class HnswPool(CandidatePool):
    """Approximate nearest-neighbour cold pool (see the module docstring).

    Parameters
    ----------
    dim
        Vector dimension; ``None`` fixes it at the first upsert.
    storage, rerank_factor
        Graph vectors as float32 (``flat``) or 8-bit codes (``sq8``); candidates taken from a graph per
        result, re-scored exactly.
    m, ef_construction, ef_add, ef_search
        HNSW graph degree; build breadth when a graph is (re)built from a part's items and when items
        are inserted one batch at a time afterwards; search breadth (at least ``k`` is used).
    graph_min
        A part (the whole pool, one category, one seller) gets a graph at this many items; smaller
        parts are searched exactly.
    rebuild_ratio
        A graph is rebuilt when its tombstones (replaced or removed items) exceed this share of its
        rows.
    """

    def __init__(
        self,
        dim: int | None = None,
        *,
        m: int = 32,
        ef_construction: int = 160,
        ef_add: int = 64,
        ef_search: int = 256,
        graph_min: int = 20_000,
        rebuild_ratio: float = 0.25,
        storage: Storage = "sq8",
        rerank_factor: float = 1.5,
    ) -> None:
        if dim is not None and dim < 1:
            raise InvalidInputError("dim", dim, "must be >= 1")
        if min(ef_construction, ef_add, ef_search, graph_min) < 1 or m < 4 or not 0 < rebuild_ratio <= 1:
            raise InvalidInputError(
                "hnsw", (m, ef_construction, ef_add, ef_search, graph_min, rebuild_ratio), "out of range"
            )
        if storage not in ("flat", "sq8") or not 1 <= rerank_factor <= 10:
            raise InvalidInputError(
                "hnsw", (storage, rerank_factor), "storage flat|sq8, rerank_factor in [1, 10]"
            )
        self.dim = dim
        self.m = m
        self.ef_construction = ef_construction
        self.ef_add = ef_add
        self.ef_search = ef_search
        self.graph_min = graph_min
        self.rebuild_ratio = rebuild_ratio
        self.storage: Storage = storage
        self.rerank_factor = rerank_factor
        self._lock = WriterFirstLock()
        self._reset()

    def _empty(self, dim: int | None) -> HnswPool:
        """An empty pool with this one's parameters (built aside, then swapped in)."""
        return HnswPool(
            dim,
            m=self.m,
            ef_construction=self.ef_construction,
            ef_add=self.ef_add,
            ef_search=self.ef_search,
            graph_min=self.graph_min,
            rebuild_ratio=self.rebuild_ratio,
            storage=self.storage,
            rerank_factor=self.rerank_factor,
        )

    def _reset(self) -> None:
        self._all = _Part(self)
        self._by_category: dict[str, _Part] = {}
        self._by_seller: dict[str, _Part] = {}
        self._where: dict[str, tuple[str, str]] = {}

    def __len__(self) -> int:
        return len(self._all.exact)

    def __contains__(self, item_id: object) -> bool:
        return item_id in self._all.exact

    def get(self, item_id: str) -> PoolEntry | None:
        """The stored entry of ``item_id``, or ``None``."""
        return self._all.exact.get(item_id)

    def vectors(self, item_ids: Sequence[str]) -> NDArray[np.float32] | None:
        """Rows for ``item_ids`` (``None`` when one is missing), as :meth:`ExactPool.vectors`."""
        return self._all.exact.vectors(item_ids)

    def ids(self) -> list[str]:
        """Ids currently in the pool."""
        return self._all.exact.ids()

    # -- writes ---------------------------------------------------------------------------------
    def upsert(self, entries: Sequence[PoolEntry]) -> None:
        """Add or replace items (idempotent); invalid input changes nothing."""
        if not entries:
            return
        with self._lock.write():
            latest = {e.item_id: e for e in entries}  # the last entry of an id in one call wins
            batch = list(latest.values())
            work = [self._all.upsert(batch)]  # validates every vector first (raises before any change)
            if self.dim is None:
                self.dim = self._all.exact.dim
            for e in batch:
                old = self._where.get(e.item_id)
                if old is not None and old != (e.category, e.seller_id):
                    self._by_category[old[0]].remove([e.item_id])
                    self._by_seller[old[1]].remove([e.item_id])
                self._where[e.item_id] = (e.category, e.seller_id)
            for key, table in ((0, self._by_category), (1, self._by_seller)):
                groups: dict[str, list[PoolEntry]] = {}
                for e in batch:
                    groups.setdefault(self._where[e.item_id][key], []).append(e)
                for value, group in groups.items():
                    if value not in table:
                        table[value] = _Part(self)
                    work.append(table[value].upsert(group))
            run_graph_work([w for w in work if w is not None])

    def remove(self, item_ids: Sequence[str]) -> None:
        """Remove items (unknown ids are ignored)."""
        with self._lock.write():
            gone = [i for i in item_ids if i in self._where]
            self._all.remove(gone)
            for item_id in gone:
                category, seller = self._where.pop(item_id)
                self._by_category[category].remove([item_id])
                self._by_seller[seller].remove([item_id])

    def replace_all(self, entries: Sequence[PoolEntry]) -> None:
        """Replace the whole content (rebuild from the store); rows of another dimension are skipped
        as :meth:`ExactPool.replace_all` skips them."""
        probe = ExactPool(self.dim)
        probe.replace_all(entries)
        kept = [e for e in (probe.get(i) for i in probe.ids()) if e is not None]
        # built aside and swapped in: searches keep the old pool while graphs are built
        fresh = self._empty(probe.dim)
        if kept:
            fresh.upsert(kept)
        with self._lock.write():
            self.dim = fresh.dim
            self._all, self._by_category = fresh._all, fresh._by_category
            self._by_seller, self._where = fresh._by_seller, fresh._where
            for part in (self._all, *self._by_category.values(), *self._by_seller.values()):
                part.owner = self

    # -- snapshots ------------------------------------------------------------------------------
    def _parts(self) -> list[tuple[str, str, _Part]]:
        return [
            ("all", "", self._all),
            *(("category", k, p) for k, p in self._by_category.items()),
            *(("seller", k, p) for k, p in self._by_seller.items()),
        ]

    def save(self, directory: Path) -> None:
        """Write the graphs of the parts that have one (entries and vectors are the snapshot's rows:
        :mod:`exploration.pool.snapshot`)."""
        directory.mkdir(parents=True, exist_ok=True)
        graphs = []
        with self._lock.read():
            for n, (kind, key, part) in enumerate(self._parts()):
                if part.graph is not None:
                    part.graph.save(directory / f"graph-{n}")
                    graphs.append({"kind": kind, "key": key, "file": f"graph-{n}", "size": len(part.exact)})
        (directory / "graphs.json").write_text(json.dumps({"dim": self.dim, "graphs": graphs}))

    def load(self, directory: Path, entries: Sequence[PoolEntry], vectors: NDArray[np.float32]) -> None:
        """Replace the content with a snapshot's rows and the graphs :meth:`save` wrote: no graph is
        built (a part whose saved graph does not match its rows gets a new one)."""
        index = directory / "graphs.json"
        meta = json.loads(index.read_text()) if index.exists() else {"graphs": []}
        fresh = self._empty(int(vectors.shape[1]) if len(entries) else self.dim)
        fresh._all.exact.load_rows(entries, vectors)
        groups: tuple[dict[str, list[int]], dict[str, list[int]]] = ({}, {})
        for i, e in enumerate(entries):
            groups[0].setdefault(e.category, []).append(i)
            groups[1].setdefault(e.seller_id, []).append(i)
            fresh._where[e.item_id] = (e.category, e.seller_id)
        for table, grouped in ((fresh._by_category, groups[0]), (fresh._by_seller, groups[1])):
            for key, rows in grouped.items():
                part = table[key] = _Part(fresh)
                part.exact.load_rows([entries[i] for i in rows], vectors[rows])
        parts = {(kind, key): part for kind, key, part in fresh._parts()}
        for g in meta["graphs"]:
            owner = parts.get((g["kind"], g["key"]))
            if owner is None:
                continue
            graph = Graph.load(directory / g["file"], self.ef_search, self.ef_add)
            # a graph of the other storage is rebuilt (below), so the configured one is what serves
            if graph.storage == self.storage and set(graph.row_of) == set(owner.exact.ids()):
                owner.attach(graph)
        for part in parts.values():  # parts that reached graph_min without a matching saved graph
            if part.graph is None and len(part.exact) >= self.graph_min:
                part._build()
        with self._lock.write():
            self.dim = fresh.dim
            self._all, self._by_category = fresh._all, fresh._by_category
            self._by_seller, self._where = fresh._by_seller, fresh._where
            for part in parts.values():
                part.owner = self

    # -- search ---------------------------------------------------------------------------------
    def search_candidates(
        self, query: NDArray[np.float32], k: int, filters: PoolFilter | None = None
    ) -> PoolCandidates:
        """Top-``k`` by inner product, best first, from the parts ``filters`` names, with their entries
        and vectors (read by row)."""
        if isinstance(k, bool) or not isinstance(k, int | np.integer) or k < 1:
            raise InvalidInputError("k", k, "must be an integer >= 1")
        with self._lock.read():
            if len(self) == 0:
                return PoolCandidates([], np.zeros(0), np.zeros((0, self.dim or 1), dtype=np.float32))
            q = self._all.exact._check_vector(query, "query")
            if filters is None or not (filters.categories or filters.sellers):
                return self._all.search(q, int(k), filters)
            # the narrower side picks the parts; the other restriction is applied inside them
            if filters.sellers:
                parts = [self._by_seller[s] for s in sorted(set(filters.sellers)) if s in self._by_seller]
                inner = PoolFilter(categories=filters.categories, exclude_item_ids=filters.exclude_item_ids)
            else:
                cats = sorted(set(filters.categories))
                parts = [self._by_category[c] for c in cats if c in self._by_category]
                inner = PoolFilter(exclude_item_ids=filters.exclude_item_ids)
            found = [p.search(q, int(k), inner) for p in parts]
        if len(found) == 1:
            return found[0]
        entries = [e for c in found for e in c.entries]
        scores = np.concatenate([np.zeros(0), *(c.scores for c in found)])
        vectors = np.concatenate([np.zeros((0, q.shape[0]), dtype=np.float32), *(c.vectors for c in found)])
        top = np.argsort(-scores, kind="stable")[: int(k)]  # ties: the parts' (sorted) order
        return PoolCandidates([entries[i] for i in top.tolist()], scores[top], vectors[top])

    def search_ids(
        self, query: NDArray[np.float32], k: int, filters: PoolFilter | None = None
    ) -> tuple[list[str], NDArray[np.float64]]:
        """:meth:`search_candidates` as ``(item_ids, scores)``."""
        found = self.search_candidates(query, k, filters)
        return found.item_ids, found.scores

    def search(self, query: NDArray[np.float32], k: int, filters: PoolFilter | None = None) -> list[PoolHit]:
        """:meth:`search_ids` as :class:`PoolHit` objects."""
        ids, scores = self.search_ids(query, k, filters)
        return [PoolHit(item_id=i, score=float(s)) for i, s in zip(ids, scores.tolist(), strict=True)]
