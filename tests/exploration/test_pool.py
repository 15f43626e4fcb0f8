"""The cold-pool index: exact results against brute force, filters, remove/slot reuse, threads, rebuild."""

from __future__ import annotations

import itertools
import threading
from datetime import UTC, datetime

import numpy as np
import pytest

from coldstart.errors import InvalidInputError
from exploration.pool import (
    CandidatePool,
    ExactPool,
    ExactPoolConfig,
    ItemPools,
    PoolEntry,
    PoolFilter,
    build_pool,
    entry_from_item,
)
from feature_repo.records import StoredItem
from feature_repo.testing import random_items

DIM = 16


def entries(n: int, rng: np.random.Generator, start: int = 0) -> list[PoolEntry]:
    return [
        PoolEntry(
            item_id=f"i{i}",
            vector=rng.standard_normal(DIM).astype(np.float32),
            category=f"c{i % 4}",
            seller_id=f"s{i % 7}",
        )
        for i in range(start, start + n)
    ]


def brute(es: list[PoolEntry], q: np.ndarray, k: int, keep=lambda e: True) -> list[tuple[str, float]]:
    scored = [(e.item_id, float(np.dot(e.vector, q))) for e in es if keep(e)]
    scored.sort(key=lambda t: -t[1])
    return scored[:k]


def check(pool: CandidatePool, es: list[PoolEntry], q: np.ndarray, k: int, f=None, keep=lambda e: True):
    hits = pool.search(q, k, f)
    want = brute(es, q, k, keep)
    assert [h.item_id for h in hits] == [w[0] for w in want]
    np.testing.assert_allclose([h.score for h in hits], [w[1] for w in want], rtol=1e-5, atol=1e-5)


def test_search_matches_brute_force() -> None:
    rng = np.random.default_rng(0)
    es = entries(2000, rng)
    pool = build_pool()
    assert isinstance(pool, ExactPool)
    pool.upsert(es)
    assert len(pool) == 2000
    for _ in range(20):
        q = rng.standard_normal(DIM).astype(np.float32)
        for k in (1, 10, 100):
            check(pool, es, q, k)
    check(pool, es, q, 5000)  # k larger than the pool: everything, sorted


def test_single_threaded_blas_scores_with_gemv_and_matches_brute_force() -> None:
    from threadpoolctl import threadpool_limits

    from exploration.pool.exact import blas_single_threaded

    rng = np.random.default_rng(1)
    es = entries(3000, rng)
    pool, default = ExactPool(), ExactPool()  # made before the limits: the choice waits for a search
    pool.upsert(es)
    default.upsert(es)
    with threadpool_limits(1, user_api="blas"):
        assert blas_single_threaded()
        pool.search(rng.standard_normal(DIM).astype(np.float32), 1)
    default.search(rng.standard_normal(DIM).astype(np.float32), 1)
    assert pool._gemv and default._gemv is blas_single_threaded()
    for _ in range(10):
        q = rng.standard_normal(DIM).astype(np.float32)
        for k in (1, 10, 100):
            check(pool, es, q, k)
        assert [h.item_id for h in pool.search(q, 50)] == [h.item_id for h in default.search(q, 50)]


def test_filters_categories_sellers_and_exclusions() -> None:
    rng = np.random.default_rng(1)
    es = entries(500, rng)
    pool = ExactPool()
    pool.upsert(es)
    q = rng.standard_normal(DIM).astype(np.float32)
    check(pool, es, q, 20, PoolFilter(categories=("c1",)), lambda e: e.category == "c1")
    check(
        pool,
        es,
        q,
        20,
        PoolFilter(categories=("c1", "c2"), sellers=("s3",)),
        lambda e: e.category in ("c1", "c2") and e.seller_id == "s3",
    )
    top = [h.item_id for h in pool.search(q, 5)]
    excl = frozenset([*top[:3], "not-in-pool"])
    check(pool, es, q, 10, PoolFilter(exclude_item_ids=excl), lambda e: e.item_id not in excl)
    assert pool.search(q, 10, PoolFilter(categories=("unknown",))) == []
    # a filter that matches fewer than k items returns them all
    few = pool.search(q, 100, PoolFilter(categories=("c0",), sellers=("s0",)))
    assert len(few) == sum(1 for e in es if e.category == "c0" and e.seller_id == "s0")


