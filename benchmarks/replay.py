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
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from coldstart.contracts import now_utc
from coldstart.settings import get_settings
from exploration.config import (
    GreedyPolicyConfig,
    UniformPolicyConfig,
    VWPolicyConfig,
)
from exploration.simulator import (
    HOUR,
    ColdMetrics,
    PolicySpec,
    ReplayConfig,
    feasibility,
    pacing_config,
    simulate,
)
from feature_repo import open_store
from feature_repo.records import StoredUser
from models.records import ItemContent
from stream.admin import ensure_topics
from stream.broker import TansuBroker
from stream.catalog_events import catalog_events
from stream.pool_feed import PoolFeed
from stream.producer import EventProducer


def item_vectors(catalog_dir: Path, images: bool) -> tuple[list[str], np.ndarray]:
    """Frozen pretrained content features of the catalog's items, L2-normalised (cached on disk)."""
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


# --------------------------------------------------------------------------- end-to-end mode
API_KEY = "replay-key"
ROOT = Path(__file__).resolve().parents[1]
COLDSTART = str(Path(sys.executable).with_name("coldstart"))


def _free_port() -> int:

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _catalog_events(catalog_dir: Path) -> dict[str, Any]:
    """``item_id -> ItemListed`` of the catalog (``listed_at`` is set when the item is published)."""

    return {e.item_id: e for e in catalog_events(catalog_dir, image_mode="path", seller_id="catalog")}


class Stack:
    """Tansu broker + ``coldstart stream encode`` + ``coldstart stream learn`` + ``coldstart api serve``
    (each a subprocess but the broker), on a fresh data directory."""

    def __init__(self, args: argparse.Namespace, extra_env: dict[str, str], api: bool = True) -> None:

        self.tmp = Path(tempfile.mkdtemp(prefix="cs-replay-"))
        self.broker = TansuBroker(partitions=2).start()
        ensure_topics(self.broker.bootstrap_servers, 2)
        self.env = dict(os.environ)
        self.env.update(
            {
                "COLDSTART_DATA_DIR": str(self.tmp),
                "COLDSTART_SEED": str(args.seed),
                "COLDSTART_KAFKA__BOOTSTRAP_SERVERS": self.broker.bootstrap_servers,
                "COLDSTART_KAFKA__PARTITIONS": "2",
                "COLDSTART_KAFKA__ENCODE__VECTOR_CACHE_DIR": str(args.vector_cache.absolute()),
                "COLDSTART_KAFKA__ENCODE__LINGER_MS": "10",
                "COLDSTART_KAFKA__IMAGES__PATH_ROOTS": json.dumps([str(args.catalog.absolute())]),
                "COLDSTART_WARMUP__ENABLED": "false",
                "COLDSTART_API__API_KEYS": json.dumps([API_KEY]),
                "COLDSTART_API__SEARCH_INDEX": "false",
                "COLDSTART_API__OFFLINE_DECISIONS": "false",
                **extra_env,
            }
        )
        self.procs: list[subprocess.Popen[bytes]] = []
        self.logs: list[Any] = []
        self.port = _free_port()
        self._spawn("encode", [COLDSTART, "stream", "encode", "--artifact", str(args.artifact), "--quiet"])
        if api:
            self._spawn("learn", [COLDSTART, "stream", "learn"])
            self._spawn(
                "api", [COLDSTART, "api", "serve", "--port", str(self.port), "--log-level", "warning"]
            )

    def _spawn(self, name: str, cmd: list[str]) -> None:
        log = (self.tmp / f"{name}.log").open("wb")
        self.logs.append(log)
        self.procs.append(subprocess.Popen(cmd, cwd=ROOT, env=self.env, stdout=log, stderr=subprocess.STDOUT))

    def wait_api(self, timeout_s: float = 180.0) -> None:
        import httpx

        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            for p in self.procs:
                if p.poll() is not None:
                    log = self.tmp / f"{'api' if p.args[1] == 'api' else p.args[2]}.log"
                    tail = log.read_text(errors="replace")[-2000:] if log.is_file() else ""
                    raise RuntimeError(f"{p.args!r} exited with {p.returncode}; log tail:\n{tail}")
            try:
                if httpx.get(f"http://127.0.0.1:{self.port}/readyz", timeout=2).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.3)
        raise RuntimeError(f"API not ready; logs in {self.tmp}")

    def close(self) -> None:
        for p in self.procs:
            p.send_signal(signal.SIGTERM)
        for p in self.procs:
            try:
                p.wait(timeout=20)
            except subprocess.TimeoutExpired:
                p.kill()
        for log in self.logs:
            log.close()
        self.broker.stop()
        shutil.rmtree(self.tmp, ignore_errors=True)


