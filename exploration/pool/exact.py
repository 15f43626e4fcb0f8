"""Exact inner-product search over a contiguous float32 matrix (the default cold-pool index).

Rows ``0..n-1`` of ``_matrix`` hold the live items; ``remove`` moves the last row into the freed
slot, so upsert and remove are O(1) (amortised; the matrix doubles when full) and search is one
``(n, dim) @ (dim,)`` product plus a partial sort — about 10,000 items × 64 dims in well under a
millisecond on one core. Filters (categories, sellers, excluded ids) are applied as masks before the
top-k, so a filtered search still returns ``k`` hits whenever ``k`` items match.

Thread safety: one lock guards every read and write; a search holds it for the product and the
top-k only. The product is BLAS's gemv when every BLAS library is single-threaded, else numpy's own
single-threaded kernel (see ``_scores``).
"""

from __future__ import annotations

import logging
import threading
from collections import Counter
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from numpy.typing import NDArray

from coldstart.errors import InvalidInputError
from exploration.pool.base import CandidatePool, PoolCandidates, PoolEntry, PoolFilter, PoolHit

log = logging.getLogger(__name__)


def blas_single_threaded() -> bool:
    """Whether every BLAS library numpy loaded in this process runs on one thread (``threadpoolctl``).

    Then a matrix-vector product through BLAS (``matrix @ q``, gemv) is the fastest exact scoring
    (~0.1 ms for 10,000 x 128 against ~0.3 ms for numpy's own einsum kernel); with several threads,
    gemv spins threads for cores that the serving process's neighbours are using.
    """
    try:
        from threadpoolctl import threadpool_info
    except ImportError:  # pragma: no cover - a dependency of the project
        return False
    blas = [p for p in threadpool_info() if p.get("user_api") == "blas"]
    return bool(blas) and all(p.get("num_threads") == 1 for p in blas)