def test_upsert_replaces_and_remove_reuses_slots() -> None:
    rng = np.random.default_rng(2)
    es = entries(300, rng)
    pool = ExactPool(dim=DIM, initial_capacity=8)  # forces growth
    pool.upsert(es)
    pool.upsert(es[:50])  # idempotent
    assert len(pool) == 300
    moved = PoolEntry("i5", rng.standard_normal(DIM).astype(np.float32) * 100, category="c9")
    pool.upsert([moved])
    live = {e.item_id: e for e in es}
    live["i5"] = moved
    q = moved.vector / np.linalg.norm(moved.vector)
    assert pool.search(q, 1)[0].item_id == "i5"
    gone = [f"i{i}" for i in range(0, 300, 3)] + ["never-there"]
    pool.remove(gone)
    for g in gone:
        live.pop(g, None)
    assert len(pool) == len(live) == 200
    assert "i3" not in pool and "i4" in pool and pool.get("i5") == moved
    some = ["i5", "i298", "i4", "i1"]  # rows moved by removals and by the replacement included
    got = pool.vectors(some)
    assert got is not None and got.dtype == np.float32 and got.shape == (4, DIM)
    np.testing.assert_array_equal(got, np.stack([live[i].vector for i in some]))
    got[0] = 0.0  # a copy: the pool's row is untouched
    np.testing.assert_array_equal(pool.vectors(["i5"]), moved.vector[None, :])
    assert pool.vectors(["i4", "i3"]) is None  # i3 was removed
    for _ in range(5):
        q = rng.standard_normal(DIM).astype(np.float32)
        check(pool, list(live.values()), q, 50)
    cap = pool._capacity
    pool.upsert(entries(100, rng, start=1000))  # reuses the freed slots: no growth
    assert pool._capacity == cap and len(pool) == 300
    pool.remove(pool.ids())
    assert len(pool) == 0 and pool.search(q, 5) == []


def test_invalid_input_is_rejected_and_changes_nothing() -> None:
    rng = np.random.default_rng(3)
    pool = ExactPool(dim=DIM)
    pool.upsert(entries(10, rng))
    bad = PoolEntry("bad", np.full(DIM, np.nan, dtype=np.float32))
    with pytest.raises(InvalidInputError, match="vector"):
        pool.upsert([*entries(5, rng, start=100), bad])
    assert len(pool) == 10
    with pytest.raises(InvalidInputError, match="shape"):
        pool.upsert([PoolEntry("short", np.ones(3, dtype=np.float32))])
    with pytest.raises(InvalidInputError, match="query"):
        pool.search(np.ones(3, dtype=np.float32), 5)
    with pytest.raises(InvalidInputError, match="k="):
        pool.search(np.ones(DIM, dtype=np.float32), 0)