def prime_cache(args: argparse.Namespace, listings: dict[str, Any]) -> dict[str, Any]:
    """List every item once through Kafka so the encoder worker's vector cache holds them all.

    Runs ``coldstart stream encode`` with the cache on; the first run encodes the catalog (minutes on
    2 cores), later runs only hit the cache. Returns counts and seconds.
    """

    t = time.perf_counter()
    stack = Stack(args, {}, api=False)
    seen: set[str] = set()
    try:
        feed = PoolFeed(
            stack.broker.bootstrap_servers, lambda rows: seen.update(r.item_id for r in rows)
        ).start()
        with EventProducer(stack.broker.bootstrap_servers) as producer:
            for e in listings.values():
                producer.publish_item(e.model_copy(update={"listed_at": now_utc()}))
            producer.flush()
        deadline = time.monotonic() + args.prime_timeout
        while len(seen) < len(listings) and time.monotonic() < deadline:
            if stack.procs[0].poll() is not None:
                raise RuntimeError(f"encoder exited; log in {stack.tmp}")
            time.sleep(0.5)
        feed.stop()
    finally:
        stack.close()
    return {"items": len(listings), "stored": len(seen), "seconds": round(time.perf_counter() - t, 1)}


def _e2e_env(spec: PolicySpec, args: argparse.Namespace) -> dict[str, str]:
    """The API/learner settings of one policy run (time: one arrival = 1 / rate seconds)."""
    pacing = pacing_config(spec, replay_config(args), hours_per_arrival=1.0 / args.rate / HOUR)
    assert spec.policy is not None
    policy = json.dumps(spec.policy.model_dump(mode="json"))
    return {
        "COLDSTART_EXPLORATION__POLICY": policy,
        "COLDSTART_EXPLORATION__PACING": pacing.model_dump_json(),
        "COLDSTART_EXPLORATION__CANDIDATES_M": str(min(spec.m, 10_000)),
        "COLDSTART_EXPLORATION__STARVING_CANDIDATES": str(args.starving if spec.pacing else 0),
        "COLDSTART_EXPLORATION__RELOAD_INTERVAL_S": "0.5",
        "COLDSTART_EXPLORATION__CHECKPOINT_INTERVAL_S": "1.0",
        "COLDSTART_EXPLORATION__GRADUATION_INTERVAL_S": "0.5",
        "COLDSTART_EXPLORATION__REWARDS__WINDOW_S": "2.0",
        "COLDSTART_EXPLORATION__LEARNER_GROUP_ID": f"replay-{spec.name}",
    }