class ExactPool(CandidatePool):
    """Brute-force (exact) nearest-neighbour index by inner product.

    Parameters
    ----------
    dim
        Vector dimension; ``None`` fixes it at the first ``upsert``.
    initial_capacity
        Rows allocated up front (the matrix doubles when full).

    Notes
    -----
    Scores are computed with BLAS (gemv) when every BLAS library loaded in the process is
    single-threaded at the pool's first search (:func:`blas_single_threaded`; the API limits them to
    one thread per process, ``api.blas_threads``), otherwise with numpy's own single-threaded kernel.
    The choice is made at the first search, not at construction: building the API's state loads
    libraries (scipy's own OpenBLAS, through Feast) after the pool exists.
    """

    def __init__(self, dim: int | None = None, initial_capacity: int = 1024) -> None:
        if dim is not None and dim < 1:
            raise InvalidInputError("dim", dim, "must be >= 1")
        if initial_capacity < 1:
            raise InvalidInputError("initial_capacity", initial_capacity, "must be >= 1")
        self._lock = threading.RLock()
        self._fixed_dim = dim
        self._dim = dim
        self._capacity = initial_capacity
        self._n = 0
        self._matrix: NDArray[np.float32] = np.zeros((initial_capacity, dim or 1), dtype=np.float32)
        self._cat: NDArray[np.int32] = np.zeros(initial_capacity, dtype=np.int32)
        self._seller: NDArray[np.int32] = np.zeros(initial_capacity, dtype=np.int32)
        self._entries: list[PoolEntry | None] = [None] * initial_capacity
        self._slot: dict[str, int] = {}
        self._cat_codes: dict[str, int] = {}
        self._seller_codes: dict[str, int] = {}
        self._gemv: bool | None = None  # decided at the first search (see Notes)

    # -- properties -----------------------------------------------------------------------------
    @property
    def dim(self) -> int | None:
        """Vector dimension (``None`` until the first upsert when not given)."""
        return self._dim

    def __len__(self) -> int:
        return self._n

    def __contains__(self, item_id: object) -> bool:
        return item_id in self._slot

    def get(self, item_id: str) -> PoolEntry | None:
        """The stored entry of ``item_id``, or ``None``."""
        with self._lock:
            slot = self._slot.get(item_id)
            return None if slot is None else self._entries[slot]

    def vectors(self, item_ids: Sequence[str]) -> NDArray[np.float32] | None:
        """Rows of the pool's matrix for ``item_ids`` (one gather: the slot service's candidates)."""
        with self._lock:
            slots = self.slots(item_ids)
            if (slots < 0).any():
                return None
            return self.rows(slots)

    def ids(self) -> list[str]:
        """Ids currently in the pool (slot order)."""
        with self._lock:
            return [e.item_id for e in self._entries[: self._n] if e is not None]

    # -- writes ---------------------------------------------------------------------------------
    def _check_vector(self, vec: NDArray[np.float32], param: str) -> NDArray[np.float32]:
        arr = np.asarray(vec, dtype=np.float32)
        if arr.ndim != 1 or (self._dim is not None and arr.shape[0] != self._dim):
            raise InvalidInputError(param, f"<shape {arr.shape}>", f"must have shape ({self._dim},)")
        if not bool(np.isfinite(arr).all()):
            raise InvalidInputError(param, "<vector>", "must be finite")
        return arr

    def _code(self, table: dict[str, int], value: str) -> int:
        code = table.get(value)
        if code is None:
            code = table[value] = len(table) + 1
        return code

    def _grow(self, need: int) -> None:
        cap = self._capacity
        while cap < need:
            cap *= 2
        if cap == self._capacity:
            return
        m = np.zeros((cap, self._matrix.shape[1]), dtype=np.float32)
        m[: self._n] = self._matrix[: self._n]
        self._matrix = m
        self._cat = np.concatenate([self._cat, np.zeros(cap - self._capacity, dtype=np.int32)])
        self._seller = np.concatenate([self._seller, np.zeros(cap - self._capacity, dtype=np.int32)])
        self._entries.extend([None] * (cap - self._capacity))
        self._capacity = cap

    def upsert(self, entries: Sequence[PoolEntry]) -> None:
        """Add or replace items (idempotent); vectors are validated before anything changes."""
        if not entries:
            return
        with self._lock:
            dim = self._dim
            if dim is None:
                dim = int(np.asarray(entries[0].vector).reshape(-1).shape[0])
                if dim < 1:
                    raise InvalidInputError("entries[0].vector", "<empty>", "must be non-empty")
                self._dim = dim
                self._matrix = np.zeros((self._capacity, dim), dtype=np.float32)
            vecs = [self._check_vector(e.vector, f"entries[{e.item_id}].vector") for e in entries]
            for e in entries:
                if not e.item_id:
                    raise InvalidInputError("entries[].item_id", e.item_id, "must be a non-empty string")
            new = len({e.item_id for e in entries if e.item_id not in self._slot})
            self._grow(self._n + new)
            for e, v in zip(entries, vecs, strict=True):
                slot = self._slot.get(e.item_id)
                if slot is None:
                    slot = self._n
                    self._n += 1
                    self._slot[e.item_id] = slot
                self._matrix[slot] = v
                self._cat[slot] = self._code(self._cat_codes, e.category)
                self._seller[slot] = self._code(self._seller_codes, e.seller_id)
                self._entries[slot] = e

    def slots(self, item_ids: Sequence[str]) -> NDArray[np.int64]:
        """The matrix rows of ``item_ids`` (-1: not in the pool). A row stays the item's until a
        :meth:`remove_moving` reports it moved."""
        with self._lock:
            get = self._slot.get
            return np.fromiter((get(i, -1) for i in item_ids), dtype=np.int64, count=len(item_ids))

    def rows(self, slots: NDArray[np.int64]) -> NDArray[np.float32]:
        """The vectors in matrix rows ``slots`` (from :meth:`slots`): one gather, no id lookup."""
        with self._lock:
            out: NDArray[np.float32] = self._matrix[slots]
            return out

    def remove(self, item_ids: Sequence[str]) -> None:
        """Remove items (unknown ids are ignored); the last row moves into each freed slot."""
        self.remove_moving(item_ids)

    def remove_moving(self, item_ids: Sequence[str]) -> list[tuple[str, int]]:
        """:meth:`remove`, returning ``(item_id, row)`` for each item moved into a freed row, in order
        (an owner that keeps rows, e.g. a graph's map to them, applies them in turn)."""
        moves: list[tuple[str, int]] = []
        with self._lock:
            for item_id in item_ids:
                slot = self._slot.pop(item_id, None)
                if slot is None:
                    continue
                last = self._n - 1
                if slot != last:
                    moved = self._entries[last]
                    assert moved is not None
                    self._matrix[slot] = self._matrix[last]
                    self._cat[slot] = self._cat[last]
                    self._seller[slot] = self._seller[last]
                    self._entries[slot] = moved
                    self._slot[moved.item_id] = slot
                    moves.append((moved.item_id, slot))
                self._entries[last] = None
                self._n = last
        return moves

    def replace_all(self, entries: Sequence[PoolEntry]) -> None:
        """Atomically replace the whole content (rebuild): searches see the old or the new pool.

        A rebuild must not fail on one bad stored row, so entries whose dimension differs from the
        pool's (the constructor's ``dim``, else the most common one — e.g. rows of an older encoder)
        or whose vector is not finite are skipped and logged instead of raising.
        """
        dims = Counter(int(np.asarray(e.vector).size) for e in entries)
        dim = self._fixed_dim or (dims.most_common(1)[0][0] if dims else self._dim)
        kept: list[PoolEntry] = []
        skipped: list[str] = []
        for e in entries:
            v = np.asarray(e.vector)
            if v.ndim == 1 and v.size == dim and bool(np.isfinite(v).all()) and e.item_id:
                kept.append(e)
            else:
                skipped.append(e.item_id)
        if skipped:
            log.warning(
                "pool rebuild skipped %d of %d items whose vector is not finite or not of dim %s, e.g. %s",
                len(skipped),
                len(entries),
                dim,
                skipped[:5],
            )
        fresh = ExactPool(dim, max(self._capacity, len(kept), 1))
        fresh._fixed_dim = self._fixed_dim
        fresh.upsert(kept)
        with self._lock:
            self._dim = fresh._dim
            self._capacity = fresh._capacity
            self._n = fresh._n
            self._matrix = fresh._matrix
            self._cat = fresh._cat
            self._seller = fresh._seller
            self._entries = fresh._entries
            self._slot = fresh._slot
            self._cat_codes = fresh._cat_codes
            self._seller_codes = fresh._seller_codes

    def load(self, directory: Path, entries: Sequence[PoolEntry], vectors: NDArray[np.float32]) -> None:
        """Replace the content with a snapshot's rows (an exact pool keeps nothing else on disk)."""
        self.load_rows(entries, vectors)

    def load_rows(self, entries: Sequence[PoolEntry], vectors: NDArray[np.float32]) -> None:
        """Replace the whole content in bulk: ``vectors[i]`` is ``entries[i]``'s vector; one array
        copy and one dict, no per-entry checks.

        Raises
        ------
        InvalidInputError
            Shapes disagree, a vector is not finite, or an id repeats.
        """
        matrix = np.ascontiguousarray(vectors, dtype=np.float32)
        n = len(entries)
        if (
            matrix.ndim != 2
            or matrix.shape[0] != n
            or (self._fixed_dim and matrix.shape[1] != self._fixed_dim)
        ):
            raise InvalidInputError(
                "vectors", f"<shape {matrix.shape}>", f"must be ({n}, {self._fixed_dim or 'dim'})"
            )
        if not bool(np.isfinite(matrix).all()):
            raise InvalidInputError("vectors", "<matrix>", "must be finite")
        slot = {e.item_id: i for i, e in enumerate(entries)}
        if len(slot) != n:
            raise InvalidInputError("entries", n, "item ids must be unique")
        cat_codes: dict[str, int] = {}
        seller_codes: dict[str, int] = {}
        cats = np.fromiter((self._code(cat_codes, e.category) for e in entries), np.int32, n)
        sellers = np.fromiter((self._code(seller_codes, e.seller_id) for e in entries), np.int32, n)
        capacity = max(n, 1)
        with self._lock:
            self._dim = int(matrix.shape[1]) if n else self._dim
            self._capacity = capacity
            self._n = n
            self._matrix = matrix if n else np.zeros((1, self._dim or 1), dtype=np.float32)
            self._cat = cats if n else np.zeros(1, dtype=np.int32)
            self._seller = sellers if n else np.zeros(1, dtype=np.int32)
            self._entries = list(entries) if n else [None]
            self._slot = slot
            self._cat_codes = cat_codes
            self._seller_codes = seller_codes

    # -- search ---------------------------------------------------------------------------------
    def _scores(self, q: NDArray[np.float32], n: int) -> NDArray[np.float32]:
        """``matrix[:n] @ q``: BLAS gemv when BLAS is single-threaded, else numpy's own kernel.

        A multi-threaded OpenBLAS gemv over the whole matrix is 10-100x slower on a busy machine
        (threads spin for cores the serving process does not have), and splitting it into blocks
        small enough to stay single-threaded costs a call per 64 rows; ``einsum`` does the product in
        one single-threaded pass (~0.3 ms for 10,000 x 128) without touching process-wide BLAS settings;
        a single-threaded gemv takes ~0.1 ms.
        """
        if self._gemv is None:
            self._gemv = blas_single_threaded()
        if self._gemv:
            product: NDArray[np.float32] = self._matrix[:n] @ q
            return product
        out: NDArray[np.float32] = np.einsum("ij,j->i", self._matrix[:n], q)
        return out

    def _top(
        self, query: NDArray[np.float32], k: int, filters: PoolFilter | None
    ) -> tuple[NDArray[np.intp], NDArray[np.float32]]:
        """Slots and scores of the top-``k`` matching items, best first (call under the lock)."""
        if isinstance(k, bool) or not isinstance(k, int | np.integer) or k < 1:
            raise InvalidInputError("k", k, "must be an integer >= 1")
        n = self._n
        if n == 0:
            return np.zeros(0, dtype=np.intp), np.zeros(0, dtype=np.float32)
        q = self._check_vector(query, "query")
        scores = self._scores(q, n)
        cand: NDArray[np.intp] | None = None
        if filters is not None and (filters.categories or filters.sellers or filters.exclude_item_ids):
            ok = np.ones(n, dtype=bool)
            if filters.categories:
                codes = [self._cat_codes[c] for c in filters.categories if c in self._cat_codes]
                ok &= np.isin(self._cat[:n], codes)
            if filters.sellers:
                codes = [self._seller_codes[s] for s in filters.sellers if s in self._seller_codes]
                ok &= np.isin(self._seller[:n], codes)
            for item_id in filters.exclude_item_ids:
                slot = self._slot.get(item_id)
                if slot is not None:
                    ok[slot] = False
            cand = np.flatnonzero(ok)
            scores = scores[cand]
        m = scores.shape[0]
        if m == 0:
            return np.zeros(0, dtype=np.intp), np.zeros(0, dtype=np.float32)
        kk = min(int(k), m)
        if kk < m:
            top = np.argpartition(-scores, kk - 1)[:kk]
            top = top[np.lexsort((top, -scores[top]))]
        else:
            top = np.lexsort((np.arange(m), -scores))
        slots = top if cand is None else cand[top]
        return slots, scores[top]

    def search(self, query: NDArray[np.float32], k: int, filters: PoolFilter | None = None) -> list[PoolHit]:
        """Top-``k`` items by inner product with ``query`` (shape ``(dim,)``), best first.

        Ties are broken by slot order. Fewer than ``k`` hits are returned when fewer items match.
        """
        with self._lock:
            slots, scores = self._top(query, k, filters)
            entries = self._entries
            return [
                PoolHit(item_id=entries[s].item_id, score=float(sc))  # type: ignore[union-attr]
                for s, sc in zip(slots.tolist(), scores.tolist(), strict=True)
            ]

    def search_ids(
        self, query: NDArray[np.float32], k: int, filters: PoolFilter | None = None
    ) -> tuple[list[str], NDArray[np.float64]]:
        """:meth:`search` as ``(item_ids, scores)`` (no :class:`PoolHit` objects)."""
        with self._lock:
            slots, scores = self._top(query, k, filters)
            entries = self._entries
            return [entries[s].item_id for s in slots.tolist()], scores.astype(np.float64)  # type: ignore[union-attr]

    def search_candidates(
        self, query: NDArray[np.float32], k: int, filters: PoolFilter | None = None
    ) -> PoolCandidates:
        """:meth:`search` with the hits' entries and vectors, read by slot (no id lookup)."""
        with self._lock:
            slots, scores = self._top(query, k, filters)
            return self.candidates_at(slots, scores)

    def candidates_at(self, slots: NDArray[np.intp], scores: NDArray[np.floating]) -> PoolCandidates:
        """The entries and vectors of matrix rows ``slots`` (best first, from a search of this pool
        or of a graph over its rows) as :class:`PoolCandidates`."""
        with self._lock:
            entries = self._entries
            return PoolCandidates(
                [entries[s] for s in slots.tolist()],  # type: ignore[misc]
                scores.astype(np.float64),
                self._matrix[slots],
            )
