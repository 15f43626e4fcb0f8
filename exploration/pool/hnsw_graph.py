"""The pieces of the approximate pool below its parts: one FAISS HNSW graph over a part's vectors
(rows append-only, tombstones masked, float32 or 8-bit storage), the helper thread that runs a new
item's graph inserts side by side, and the pool's writer-first lock (:mod:`exploration.pool.hnsw`)."""

from __future__ import annotations

import contextlib
import os
import threading
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np
from numpy.typing import NDArray

_BULK_ADD = 1024  # rows from which one add is a bulk build

#: How a graph stores its vectors: ``flat`` float32, ``sq8`` one byte per dimension.
Storage = Literal["flat", "sq8"]


class Graph:
    """One FAISS HNSW graph over a part's vectors, rows append-only, tombstones masked."""

    def __init__(
        self, dim: int, m: int, ef_construction: int, ef_search: int, ef_add: int, storage: Storage
    ) -> None:
        import faiss  # deferred: a heavy optional library, loaded only by an approximate pool

        self._faiss: Any = faiss
        if storage == "sq8":
            self.index: Any = self._faiss.IndexHNSWSQ(
                dim, faiss.ScalarQuantizer.QT_8bit, m, faiss.METRIC_INNER_PRODUCT
            )
            # the code range is each dimension's [min, max] over the build's vectors, widened by 20%
            # on both sides so items streamed in later rarely fall outside it (outside, a value is
            # clipped: only that item's graph position blurs, its score is re-ranked exactly)
            sq = self._faiss.downcast_index(self.index.storage).sq
            sq.rangestat, sq.rangestat_arg = faiss.ScalarQuantizer.RS_minmax, 0.2
        else:
            self.index = faiss.IndexHNSWFlat(dim, m, faiss.METRIC_INNER_PRODUCT)
        self.storage: Storage = storage
        self.index.hnsw.efConstruction = ef_construction
        self.ef_search = ef_search
        self.ef_add = ef_add
        self.rows: list[str] = []
        self.row_of: dict[str, int] = {}
        self.dead = 0
        self._bits: NDArray[np.uint8] = np.zeros(1024, dtype=np.uint8)
        self._selector: Any = None

    def _set_alive(self, row: int, alive: bool) -> None:
        byte, bit = row >> 3, np.uint8(1 << (row & 7))
        if byte >= self._bits.shape[0]:
            grown = np.zeros(max(byte + 1, 2 * self._bits.shape[0]), dtype=np.uint8)
            grown[: self._bits.shape[0]] = self._bits
            self._bits = grown
            self._selector = None
        if alive:
            self._bits[byte] |= bit
        else:
            self._bits[byte] &= ~bit

    def add(self, item_ids: Sequence[str], vectors: NDArray[np.float32]) -> None:
        self.drop(item_ids)
        start = len(self.rows)
        # a stream batch (a few dozen items) is inserted on one thread: FAISS's OpenMP split of so few
        # inserts costs more than it saves and competes with the searches of the request threads
        # (100,000 items, 64-item batches while a thread searches: 5,300 upserts/s on one thread
        # against 3,700/s on two); a bulk build uses every core. The setting is process-wide and only
        # decides speed: a concurrent call that sets it otherwise changes no result.
        self._faiss.omp_set_num_threads(1 if len(item_ids) < _BULK_ADD else os.cpu_count() or 1)
        rows = np.ascontiguousarray(vectors, dtype=np.float32)
        if not self.index.is_trained:  # sq8: the first (bulk) add sets the code range
            self.index.train(rows)
        self.index.add(rows)
        for offset, item_id in enumerate(item_ids):
            self.rows.append(item_id)
            self.row_of[item_id] = start + offset
            self._set_alive(start + offset, True)

    def drop(self, item_ids: Sequence[str]) -> None:
        for item_id in item_ids:
            row = self.row_of.pop(item_id, None)
            if row is not None:
                self._set_alive(row, False)
                self.dead += 1

    def reorder(self) -> NDArray[np.int64]:
        """Renumber the rows in breadth-first order of the bottom layer's links, from the entry point;
        returns ``perm`` (new row ``r`` is old row ``perm[r]``).

        A search walks from a node to its neighbours; numbered in build order, those lie anywhere in
        the graph's memory, and at a million items the walk is bound by cache and TLB misses. In this
        order a node's neighbours are mostly numbered near it (1,000,000 clustered 128-d items, M 32,
        sq8, ef 256: 0.37 → 0.29 ms a search, the same results). One pass, vectorised by BFS level
        (~1 s at a million rows); rows no link reaches go last.
        """
        hnsw = self.index.hnsw
        n = int(self.index.ntotal)
        if n < 2:
            return np.arange(n, dtype=np.int64)
        links = self._faiss.rev_swig_ptr(hnsw.neighbors.data(), hnsw.neighbors.size())  # a view
        starts = self._faiss.vector_to_array(hnsw.offsets).astype(np.int64)[:n]
        width = np.arange(hnsw.nb_neighbors(0))  # the bottom layer's links come first in each node's range
        seen = np.zeros(n, dtype=bool)
        frontier = np.array([hnsw.entry_point], dtype=np.int64)
        seen[frontier] = True
        order = []
        while frontier.size:
            order.append(frontier)
            reached = links[starts[frontier][:, None] + width].ravel()
            reached = reached[reached >= 0]
            reached = reached[~seen[reached]]
            _, first = np.unique(reached, return_index=True)  # each new row once, in its parents' order
            frontier = reached[np.sort(first)].astype(np.int64)
            seen[frontier] = True
        order.append(np.flatnonzero(~seen))
        perm = np.concatenate(order)
        self.index.permute_entries(perm)
        alive = np.unpackbits(self._bits, bitorder="little")[:n][perm].astype(bool)
        packed = np.packbits(alive, bitorder="little")
        self._bits[:] = 0
        self._bits[: packed.shape[0]] = packed
        self._selector = None
        self.rows = [self.rows[r] for r in perm.tolist()]
        self.row_of = {item_id: r for r, item_id in enumerate(self.rows) if alive[r]}
        return perm

    def save(self, path: Path) -> None:
        """Write the graph (FAISS's own format) and its rows beside it."""
        self._faiss.write_index(self.index, str(path.with_suffix(".faiss")))
        np.savez(
            path.with_suffix(".npz"), rows=np.asarray(self.rows, dtype=str), bits=self._bits, dead=self.dead
        )

    @classmethod
    def load(cls, path: Path, ef_search: int, ef_add: int) -> Graph:
        """A graph :meth:`save` wrote."""
        import faiss  # deferred, as in __init__

        graph = cls.__new__(cls)
        graph._faiss = faiss
        graph.index = faiss.read_index(str(path.with_suffix(".faiss")))
        graph.storage = "sq8" if isinstance(graph.index, faiss.IndexHNSWSQ) else "flat"
        graph.index.hnsw.efConstruction = ef_add
        graph.ef_search, graph.ef_add = ef_search, ef_add
        with np.load(path.with_suffix(".npz"), allow_pickle=False) as z:
            graph.rows = z["rows"].tolist()
            graph._bits = z["bits"].copy()
            graph.dead = int(z["dead"])
        graph.row_of = {
            item_id: row for row, item_id in enumerate(graph.rows) if graph._bits[row >> 3] & (1 << (row & 7))
        }
        graph._selector = None
        return graph

    def search_rows(
        self, query: NDArray[np.float32], k: int
    ) -> tuple[NDArray[np.int64], NDArray[np.float32]]:
        """Up to ``k`` live rows and their graph scores, best first (approximate; ``rows[r]`` is the
        id of row ``r``)."""
        if self._selector is None:
            self._selector = self._faiss.IDSelectorBitmap(
                self._bits.shape[0] * 8, self._faiss.swig_ptr(self._bits)
            )
        params = self._faiss.SearchParametersHNSW()
        params.efSearch = max(self.ef_search, k)
        params.sel = self._selector
        scores, rows = self.index.search(query.reshape(1, -1), k, params=params)
        keep = rows[0] >= 0
        found: NDArray[np.int64] = rows[0][keep]
        return found, scores[0][keep]


