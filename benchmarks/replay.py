"""Replay of a catalog's rating timeline through the slot service: does exploration help cold items?

Prints ONE JSON object (a row per policy) and, with ``--write-doc``, docs/results/replay.md.

Protocol (documented in docs/results/replay.md):

* Catalog in the generic layout of the encoder issue (default: the MovieLens adapter output at
  ``.coldstart/catalogs/movielens``): ``items.csv`` + ``interactions.csv``.
* Time runs in *arrivals*: every ``--stride``-th rating event of the timeline is one user arrival;
  an item is listed at the arrival of its first rating and stays cold until it graduates.
* Each arrival asks the slot service (``exploration.service.SlotService``, the code behind
  ``POST /v1/exploration/slots``) for ``k`` slots; reward of a slot = the user really rated that item
  >= 4 anywhere in the data set (the full rating matrix is the ground truth: an offline *simulator*
  built from real ratings, not Li et al.'s rejection-sampling replay, which needs uniformly random
  logs that MovieLens does not have). Rewards are learned at once.
* User vectors: mean of the item vectors of the items the user rated >= 4 *before* the arrival
  (unknown users: none). Item vectors: frozen pretrained content features from
  ``models.features.extract_features`` -- the MiniLM text tower (384-d, L2-normalised) by default;
  ``--images`` adds the EfficientNet-Lite0 image tower (1280-d), concatenated.

Policies: ``popular_warm`` (no exploration: the k most popular already-graduated items),
``uniform`` (uniform over the whole cold pool), ``content_greedy`` (top user·item dot, no
exploration), ``epsilon_greedy`` (VW epsilon 0.1), ``ours`` (VW squarecb + exposure pacing).

    .venv/bin/python benchmarks/replay.py [--catalog .coldstart/catalogs/movielens] [--stride 10]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
import time
from collections import defaultdict
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

from exploration.config import (
    GreedyPolicyConfig,
    PacingConfig,
    PolicyConfig,
    UniformPolicyConfig,
    VWPolicyConfig,
)
from exploration.model_store import PolicyHolder
from exploration.pacing import ExposurePacer
from exploration.policies import build_policy, learn_decision
from exploration.pool import PoolEntry, new_pool
from exploration.service import SlotRequest, SlotService
from feature_repo.base import UserStore
from feature_repo.records import StoredUser

HOUR = 3600.0


class ReplayUsers(UserStore):
    """User vectors of the replay: running mean of liked items' vectors (in memory)."""

    def __init__(self) -> None:
        self.sums: dict[str, np.ndarray] = {}
        self.counts: dict[str, int] = defaultdict(int)

    def like(self, user_id: str, vec: np.ndarray) -> None:
        self.sums[user_id] = self.sums.get(user_id, 0.0) + vec
        self.counts[user_id] += 1

    def write_users(self, users):  # type: ignore[no-untyped-def]
        for u in users:  # an explicit vector replaces the running mean
            self.sums[u.user_id] = np.asarray(u.vector, dtype=np.float64) * max(1, u.interactions)
            self.counts[u.user_id] = max(1, u.interactions)

    def get_users(self, user_ids):  # type: ignore[no-untyped-def]
        out = {}
        for u in user_ids:
            if u in self.sums:
                v = self.sums[u] / self.counts[u]
                out[u] = StoredUser(u, v.astype(np.float32), self.counts[u], "replay", datetime.now(UTC))
        return out


@dataclass
class Spec:
    name: str
    policy: PolicyConfig | None
    m: int
    pacing: bool


def item_vectors(catalog_dir: Path, images: bool) -> tuple[list[str], np.ndarray]:
    """Frozen pretrained content features of the catalog's items, L2-normalised (cached on disk)."""
    from models.catalog import Catalog
    from models.features import extract_features
    from models.records import ItemContent

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