def test_concurrent_writers_and_readers() -> None:
    rng = np.random.default_rng(4)
    base = entries(1000, rng)
    pool = ExactPool(dim=DIM, initial_capacity=16)
    pool.upsert(base)
    errors: list[BaseException] = []
    q = rng.standard_normal(DIM).astype(np.float32)

    def writer(w: int) -> None:
        try:
            r = np.random.default_rng(100 + w)
            for j in range(200):
                es = entries(5, r, start=10_000 * (w + 1) + 5 * j)
                pool.upsert(es)
                pool.remove([es[0].item_id, es[1].item_id])
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    def reader() -> None:
        try:
            for _ in range(300):
                hits = pool.search(q, 20, PoolFilter(categories=("c1", "c2")))
                assert len(hits) == 20
                assert all(a.score >= b.score for a, b in itertools.pairwise(hits))
                assert len({h.item_id for h in hits}) == 20
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=writer, args=(w,)) for w in range(3)]
    threads += [threading.Thread(target=reader) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert not errors, errors[0]
    assert len(pool) == 1000 + 3 * 200 * 3
    assert sorted(pool.ids()) == sorted(set(pool.ids()))


class _ListStore:
    """A FeatureStore stand-in that only serves ``iter_items`` (rebuild reads nothing else)."""

    def __init__(self, items: list[StoredItem]) -> None:
        self.items = items

    def iter_items(self):  # type: ignore[no-untyped-def]
        return iter(self.items)


def _items(n: int, rng: np.random.Generator) -> list[StoredItem]:
    return random_items(
        n,
        seed=rng,
        prefix="it",
        dim=DIM,
        content_dim=12,
        listed_at=datetime(2026, 1, 1, tzinfo=UTC),
        categories=2,
        statuses=("cold", "warming", "warm", "graduated"),
    )


def test_rebuild_from_a_store_in_both_spaces() -> None:
    rng = np.random.default_rng(5)
    items = _items(40, rng)
    store = _ListStore(items)
    pool = ExactPool()
    pool.upsert([PoolEntry("stale", np.ones(DIM, dtype=np.float32))])
    assert pool.rebuild_from_store(store, space="item") == 30  # type: ignore[arg-type]
    assert "stale" not in pool and "it-i3" not in pool  # graduated items are not in the cold pool
    cold = [entry_from_item(it, "item") for it in items if it.status != "graduated"]
    check(pool, cold, rng.standard_normal(DIM).astype(np.float32), 10)

    pools = ItemPools()
    assert pools.rebuild_from_store(store) == 30  # type: ignore[arg-type]
    assert pools.content.search(items[0].content_vector, 1)[0].item_id == "it-i0"
    assert pools.pool("item").search(items[1].item_vector, 1)[0].item_id == "it-i1"
    # a graduated update leaves both pools
    import dataclasses

    pools.upsert_items([dataclasses.replace(items[0], status="graduated")])
    assert "it-i0" not in pools.item and "it-i0" not in pools.content  # type: ignore[operator]


def test_config_selects_the_implementation() -> None:
    pool = build_pool(ExactPoolConfig(dim=4, initial_capacity=2))
    assert isinstance(pool, ExactPool) and pool.dim == 4
    with pytest.raises(ValueError, match="extra"):
        ExactPoolConfig.model_validate({"type": "exact", "unknown": 1})
    with pytest.raises(ValueError):
        ExactPoolConfig.model_validate({"type": "faiss"})


def test_rebuild_skips_rows_of_another_dimension(caplog: pytest.LogCaptureFixture) -> None:
    rng = np.random.default_rng(6)
    good = entries(20, rng)
    odd = [PoolEntry("old-encoder", np.ones(DIM // 2, dtype=np.float32))]
    pool = ExactPool()
    with caplog.at_level("WARNING"):
        pool.replace_all(odd + good)
    assert len(pool) == 20 and "old-encoder" not in pool and pool.dim == DIM
    assert "skipped 1 of 21" in caplog.text and "old-encoder" in caplog.text
    fixed = ExactPool(dim=DIM // 2)  # a configured dimension wins over the majority
    fixed.replace_all(odd + good)
    assert fixed.ids() == ["old-encoder"]
    with pytest.raises(InvalidInputError):  # the stream path stays strict
        pool.upsert(odd)


def test_search_ids_is_search_as_arrays() -> None:
    rng = np.random.default_rng(5)
    es = entries(500, rng)
    pool = build_pool()
    pool.upsert(es)
    f = PoolFilter(categories=("c1", "c2"), exclude_item_ids=frozenset({"i1", "i2", "i5"}))
    for filt in (None, f):
        q = rng.standard_normal(DIM).astype(np.float32)
        hits = pool.search(q, 30, filt)
        ids, scores = pool.search_ids(q, 30, filt)
        assert ids == [h.item_id for h in hits]
        assert scores.dtype == np.float64 and scores.tolist() == [h.score for h in hits]
        found = pool.search_candidates(q, 30, filt)  # the same hits, entries and vectors read by slot
        assert found.item_ids == ids and found.scores.tolist() == scores.tolist()
        assert found.entries == [pool.get(i) for i in ids]
        np.testing.assert_array_equal(found.vectors, pool.vectors(ids))
    empty = build_pool()
    ids, scores = empty.search_ids(np.zeros(DIM, dtype=np.float32), 3)
    assert ids == [] and scores.shape == (0,)