def run_graph_work(work: Sequence[Callable[[], None]]) -> None:
    """Run the graph work of one upsert: the first job (the whole pool's graph, the largest) on a
    helper thread, the others (category and seller graphs) here, at the same time. FAISS releases
    the GIL while it inserts, and the pool's lock is held throughout (searches wait), so the two
    inserts of a new item cost the longer of the two instead of their sum. The helper is a thread of
    this call (~0.1 ms to start against tens of ms of inserts): no queue shared between pools, where
    one pool's long build could hold up another pool's insert."""
    if len(work) < 2:
        for job in work:
            job()
        return
    failed: list[BaseException] = []

    def first() -> None:
        try:
            work[0]()
        except BaseException as exc:  # re-raised in the caller's thread below
            failed.append(exc)

    helper = threading.Thread(target=first, name="hnsw-insert", daemon=True)
    helper.start()
    try:
        for job in work[1:]:
            job()
    finally:
        helper.join()
    if failed:
        raise failed[0]


class WriterFirstLock:
    """The pool's lock: one holder at a time (a FAISS graph cannot be searched while it is written),
    and a writer that waits goes before the searches that come after it. With a plain lock, request
    threads that search without pause re-take it before the waiting writer wakes, and the stream's
    upserts starve (benchmarks/pool.py: 1,392 and 2,602 upserts/s in two runs of the same code at
    1M items, depending on who won the lock)."""

    def __init__(self) -> None:
        self._gate = threading.RLock()  # held by a waiting or writing writer: new searches queue here
        self._lock = threading.RLock()

    @contextlib.contextmanager
    def read(self) -> Iterator[None]:
        with self._gate:
            self._lock.acquire()
        try:
            yield
        finally:
            self._lock.release()

    @contextlib.contextmanager
    def write(self) -> Iterator[None]:
        with self._gate, self._lock:
            yield
