"""Replay of a catalog's rating timeline through the running system: does exploration help cold items?

Prints ONE JSON object (a row per policy) and, with ``--write-doc``, the table of
docs/results/replay.md.

Protocol (documented in docs/results/replay.md):

* Catalog in the generic layout of the encoder issue (default: the MovieLens adapter output at
  ``.coldstart/catalogs/movielens``): ``items.csv`` + ``interactions.csv``.
* Time runs in *arrivals*: every ``--stride``-th rating event of the timeline is one user arrival;
  an item is listed at the arrival of its first rating and stays cold until it graduates.
* Reward of a slot = the user really rated that item >= 4 anywhere in the data set: an offline
  *simulator* built from real ratings (the full rating matrix is the ground truth), not Li et al.'s
  rejection-sampling replay, which needs uniformly random logs that MovieLens does not have.
* User vectors: mean of the item vectors of the items the user rated >= 4 *before* the arrival,
  written to the feature store before the user's request (unknown users: none).

``--mode e2e`` (default), per policy, on a fresh data directory and Tansu broker:

* ``coldstart stream encode`` (the encoder worker; artifact ``--artifact``) consumes ``ItemListed``
  events that the replay publishes on ``items.listed`` in order of first rating, writes the feature
  store and announces ``items.stored``, which the API's pool follows. The worker runs with its
  content-addressed vector cache on (``kafka.encode.vector_cache_dir``): a first step lists the
  whole catalog once (the first run ever encodes it, minutes on 2 cores; later runs hit the cache),
  so each policy's run re-lists unchanged content without re-encoding;
* ``coldstart api serve`` with the policy's settings (``COLDSTART_EXPLORATION__...``); each arrival is
  one ``POST /v1/exploration/slots`` over loopback HTTP, each rewarded slot one ``POST
  /v1/interactions`` (kind ``click``, with ``decision_id``/``position``) that lands on the
  ``interactions`` topic, where ``coldstart stream learn`` joins it to the logged decision (slots
  without a click get reward 0 when the 2 s reward window closes), learns and checkpoints; the API
  hot-reloads the model. The warm-up stage is off (the replay owns the user vectors);
* the API's clock is the wall clock: arrivals are sent at ``--rate`` per second, so pacing windows
  and ages (in arrivals here) are configured as ``arrivals / rate`` hours.

``--mode inprocess`` drives ``exploration.service.SlotService`` in this process (no Kafka, no HTTP,
learning after every arrival) with frozen text-tower features as item vectors: a quick check.

Policies: ``popular_warm`` (no exploration: the k most liked items that are no longer cold by age;
no API call), ``uniform`` (uniform over the cold pool), ``content_greedy`` (top user-item dot, no
exploration), ``epsilon_greedy`` (VW epsilon 0.1), ``ours`` (VW squarecb + exposure pacing:
deadline-aware candidate injection and pmf mixing, ``exploration/pacing.py``).

    flock /tmp/bench.lock .venv/bin/python benchmarks/replay.py [--mode e2e] [--stride 10] [--rate 25]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
import time
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from replay_e2e import catalog_listings, prime_cache, run_e2e

from exploration.config import (
    GreedyPolicyConfig,
    UniformPolicyConfig,
    VWPolicyConfig,
)
from exploration.simulator import (
    PolicySpec,
    ReplayConfig,
    feasibility,
    simulate,
)
from models.records import ItemContent


def item_vectors(catalog_dir: Path, images: bool) -> tuple[list[str], np.ndarray]:
    """Frozen pretrained content features of the catalog's items, L2-normalised (cached on disk)."""
    # deferred import: the encoder stack, torch
    from models.catalog import Catalog
    from models.features import extract_features

    catalog = Catalog.load(catalog_dir, check_images=False)
    contents = [it.content() for it in catalog.items]
    if not images:
        contents = [ItemContent(c.item_id, c.text, None) for c in contents]
    with contextlib.redirect_stdout(sys.stderr):  # the towers' packages print to stdout: keep it one JSON
        f = extract_features(
            contents, cache_dir=Path(".coldstart/cache/features"), progress=False, threads=1, runtime="torch"
        )
    text = np.asarray(f.text, dtype=np.float32)
    text /= np.maximum(np.linalg.norm(text, axis=1, keepdims=True), 1e-9)
    if not images:
        return [str(i) for i in f.item_ids], text
    image = np.asarray(f.image, dtype=np.float32)
    image /= np.maximum(np.linalg.norm(image, axis=1, keepdims=True), 1e-9)
    image[~np.asarray(f.image_ok)] = 0.0
    return [str(i) for i in f.item_ids], (np.concatenate([text, image], axis=1) / np.sqrt(2)).astype(
        np.float32
    )


