"""Cold-pool index speed: top-k search over N items, with and without filters, vs a naive baseline.

Prints one JSON object. The baseline, measured in the same run, is a full ``np.argsort`` of the scores
of a freshly stacked matrix (what a non-indexed implementation would do per request); ``speedup`` is
baseline / pool for the unfiltered search.

    .venv/bin/python benchmarks/pool.py [--items 10000] [--dim 64] [--k 100]
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np

from exploration.pool import ExactPool, PoolEntry, PoolFilter


def _pct(xs: list[float], q: float) -> float:
    return float(np.percentile(np.asarray(xs) * 1e3, q))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--items", type=int, default=10_000)
    ap.add_argument("--dim", type=int, default=64)
    ap.add_argument("--k", type=int, default=100)
    ap.add_argument("--queries", type=int, default=500)
    args = ap.parse_args()
    rng = np.random.default_rng(0)
    vecs = rng.standard_normal((args.items, args.dim)).astype(np.float32)
    entries = [
        PoolEntry(f"i{i}", vecs[i], category=f"c{i % 20}", seller_id=f"s{i % 500}") for i in range(args.items)
    ]
    pool = ExactPool(dim=args.dim)
    t = time.perf_counter()
    pool.upsert(entries)
    build_s = time.perf_counter() - t
    queries = rng.standard_normal((args.queries, args.dim)).astype(np.float32)

    def timed(fn) -> list[float]:  # type: ignore[no-untyped-def]
        out = []
        for q in queries:
            t0 = time.perf_counter()
            fn(q)
            out.append(time.perf_counter() - t0)
        return out

    plain = timed(lambda q: pool.search(q, args.k))
    filt = PoolFilter(categories=("c1", "c2", "c3"), exclude_item_ids=frozenset(f"i{i}" for i in range(50)))
    filtered = timed(lambda q: pool.search(q, args.k, filt))
    ids = [e.item_id for e in entries]

    def baseline(q: np.ndarray) -> list[str]:
        m = np.stack([e.vector for e in entries])
        s = m @ q
        return [ids[j] for j in np.argsort(-s)[: args.k]]

    base = timed(baseline)
    upserts = []
    for j in range(500):
        e = PoolEntry(f"new{j}", rng.standard_normal(args.dim).astype(np.float32))
        t0 = time.perf_counter()
        pool.upsert([e])
        pool.remove([e.item_id])
        upserts.append(time.perf_counter() - t0)
    print(
        json.dumps(
            {
                "items": args.items,
                "dim": args.dim,
                "k": args.k,
                "build_s": round(build_s, 4),
                "search_p50_ms": round(_pct(plain, 50), 4),
                "search_p99_ms": round(_pct(plain, 99), 4),
                "filtered_search_p50_ms": round(_pct(filtered, 50), 4),
                "filtered_search_p99_ms": round(_pct(filtered, 99), 4),
                "upsert_remove_p50_ms": round(_pct(upserts, 50), 4),
                "baseline_p50_ms": round(_pct(base, 50), 4),
                "speedup": round(_pct(base, 50) / _pct(plain, 50), 2),
            }
        )
    )


if __name__ == "__main__":
    main()