def run_e2e(  # type: ignore[no-untyped-def]
    spec: PolicySpec, events, liked, listings: dict[str, Any], args: argparse.Namespace
) -> dict[str, Any]:
    """One policy through the running stack: listings on Kafka, slots and clicks over HTTP."""
    import httpx

    m = ColdMetrics()
    if spec.policy is None:  # popular warm items: no API call, never a cold item
        return run_popular(spec, events, liked, listings, args, m)
    for attempt in range(3):  # a subprocess that fails to start (rare) gets a fresh stack
        stack = Stack(args, _e2e_env(spec, args))
        try:
            stack.wait_api()
            break
        except RuntimeError as exc:
            print(f"{spec.name}: stack start failed (attempt {attempt + 1}): {exc}", file=sys.stderr)
            stack.close()
    else:
        raise RuntimeError(f"{spec.name}: the stack did not start in 3 attempts")
    vectors: dict[str, np.ndarray] = {}
    feed = None
    try:
        feed = PoolFeed(
            stack.broker.bootstrap_servers,
            lambda rows: vectors.update((r.item_id, np.asarray(r.item_vector, np.float64)) for r in rows),
        ).start()
        store = open_store(get_settings(data_dir=stack.tmp))
        users = store.users()
        producer = EventProducer(stack.broker.bootstrap_servers)
        client = httpx.Client(base_url=f"http://127.0.0.1:{stack.port}", headers={"X-API-Key": API_KEY})
        likes: dict[str, list[str]] = defaultdict(list)
        written: dict[str, int] = {}
        pending = False
        arrival = 0
        lag = 0.0
        t0 = time.perf_counter()
        for n, (user, item, value) in enumerate(events):
            if item not in m.first_arrival and item in listings:
                m.first_arrival[item] = arrival + 1
                producer.publish_item(listings[item].model_copy(update={"listed_at": now_utc()}))
                pending = True
            if value >= 4.0:
                likes[user].append(item)
            if n % args.stride:
                continue
            arrival += 1
            if pending:
                producer.flush()
                pending = False
            if arrival == 1:
                # the encoder worker joins its consumer group after the API is ready (seconds): start
                # the clock once the first listings are in the API's pool, or the first ~80 arrivals
                # would find an empty pool (and be served no slot at all)
                _wait_pool(client, args.prime_timeout)
                t0 = time.perf_counter() - 1.0 / args.rate
            due = t0 + arrival / args.rate
            delay = due - time.perf_counter()
            if delay > 0:
                time.sleep(delay)
            else:
                lag = max(lag, -delay)
            liked_vecs = [vectors[i] for i in likes.get(user, ()) if i in vectors]
            if liked_vecs and written.get(user) != len(liked_vecs):
                vec = np.mean(liked_vecs, axis=0).astype(np.float32)
                users.write_users([StoredUser(user, vec, len(liked_vecs), "replay", now_utc())])
                written[user] = len(liked_vecs)
            r = client.post(
                "/v1/exploration/slots",
                json={"user_id": user, "k": args.k, "context": {"n_liked": float(len(liked_vecs))}},
            )
            r.raise_for_status()
            out = r.json()
            m.decision(len(out["slots"]), args.k, arrival)
            for slot in out["slots"]:
                reward = slot["item_id"] in liked.get(user, ())
                m.impression(slot["item_id"], arrival, reward)
                if reward:
                    client.post(
                        "/v1/interactions",
                        json={
                            "user_id": user,
                            "item_id": slot["item_id"],
                            "kind": "click",
                            "decision_id": out["decision_id"],
                            "position": slot["position"],
                        },
                    ).raise_for_status()
        wall = time.perf_counter() - t0
        version = client.post("/v1/exploration/slots", json={"user_id": "probe", "k": 1}).json()[
            "model_version"
        ]
        client.close()
        producer.close()
        store.close()  # type: ignore[attr-defined]
    finally:
        if feed is not None:
            feed.stop()
        stack.close()
    row = m.row(spec.name, arrival, replay_config(args))
    row.update(
        {
            "achieved_arrivals_per_s": round(arrival / wall, 1),
            "max_lag_s": round(lag, 2),
            "final_model_version": version,
        }
    )
    return row


def _wait_pool(client: Any, timeout_s: float) -> None:
    """Wait until the API's cold pool holds at least one item (``/readyz`` ``pool_size``)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if client.get("/readyz").json().get("pool_size", 0) > 0:
            return
        time.sleep(0.05)
    raise RuntimeError(f"no listing reached the API's pool within {timeout_s} s")


def run_popular(spec, events, liked, listings, args, m: ColdMetrics) -> dict[str, Any]:  # type: ignore[no-untyped-def]
    """No exploration: the k items with most likes so far among those listed more than ``max_age``
    arrivals ago (no longer cold by age); computed by the driver, no API call."""
    pop: dict[str, int] = defaultdict(int)
    arrival = 0
    for n, (user, item, value) in enumerate(events):
        if item not in m.first_arrival and item in listings:
            m.first_arrival[item] = arrival + 1
        if value >= 4.0:
            pop[item] += 1
        if n % args.stride:
            continue
        arrival += 1
        ranked = sorted(pop, key=lambda i: -pop[i])
        warm = [i for i in ranked if arrival - m.first_arrival.get(i, 0) > args.max_age][: args.k]
        m.warm_reward += sum(1.0 for i in warm if i in liked.get(user, ()))
    return m.row(spec.name, arrival, replay_config(args))


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
        listings = _catalog_events(args.catalog)
        prime = prime_cache(args, listings)
        known = set(listings)

        def run(spec: PolicySpec) -> dict[str, Any]:
            return run_e2e(spec, events, liked, listings, args)
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