def replay_config(args: argparse.Namespace) -> ReplayConfig:
    """The protocol of the command line (``ours``' strength adaptive unless ``--strength`` fixes it)."""
    return ReplayConfig(
        stride=args.stride,
        k=args.k,
        n_impressions=args.n_impressions,
        window=args.window,
        graduate_impressions=args.graduate_impressions,
        max_age=args.max_age,
        starving=args.starving,
        seed=args.seed,
        pacing_strength={
            "strength": args.strength,
            "min_strength": args.min_strength,
            "max_strength": args.max_strength,
            "safety": args.safety,
            "urgency_power": args.urgency_power,
        },
    )


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--mode", choices=["e2e", "inprocess"], default="e2e")
    ap.add_argument("--catalog", type=Path, default=Path(".coldstart/catalogs/movielens"))
    ap.add_argument("--stride", type=int, default=10, help="Every stride-th rating is an arrival.")
    ap.add_argument("--limit-arrivals", type=int, default=None, help="Stop after this many arrivals.")
    ap.add_argument("--k", type=int, default=5)
    ap.add_argument("--m", type=int, default=100)
    ap.add_argument("--n-impressions", type=int, default=5, help="Coverage goal N.")
    ap.add_argument("--window", type=float, default=1000, help="Coverage window T, in arrivals.")
    ap.add_argument("--graduate-impressions", type=int, default=20)
    ap.add_argument("--max-age", type=float, default=1500, help="Items age out after this many arrivals.")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument(
        "--strength", type=float, default=None, help="ours: fixed pacing strength (default: adaptive)."
    )
    ap.add_argument("--min-strength", type=float, default=0.05, help="ours: adaptive strength floor.")
    ap.add_argument("--max-strength", type=float, default=0.98, help="ours: adaptive strength ceiling.")
    ap.add_argument("--safety", type=float, default=4.0, help="ours: adaptive strength = safety x load.")
    ap.add_argument("--urgency-power", type=float, default=4.0, help="ours: q ~ urgency ** power.")
    ap.add_argument("--starving", type=int, default=20, help="ours: candidate places for starving items.")
    ap.add_argument("--policies", default="popular_warm,uniform,content_greedy,epsilon_greedy,ours")
    ap.add_argument("--images", action="store_true", help="inprocess: also use the image tower.")
    ap.add_argument("--rate", type=float, default=25.0, help="e2e: arrivals per second (wall clock).")
    ap.add_argument(
        "--artifact",
        type=Path,
        default=Path(".coldstart/artifacts-replay"),
        help="e2e: encoder artifact (root: newest) of `coldstart stream encode`.",
    )
    ap.add_argument("--vector-cache", type=Path, default=Path(".coldstart/cache/vectors"))
    ap.add_argument("--prime-timeout", type=float, default=1200.0)
    ap.add_argument("--write-doc", action="store_true")
    args = ap.parse_args()

    # deferred import: pandas
    import pandas as pd

    t0 = time.perf_counter()
    inter = pd.read_csv(args.catalog / "interactions.csv", dtype={"user_id": str, "item_id": str})
    inter = inter.sort_values("ts", kind="stable")
    events = list(zip(inter["user_id"], inter["item_id"], inter["value"].astype(float), strict=True))
    if args.limit_arrivals is not None:
        events = events[: args.limit_arrivals * args.stride]
    liked: dict[str, set[str]] = defaultdict(set)
    for u, i, v in events:
        if v >= 4.0:
            liked[u].add(i)
    specs = {
        "popular_warm": PolicySpec("popular_warm", None, args.m, False),
        "uniform": PolicySpec("uniform", UniformPolicyConfig(), 10_000, False),
        "content_greedy": PolicySpec("content_greedy", GreedyPolicyConfig(feature="dot"), args.m, False),
        "epsilon_greedy": PolicySpec(
            "epsilon_greedy", VWPolicyConfig(exploration="epsilon", epsilon=0.1), args.m, False
        ),
        "ours": PolicySpec("ours", VWPolicyConfig(), args.m, True),
    }
    rows = []
    prime: dict[str, Any] | None = None
    run: Callable[[PolicySpec], dict[str, Any]]
    if args.mode == "e2e":
        listings = catalog_listings(args.catalog)
        prime = prime_cache(args, listings)
        known = set(listings)

        def run(spec: PolicySpec) -> dict[str, Any]:
            return run_e2e(spec, events, liked, listings, args, replay_config(args))
    else:
        ids, mat = item_vectors(args.catalog, args.images)
        vectors = dict(zip(ids, mat, strict=True))
        known = set(vectors)

        def run(spec: PolicySpec) -> dict[str, Any]:
            return simulate(spec, events, vectors, liked, replay_config(args))

    for name in args.policies.split(","):
        t = time.perf_counter()
        row = run(specs[name])
        row["seconds"] = round(time.perf_counter() - t, 1)
        rows.append(row)
        print(json.dumps(row), file=sys.stderr)
    by = {r["policy"]: r for r in rows}
    ours, uni = by.get("ours"), by.get("uniform")
    summary = {
        "mode": args.mode,
        "catalog": str(args.catalog),
        "stride": args.stride,
        "arrivals": len(events) // args.stride,
        "k": args.k,
        "m": args.m,
        "coverage_n": args.n_impressions,
        "coverage_window_arrivals": args.window,
        "max_age_arrivals": args.max_age,
        "pacing": replay_config(args).pacing_strength,
        "starving_candidates": args.starving,
        "rate_arrivals_per_s": args.rate if args.mode == "e2e" else None,
        "feasibility": feasibility(events, known, replay_config(args)),
        "prime_cache": prime,
        "rows": rows,
        "ours_vs_uniform_cold_ctr": round(ours["cold_ctr"] / uni["cold_ctr"], 3)
        if ours and uni and uni["cold_ctr"]
        else None,
        "targets": {"ours_vs_uniform_cold_ctr": 1.25, "ours_coverage": 0.95},
        "seconds": round(time.perf_counter() - t0, 1),
        "load_avg": [round(x, 2) for x in os.getloadavg()],
    }
    print(json.dumps(summary))
    if args.write_doc:
        write_doc(summary)


