"""The approximate cold pool (FAISS HNSW parts): recall against exact search, filters, writes, rebuild."""

from __future__ import annotations

import dataclasses

import faiss
import numpy as np
import pytest

from coldstart.errors import InvalidInputError
from exploration.pool import (
    ExactPool,
    HnswPool,
    HnswPoolConfig,
    PoolEntry,
    PoolFilter,
    build_pool,
)
from exploration.pool.hnsw_graph import Graph

DIM = 16


def clustered(n: int, seed: int, start: int = 0, categories: int = 4, sellers: int = 7) -> list[PoolEntry]:
    rng = np.random.default_rng(seed)
    centres = np.random.default_rng(99).standard_normal((30, DIM))
    out = []
    for i in range(start, start + n):
        v = centres[rng.integers(30)] + 0.5 * rng.standard_normal(DIM)
        out.append(
            PoolEntry(
                f"i{i}", v.astype(np.float32), category=f"c{i % categories}", seller_id=f"s{i % sellers}"
            )
        )
    return out


def recall(
    approx: HnswPool, exact: ExactPool, queries: np.ndarray, k: int, f: PoolFilter | None = None
) -> float:
    got = []
    for q in queries:
        want = set(exact.search_ids(q, k, f)[0])
        ids = approx.search_ids(q, k, f)[0]
        assert len(ids) == len(set(ids)) == min(k, len(want))
        got.append(len(set(ids) & want) / max(len(want), 1))
    return float(np.mean(got))


@pytest.fixture(scope="module", params=["sq8", "flat"])
def pools(request: pytest.FixtureRequest) -> tuple[HnswPool, ExactPool, list[PoolEntry]]:
    es = clustered(3000, seed=1)
    approx = HnswPool(
        graph_min=500, storage=request.param
    )  # the whole pool and each category part get a graph
    exact = ExactPool()
    for start in range(0, len(es), 500):  # streamed in batches, as the pool feed does
        approx.upsert(es[start : start + 500])
        exact.upsert(es[start : start + 500])
    return approx, exact, es


def test_graph_search_recalls_the_exact_top_k(pools: tuple[HnswPool, ExactPool, list[PoolEntry]]) -> None:
    approx, exact, _ = pools
    assert approx._all.graph is not None and approx._by_category["c1"].graph is not None
    queries = np.random.default_rng(5).standard_normal((40, DIM)).astype(np.float32)
    assert recall(approx, exact, queries, 50) >= 0.95
    one_category = PoolFilter(categories=("c1",))
    assert recall(approx, exact, queries, 50, one_category) >= 0.95
    # scores are the exact inner products of the returned items
    ids, scores = approx.search_ids(queries[0], 10)
    np.testing.assert_allclose(scores, approx.vectors(ids) @ queries[0], rtol=1e-5, atol=1e-5)  # type: ignore[operator]


def test_small_parts_and_combined_filters_are_exact(
    pools: tuple[HnswPool, ExactPool, list[PoolEntry]],
) -> None:
    approx, exact, _es = pools
    q = np.random.default_rng(6).standard_normal(DIM).astype(np.float32)
    excluded = frozenset(exact.search_ids(q, 5, PoolFilter(sellers=("s2",)))[0][:3])
    for f in (
        PoolFilter(sellers=("s2",)),  # 428 items: below graph_min, searched exactly
        PoolFilter(sellers=("s2", "s3"), categories=("c1",), exclude_item_ids=excluded),
        PoolFilter(categories=("c1", "c2"), exclude_item_ids=excluded),
        PoolFilter(categories=("nope",)),
    ):
        if f.categories == ("c1", "c2"):
            assert recall(approx, exact, q[None], 30, f) >= 0.9
            assert not set(approx.search_ids(q, 30, f)[0]) & excluded
        else:
            assert approx.search_ids(q, 30, f)[0] == exact.search_ids(q, 30, f)[0]


