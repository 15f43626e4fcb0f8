"""The end-to-end mode of benchmarks/replay.py: the running stack (Tansu, ``coldstart stream encode``,
``coldstart stream learn``, ``coldstart api serve``) driven over Kafka and loopback HTTP, one policy at
a time on a fresh data directory (the protocol is in replay.py's docstring)."""

from __future__ import annotations

import argparse
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
from pathlib import Path
from typing import Any

import numpy as np

from coldstart.contracts import now_utc
from coldstart.settings import get_settings
from exploration.simulator import (
    HOUR,
    ColdMetrics,
    PolicySpec,
    ReplayConfig,
    pacing_config,
)
from feature_repo import open_store
from feature_repo.records import StoredUser
from stream.admin import ensure_topics
from stream.broker import TansuBroker
from stream.catalog_events import catalog_events
from stream.pool_feed import PoolFeed
from stream.producer import EventProducer

API_KEY = "replay-key"
ROOT = Path(__file__).resolve().parents[1]
COLDSTART = str(Path(sys.executable).with_name("coldstart"))


def _free_port() -> int:

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def catalog_listings(catalog_dir: Path) -> dict[str, Any]:
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
        # deferred import: httpx
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


def _e2e_env(spec: PolicySpec, args: argparse.Namespace, cfg: ReplayConfig) -> dict[str, str]:
    """The API/learner settings of one policy run (time: one arrival = 1 / rate seconds)."""
    pacing = pacing_config(spec, cfg, hours_per_arrival=1.0 / args.rate / HOUR)
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
    spec: PolicySpec, events, liked, listings: dict[str, Any], args: argparse.Namespace, cfg: ReplayConfig
) -> dict[str, Any]:
    """One policy through the running stack: listings on Kafka, slots and clicks over HTTP."""
    # deferred import: httpx
    import httpx

    m = ColdMetrics()
    if spec.policy is None:  # popular warm items: no API call, never a cold item
        return run_popular(spec, events, liked, listings, args, m, cfg)
    for attempt in range(3):  # a subprocess that fails to start (rare) gets a fresh stack
        stack = Stack(args, _e2e_env(spec, args, cfg))
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
    row = m.row(spec.name, arrival, cfg)
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


def run_popular(spec, events, liked, listings, args, m: ColdMetrics, cfg: ReplayConfig) -> dict[str, Any]:  # type: ignore[no-untyped-def]
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
    return m.row(spec.name, arrival, cfg)