def write_doc(summary: dict[str, Any]) -> None:
    """The generated part of docs/results/replay.md (the table); the prose is kept below a marker."""
    f = summary["feasibility"]
    lines = [
        "# Replay: exploration policies on a real rating timeline",
        "",
        f"Mode: **{summary['mode']}**. Command: `flock /tmp/bench.lock .venv/bin/python benchmarks/replay.py "
        "--write-doc` (protocol in the script's docstring).",
        "",
        f"Catalog `{summary['catalog']}`, every {summary['stride']}th rating is an arrival "
        f"({summary['arrivals']} arrivals), k={summary['k']}, M={summary['m']}; coverage = share of new "
        f"items with >= {summary['coverage_n']} impressions within {summary['coverage_window_arrivals']:g} "
        f"arrivals of listing (items listed at least that long before the end).",
        "",
        "| policy | cold_ctr | coverage | median_time_to_first_click (arrivals) | cumulative_reward |",
        "| --- | --- | --- | --- | --- |",
    ]
    for r in summary["rows"]:
        lines.append(
            f"| {r['policy']} | {r['cold_ctr']} | {r['coverage']} | {r['median_time_to_first_click']} | "
            f"{r['cumulative_reward']:g} |"
        )
    lines += [
        "",
        f"ours / uniform cold_ctr: **{summary['ours_vs_uniform_cold_ctr']}** (target >= 1.25); "
        f"ours coverage: **{next((r['coverage'] for r in summary['rows'] if r['policy'] == 'ours'), None)}** "
        "(target >= 0.95).",
        "",
        f"Feasibility of the goal: {f['new_items']} new items x N={summary['coverage_n']} impressions vs "
        f"{f['arrivals']} arrivals x k={summary['k']} slots: demand / supply = {f['demand_over_supply']}; "
        f"median slots offered per new item within its window (k x T / items listed within T of it) = "
        f"{f['slots_per_item_within_T_median']}; an oracle that gives every arrival's k slots to the unmet "
        f"items with the earliest deadline reaches coverage {f['edf_oracle_coverage']}.",
        "",
        f"Total {summary['seconds']:g} s, load average {summary['load_avg']} at the end.",
        "",
    ]
    out = Path("docs/results/replay.md")
    out.parent.mkdir(parents=True, exist_ok=True)
    marker = "<!-- end of generated part -->"
    prose = ""
    if out.is_file() and marker in out.read_text():
        prose = out.read_text().split(marker, 1)[1]
    out.write_text("\n".join(lines) + marker + prose)


if __name__ == "__main__":
    main()