@pytest.mark.parametrize("storage", ["sq8", "flat"])
def test_writes_move_replace_and_remove_items(storage: str) -> None:
    # unit vectors: an item is its own best match
    es = [
        PoolEntry(e.item_id, e.vector / np.linalg.norm(e.vector), e.category, e.seller_id)
        for e in clustered(800, seed=2)
    ]
    pool = HnswPool(graph_min=100, rebuild_ratio=0.3, storage=storage)  # type: ignore[arg-type]
    pool.upsert(es)
    q = es[10].vector * 10
    assert pool.search_ids(q, 1)[0] == ["i10"]
    # the periodic full sync re-sends unchanged items (and the learner re-announces items whose
    # counters changed): no graph work, no tombstones, the same graphs (they were once rebuilt)
    assert pool._all.graph is not None
    graphs = [p.graph for p in (pool._all, *pool._by_category.values())]
    rows = len(pool._all.graph.rows)
    pool.upsert(es)
    pool.upsert([dataclasses.replace(e, category=e.category) for e in es[:50]])
    assert [p.graph for p in (pool._all, *pool._by_category.values())] == graphs
    assert len(pool._all.graph.rows) == rows and pool._all.graph.dead == 0
    # replace: a new vector and a new category; the old row is a tombstone, never returned
    moved = PoolEntry("i10", -es[10].vector, category="c9", seller_id="s1")
    pool.upsert([moved])
    assert "i10" not in pool.search_ids(q, 20)[0]
    assert pool.search_ids(-q, 1, PoolFilter(categories=("c9",)))[0] == ["i10"]
    assert "i10" not in pool.search_ids(q, 50, PoolFilter(categories=(es[10].category,)))[0]
    pool.remove(["i10", "unknown"])
    assert "i10" not in pool and pool.search_ids(-q, 5, PoolFilter(categories=("c9",)))[0] == []
    # many replacements: the graph is rebuilt from live vectors, tombstones go away
    graph_before = pool._all.graph
    pool.upsert([PoolEntry(e.item_id, e.vector * 1.01, e.category, e.seller_id) for e in es[:600]])
    assert pool._all.graph is not graph_before and pool._all.graph is not None
    assert pool._all.graph.dead < 0.3 * len(pool._all.graph.rows)
    assert len(pool) == 800  # i10 came back with the batch


@pytest.mark.parametrize("storage", ["sq8", "flat"])
def test_graph_rows_keep_pointing_at_their_items_rows_through_writes(storage: str) -> None:
    """A search re-ranks through each graph row's exact row: after replacements, removals (which move
    the exact part's last row into the freed one), inserts and rebuilds, every live graph row still
    points at its own item, and scores are the exact ones."""
    rng = np.random.default_rng(8)
    es = clustered(600, seed=3)
    pool = HnswPool(graph_min=100, rebuild_ratio=0.3, storage=storage)  # type: ignore[arg-type]
    pool.upsert(es)
    live = {e.item_id: e for e in es}
    for step in range(12):
        gone = [str(i) for i in rng.choice(sorted(live), size=25, replace=False)]
        pool.remove(gone)
        for i in gone:
            del live[i]
        changed = [
            PoolEntry(i, live[i].vector + 0.1, live[i].category, live[i].seller_id)
            for i in rng.choice(sorted(live), size=20, replace=False)
        ]
        added = clustered(30, seed=100 + step, start=1000 + 30 * step)
        pool.upsert([*changed, *added])
        live.update({e.item_id: e for e in (*changed, *added)})
        for _, _, part in pool._parts():
            if part.graph is None:
                continue
            by_slot = part.exact.ids()
            for item_id, row in part.graph.row_of.items():
                assert by_slot[part._slot_of_row[row]] == item_id
        q = rng.standard_normal(DIM).astype(np.float32)
        ids, scores = pool.search_ids(q, 20)
        want = np.stack([live[i].vector for i in ids]) @ q
        np.testing.assert_allclose(scores, want, rtol=1e-5, atol=1e-4)
    assert len(pool) == len(live)


def test_invalid_input_changes_nothing_and_rebuild_skips_bad_rows() -> None:
    pool = HnswPool(dim=DIM, graph_min=10)
    es = clustered(50, seed=3)
    pool.upsert(es)
    with pytest.raises(InvalidInputError):
        pool.upsert([PoolEntry("bad", np.full(DIM, np.nan, dtype=np.float32))])
    with pytest.raises(InvalidInputError):
        pool.search_ids(np.zeros(DIM + 1, dtype=np.float32), 5)
    with pytest.raises(InvalidInputError):
        pool.search_ids(es[0].vector, 0)
    assert "bad" not in pool and len(pool) == 50
    odd = PoolEntry("odd", np.ones(DIM + 3, dtype=np.float32))
    pool.replace_all([*es[:20], odd])
    assert len(pool) == 20 and "odd" not in pool and pool.search_ids(es[0].vector * 5, 1)[0] == ["i0"]


def test_config_selects_the_approximate_pool() -> None:
    pool = build_pool(HnswPoolConfig(dim=DIM, ef_search=64))
    assert isinstance(pool, HnswPool) and pool.ef_search == 64
    with pytest.raises(ValueError):
        HnswPoolConfig.model_validate({"type": "hnsw", "m": 2})


def test_settings_choose_the_pool_of_the_api() -> None:
    from coldstart.settings import Settings
    from exploration.pool import build_pool

    settings = Settings(exploration={"pool": {"type": "hnsw", "ef_search": 64}})  # type: ignore[arg-type]
    pool = build_pool(settings.exploration.pool)
    assert isinstance(pool, HnswPool) and pool.ef_search == 64
    assert isinstance(build_pool(Settings().exploration.pool), ExactPool)


