"""Pacing at marketplace sizes: what a slot request and the pool's churn cost the exposure pacer.

Prints one JSON object for ``--items`` tracked items (listed uniformly over the last 20 hours, the
default ``PacingConfig``):

- ``most_starving_p50_ms`` / ``_p99_ms``: ``most_starving(100)`` as the slot service calls it (every
  tenth call for an unknown user, ``only_behind=False``), each call followed by 3 of its items served
  (pacing serves the earliest deadlines first), ``--requests`` calls, the last half timed;
- ``category_p50_ms`` / ``_p99_ms`` and ``seller_p50_ms`` / ``_p99_ms``: the same calls restricted to
  one category (5% of the items: 20 categories) or one seller (0.2%: 500 sellers), as a request with
  a category or seller filter makes them, 200 calls each after the unrestricted ones;
- ``graduation_pass_ms``: ``graduations()`` when nothing graduates (what a replica runs every
  ``graduation_interval_s``, under the lock its requests take), median of 20, against
  ``graduation_full_check_ms``: the same check over every tracked row (the baseline);
- ``new_items_ms``: 20 new items registered, then one ``most_starving`` call (a pool sync), median of 5;
- ``graduations_ms``: 200 items forgotten, then one call (a graduation pass), median of 5.

    flock /tmp/bench.lock .venv/bin/python benchmarks/pacing.py [--items 1000000] [--requests 12000]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from exploration.config import PacingConfig
from exploration.pacing import ExposurePacer


def _ms(fn: Callable[[], object]) -> float:
    t = time.perf_counter()
    fn()
    return (time.perf_counter() - t) * 1e3


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--items", type=int, default=1_000_000)
    ap.add_argument("--requests", type=int, default=12_000)
    args = ap.parse_args()
    rng = np.random.default_rng(0)
    now = time.time()
    listed = now - rng.uniform(0.0, 20.0, args.items) * 3600.0
    pacer = ExposurePacer(PacingConfig())
    for i in range(args.items):
        pacer.register(f"item-{i}", float(listed[i]), category=f"cat-{i % 20}", seller_id=f"seller-{i % 500}")
    times = []
    for r in range(args.requests):
        t = time.perf_counter()
        ids = pacer.most_starving(100, now_s=now, only_behind=r % 10 != 0)
        times.append((time.perf_counter() - t) * 1e3)
        pacer.record_impressions(ids[:3], now_s=now)
    timed = np.asarray(times[len(times) // 2 :])
    restricted: dict[str, list[float]] = {"category": [], "seller": []}
    for r in range(200):
        for kind, out in restricted.items():
            cats, sellers = ([f"cat-{r % 20}"], []) if kind == "category" else ([], [f"seller-{r % 500}"])
            t = time.perf_counter()
            ids = pacer.most_starving(
                100, now_s=now, categories=cats, sellers=sellers, only_behind=r % 10 != 0
            )
            out.append((time.perf_counter() - t) * 1e3)
            pacer.record_impressions(ids[:3], now_s=now)
    full = [_ms(lambda: pacer._ranked(100, now, None, (), True)) for _ in range(20)]
    c = pacer.config

    def full_check() -> None:
        size = len(pacer)
        evidence = (pacer._imps[:size] >= c.graduate_impressions) & (
            pacer._clicks[:size] >= c.graduate_clicks
        )
        np.flatnonzero(evidence | ((now - pacer._listed[:size]) > c.max_age_hours * 3600.0))

    graduation = {
        "graduation_pass_ms": round(
            float(np.median([_ms(lambda: pacer.graduations(now)) for _ in range(20)])), 3
        ),
        "graduation_full_check_ms": round(float(np.median([_ms(full_check) for _ in range(20)])), 3),
    }
    nxt = args.items

    def new_items() -> None:
        nonlocal nxt
        for _ in range(20):
            pacer.register(f"item-{nxt}", now)
            nxt += 1
        pacer.most_starving(100, now_s=now)

    def graduations() -> None:
        pacer.forget([f"item-{j}" for j in rng.integers(0, args.items, 200).tolist()])
        pacer.most_starving(100, now_s=now)

    out = {
        "items": args.items,
        "requests": args.requests,
        "impressions_served": 3 * args.requests,
        "most_starving_p50_ms": round(float(np.median(timed)), 3),
        "most_starving_p99_ms": round(float(np.percentile(timed, 99)), 3),
        **{
            f"{kind}_{q}_ms": round(float(np.percentile(ms, p)), 3)
            for kind, ms in restricted.items()
            for q, p in (("p50", 50), ("p99", 99))
        },
        "full_ranking_p50_ms": round(float(np.median(full)), 3),
        "ratio_p99_vs_full_ranking": round(float(np.percentile(timed, 99) / np.median(full)), 4),
        **graduation,
        "new_items_ms": round(float(np.median([_ms(new_items) for _ in range(5)])), 2),
        "graduations_ms": round(float(np.median([_ms(graduations) for _ in range(5)])), 2),
    }
    print(json.dumps(out))


if __name__ == "__main__":
    main()