def run_policy(spec: Spec, events, vectors, liked, args) -> dict:  # type: ignore[no-untyped-def]
    first_arrival: dict[str, int] = {}
    pacing = PacingConfig(
        target_impressions=args.n_impressions,
        window_hours=args.window,
        max_boost=4.0 if spec.pacing else 1.0,
        graduate_impressions=args.graduate_impressions,
        graduate_clicks=1,
        max_age_hours=args.max_age,
    )
    clock = {"t": 0.0}
    users = ReplayUsers()
    svc = SlotService(
        pool=new_pool(),
        users=users,
        holder=PolicyHolder(build_policy(spec.policy or UniformPolicyConfig(), seed=args.seed)),
        pacer=ExposurePacer(pacing, clock=lambda: clock["t"]),
        candidates_m=spec.m,
        starving_candidates=10 if spec.pacing else 0,
        clock=lambda: clock["t"],
    )
    listed: set[str] = set()
    graduated_pop: dict[str, int] = defaultdict(int)
    impressions: dict[str, list[int]] = defaultdict(list)  # item -> arrivals of its impressions
    first_click: dict[str, int] = {}
    cold_imps = cold_clicks = 0
    total_reward = 0.0
    rng = np.random.default_rng(args.seed)
    arrival = 0
    for n, (user, item, value) in enumerate(events):
        if item not in listed and item in vectors:
            listed.add(item)
            first_arrival[item] = arrival
            svc.add_items([PoolEntry(item, vectors[item], listed_at_s=clock["t"])])
        if value >= 4.0 and item in vectors:
            users.like(user, vectors[item])
            graduated_pop[item] += 1
        if n % args.stride:
            continue
        arrival += 1
        clock["t"] = arrival * HOUR
        if spec.policy is None:  # popular warm items: no cold impressions at all
            if arrival % 20 == 0:
                svc.graduate()  # without impressions, items leave the cold pool by age only
            ranked = sorted(graduated_pop, key=lambda i: -graduated_pop[i])
            warm = [i for i in ranked if i not in svc.pacer][: args.k]
            total_reward += sum(1.0 for i in warm if i in liked.get(user, ()))
            continue
        res = svc.select(
            SlotRequest(user_id=user, k=args.k, context={"n_liked": float(users.counts.get(user, 0))})
        )
        rewards = {}
        for s in res.decision.slots:
            r = 1.0 if s.item_id in liked.get(user, ()) else 0.0
            rewards[s.item_id] = r
            impressions[s.item_id].append(arrival)
            cold_imps += 1
            cold_clicks += int(r)
            total_reward += r
            if r and s.item_id not in first_click:
                first_click[s.item_id] = arrival
            if r:
                svc.pacer.record_click(s.item_id)
        learn_decision(svc.holder.current.policy, res.decision, rewards)
        if arrival % 20 == 0:
            svc.graduate()
    del rng
    # coverage: items listed early enough to have a full window, with >= N impressions within it
    eligible = [i for i, a in first_arrival.items() if a + args.window <= arrival]
    covered = sum(
        1
        for i in eligible
        if sum(1 for t in impressions.get(i, []) if t - first_arrival[i] <= args.window) >= args.n_impressions
    )
    ttfc = [first_click[i] - first_arrival[i] for i in first_click]
    return {
        "policy": spec.name,
        "cold_ctr": round(cold_clicks / cold_imps, 5) if cold_imps else 0.0,
        "coverage": round(covered / len(eligible), 4) if eligible else 0.0,
        "median_time_to_first_click": float(np.median(ttfc)) if ttfc else None,
        "cumulative_reward": total_reward,
        "cold_impressions": cold_imps,
        "items_clicked": len(first_click),
    }


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--catalog", type=Path, default=Path(".coldstart/catalogs/movielens"))
    ap.add_argument("--stride", type=int, default=10, help="Every stride-th rating is an arrival.")
    ap.add_argument("--k", type=int, default=5)
    ap.add_argument("--m", type=int, default=100)
    ap.add_argument("--n-impressions", type=int, default=5, help="Coverage target N.")
    ap.add_argument("--window", type=float, default=300, help="Coverage window T, in arrivals.")
    ap.add_argument("--graduate-impressions", type=int, default=20)
    ap.add_argument("--max-age", type=float, default=900, help="Items age out after this many arrivals.")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--policies", default="popular_warm,uniform,content_greedy,epsilon_greedy,ours")
    ap.add_argument("--images", action="store_true", help="Also use the image tower (slow on CPU).")
    ap.add_argument("--write-doc", action="store_true")
    args = ap.parse_args()

    import pandas as pd

    t0 = time.perf_counter()
    ids, mat = item_vectors(args.catalog, args.images)
    vectors = dict(zip(ids, mat, strict=True))
    inter = pd.read_csv(args.catalog / "interactions.csv", dtype={"user_id": str, "item_id": str})
    inter = inter.sort_values("ts", kind="stable")
    events = list(zip(inter["user_id"], inter["item_id"], inter["value"].astype(float), strict=True))
    liked: dict[str, set[str]] = defaultdict(set)
    for u, i, v in events:
        if v >= 4.0:
            liked[u].add(i)
    specs = {
        "popular_warm": Spec("popular_warm", None, args.m, False),
        "uniform": Spec("uniform", UniformPolicyConfig(), 100_000, False),
        "content_greedy": Spec("content_greedy", GreedyPolicyConfig(feature="dot"), args.m, False),
        "epsilon_greedy": Spec(
            "epsilon_greedy", VWPolicyConfig(exploration="epsilon", epsilon=0.1), args.m, False
        ),
        "ours": Spec("ours", VWPolicyConfig(), args.m, True),
    }
    rows = []
    for name in args.policies.split(","):
        t = time.perf_counter()
        row = run_policy(specs[name], events, vectors, liked, args)
        row["seconds"] = round(time.perf_counter() - t, 1)
        rows.append(row)
    by = {r["policy"]: r for r in rows}
    ours, uni = by.get("ours"), by.get("uniform")
    summary = {
        "catalog": str(args.catalog),
        "arrivals": len(events) // args.stride,
        "k": args.k,
        "m": args.m,
        "coverage_n": args.n_impressions,
        "coverage_window_arrivals": args.window,
        "rows": rows,
        "ours_vs_uniform_cold_ctr": round(ours["cold_ctr"] / uni["cold_ctr"], 3)
        if ours and uni and uni["cold_ctr"]
        else None,
        "targets": {"ours_vs_uniform_cold_ctr": 1.25, "ours_coverage": 0.95},
        "seconds": round(time.perf_counter() - t0, 1),
    }
    print(json.dumps(summary))
    if args.write_doc:
        write_doc(summary)


def write_doc(summary: dict) -> None:
    lines = [
        "# Replay: exploration policies on a real rating timeline",
        "",
        "Command: `.venv/bin/python benchmarks/replay.py --write-doc` (protocol in the script's docstring).",
        "",
        f"Catalog `{summary['catalog']}`, {summary['arrivals']} arrivals, "
        f"k={summary['k']}, M={summary['m']}; "
        f"coverage = share of items with >= {summary['coverage_n']} impressions within "
        f"{summary['coverage_window_arrivals']:g} arrivals of listing.",
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
        f"ours / uniform cold_ctr: {summary['ours_vs_uniform_cold_ctr']} (target >= 1.25, coverage >= 0.95)",
        "",
    ]
    out = Path("docs/results/replay.md")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text("\n".join(lines))


if __name__ == "__main__":
    main()