def test_sq8_graphs_find_items_outside_their_code_range() -> None:
    """An 8-bit graph codes each dimension within the range its build saw (widened by 20%); an item
    streamed in later far outside it is clipped in the graph, and still found and scored exactly."""
    es = [PoolEntry(e.item_id, e.vector, e.category, e.seller_id) for e in clustered(600, seed=8)]
    pool = HnswPool(graph_min=100, storage="sq8")
    pool.upsert(es)
    assert pool._all.graph is not None and pool._all.graph.storage == "sq8"
    far = np.zeros(DIM, dtype=np.float32)
    far[3] = 100.0  # ~30x the largest value the build saw
    pool.upsert([PoolEntry("far", far, "c1", "s1"), PoolEntry("far2", -far, "c2", "s2")])
    for q, want in ((far, "far"), (-far, "far2")):
        ids, scores = pool.search_ids(q, 3)
        assert ids[0] == want and scores[0] == pytest.approx(float(far @ far), rel=1e-6)
        assert pool.search_ids(q, 1, PoolFilter(categories=("c1" if want == "far" else "c2",)))[0] == [want]


def test_a_waiting_writer_goes_before_later_searches() -> None:
    """Searches that come after a waiting upsert wait for it: request threads that search without
    pause cannot starve the stream's upserts (with a plain lock the searcher re-takes it first)."""
    import threading
    import time

    pool = HnswPool(graph_min=10)
    order: list[str] = []
    first_search_in, release_first = threading.Event(), threading.Event()

    def first_search() -> None:
        with pool._lock.read():
            first_search_in.set()
            release_first.wait(10)
        order.append("search 1")

    def writer() -> None:
        with pool._lock.write():
            order.append("write")

    def later_search() -> None:
        with pool._lock.read():
            order.append("search 2")

    threads = [threading.Thread(target=first_search)]
    threads[0].start()
    assert first_search_in.wait(10)
    threads.append(threading.Thread(target=writer))
    threads[1].start()
    while pool._lock._gate.acquire(blocking=False):  # until the writer holds the gate (and waits)
        pool._lock._gate.release()
        time.sleep(0.001)
    threads.append(threading.Thread(target=later_search))
    threads[2].start()
    time.sleep(0.05)  # the later search has arrived (it is blocked behind the writer)
    assert order == []
    release_first.set()
    for t in threads:
        t.join(10)
    assert order == ["search 1", "write", "search 2"]


@pytest.mark.parametrize("storage", ["sq8", "flat"])
def test_reordered_graph_keeps_its_results_and_puts_neighbours_near(storage: str) -> None:
    es = clustered(3000, seed=4)
    order = np.random.default_rng(4).permutation(len(es))  # built in an order unrelated to the graph
    ids = [es[i].item_id for i in order]
    graph = Graph(DIM, 16, 64, 64, 32, storage)
    graph.add(ids, np.stack([es[i].vector for i in order]))
    graph.drop(ids[::10])  # tombstones move with their rows
    queries = np.random.default_rng(6).standard_normal((20, DIM)).astype(np.float32)

    def results() -> list[list[str]]:
        return [[graph.rows[r] for r in graph.search_rows(q, 30)[0].tolist()] for q in queries]

    def near() -> float:  # share of bottom-layer links to a row at most 100 rows away
        h = graph.index.hnsw
        links = faiss.vector_to_array(h.neighbors)
        starts = faiss.vector_to_array(h.offsets).astype(np.int64)[: len(ids)]
        nb = links[starts[:, None] + np.arange(h.nb_neighbors(0))]
        rows = np.broadcast_to(np.arange(len(ids))[:, None], nb.shape)
        return float((np.abs(nb - rows)[nb >= 0] <= 100).mean())

    before, near_before, dead = results(), near(), graph.dead
    perm = graph.reorder()
    assert sorted(perm.tolist()) == list(range(len(ids)))
    assert results() == before
    assert graph.dead == dead and set(graph.row_of) == set(ids) - set(ids[::10])
    assert all(graph.rows[r] == i for i, r in graph.row_of.items())
    assert near() > 1.5 * near_before  # about 2x here (random order: 100 / 3000 x 2)


def test_pool_graphs_are_built_reordered_and_serve_the_right_rows() -> None:
    es = clustered(2000, seed=8)
    pool, exact = HnswPool(graph_min=500, storage="flat"), ExactPool()
    pool.upsert(es)
    exact.upsert(es)
    graph = pool._all.graph
    assert graph is not None and graph.rows != [e.item_id for e in es]  # renumbered at the build
    for q in np.random.default_rng(9).standard_normal((10, DIM)).astype(np.float32):
        found = pool.search_candidates(q, 20)
        np.testing.assert_array_equal(found.vectors, exact.vectors(found.item_ids))
        assert [e.item_id for e in found.entries] == found.item_ids
        np.testing.assert_allclose(found.scores, found.vectors @ q, rtol=1e-5, atol=1e-5)
