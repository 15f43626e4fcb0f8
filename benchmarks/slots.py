"""Latency of ``POST /v1/exploration/slots`` under load, against a plain Feast online read.

Prints ONE JSON object. Setup: an embedded feature store (SQLite online store) with ``--items`` cold
items (``item_dim`` 128) and ``--users`` users; the API runs as ``coldstart api serve`` (``--workers``,
default 2: on a 2-core box one worker saturates its core near 150 rps, two share the load; the parent
hands connections to the workers round-robin, ``--shared-socket`` for uvicorn's own mode; each worker
keeps its own pool, following ``items.stored`` without a consumer group, and its own policy replica),
with the default policy (VW squarecb) and, by default, the decision log going to a Tansu broker.
A *separate load-generator process* (``benchmarks/loadgen.py``) sends an open-loop stream of requests
at ``--rate`` per second over loopback keep-alive connections (k=5, M=100, 90 % known users); a
request's latency is measured from its
*scheduled* send time, so a server that falls behind is charged for the queueing (no coordinated
omission). That also charges the generator's own lateness: its event loop's timers have millisecond
granularity, so a request goes out up to ~1 ms after its scheduled time (``send_lag_p99_ms``: the p99
of scheduled time to write, reported with every phase). Baselines, measured in the same run:

- ``feast_read_*``: a plain in-process ``FeatureStore.get_online_features`` of one user's vector on the
  same store (the read every slot request makes anyway); ``ratio_p99 = p99_ms / feast_read_p99_ms``,
  the issue's definition. It compares an HTTP request with a function call: a bare loopback round trip
  to ``/healthz`` alone costs about as much as that read's p99.
- ``feature_server``: the same read served over HTTP by Feast's own feature server (``feast serve``,
  gunicorn + uvicorn, as many workers as the API, ``POST /get-online-features``), driven by the same
  load generator at the same rates after the API and the broker have stopped (the feature server gets
  the machine to itself); ``ratio_p99_feature_server = p99_ms / feature_server.p99_ms`` at each rate.
  Its ``achieved_rps``, CPU per request and connections per worker are reported so a saturated
  baseline can be seen for what it is (``feature_server_saturated``).
- ``in_process_*``: the same slot requests (same distribution) served by a direct call of the route's
  handler in the benchmark process, before the server starts: the state the API builds, no HTTP, no
  decision log. ``in_process_ratio_p99 = in_process_p99_ms / feast_read_p99_ms`` is what the request's
  own work (the user read included) costs against one read, with no transport at all.
- ``http_floor``: a server that does nothing (one uvloop process answering every request with a fixed
  200 and a slots-sized body, no framework) driven the same way at the same rates, also on a machine
  to itself: what any Python HTTP endpoint costs here, measured the way the slots are (its
  ``send_lag_p99_ms`` is most of it). Its ``ratio_p99`` (floor p99 over the in-process read's p99) is
  the lowest ``ratio_p99`` an HTTP endpoint can show with this load generator.
- ``calibration_ms``: the median time of a fixed pure-Python loop, measured before anything starts:
  the speed of the machine of the day (these 2-core VMs differ by 2x between sessions).

Targets: ``p99_ms <= 10`` at 300 rps and ``ratio_p99 <= 3`` (``meets_targets``);
``meets_targets_feature_server``: ``p99_ms <= 10`` and ``ratio_p99_feature_server <= 3`` at 300 rps
with an unsaturated feature server.

    .venv/bin/python benchmarks/slots.py [--items 10000] [--rate 300] [--duration 20] [--decision-log kafka]
        [--workers 2] [--rates 300 100 200 250] [--pool auto|exact|hnsw] [--[no-]snapshot]
        [--vectors clustered|gaussian]

A million items: ``--items 1000000`` (the hnsw pool; the pool snapshot is written after seeding, by
``coldstart exploration pool-snapshot``, and the API starts from it). ``ready_s`` is the time from
starting the API to every worker answering ``/readyz`` with the whole pool, ``rss_mb`` the API's
resident memory (all processes) after the load phases.

Item and user vectors (``--vectors``): ``clustered`` (default) around 1,000 centres with a Gaussian
spread, users near what they like, as ``benchmarks/pool.py`` draws them (learned embeddings are
clustered; the pool's targets are set on such vectors); ``gaussian``: i.i.d. Gaussian, no structure,
the worst case of graph search (at 1M items the HNSW search of a slot request then costs several
times what it costs on clustered vectors and finds about a third of the exact top).

``--rates`` sweeps several load phases on the same server (the first is the headline); the JSON then
also has ``max_rate_meeting_p99``, the highest swept rate whose ``p99_ms <= 10``.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
from loadgen import (
    API_KEY,
    USER_FEATURES,
    connections_per_worker,
    cpu_s,
    free_port,
    rss_mb,
    slot_payload,
    start_feature_server,
    start_floor_server,
    stop,
)
from numpy.typing import NDArray
from slots_summary import summary

from api.main import create_app
from api.routes.exploration import slots_json
from api.schemas import SlotsRequest
from coldstart.settings import get_settings
from feature_repo import open_store
from feature_repo.offline.parquet import ParquetOfflineLog
from feature_repo.records import StoredUser
from stream.admin import ensure_topics
from stream.broker import TansuBroker

ROOT = Path(__file__).resolve().parents[1]
LOADGEN = Path(__file__).with_name("loadgen.py")


# --------------------------------------------------------------------------- orchestration
def _vectors(kind: str, n: int, dim: int, rng: np.random.Generator) -> NDArray[np.float32]:
    """``(n, dim)`` float32 vectors of norm ~1: i.i.d. Gaussian, or around the same 1,000 centres
    (``benchmarks/pool.py``'s clustered data, scaled by ``1/sqrt(dim)``)."""
    if kind == "gaussian":
        out = rng.standard_normal((n, dim)).astype(np.float32)
    else:
        centres = np.random.default_rng(12345).standard_normal((1000, dim)).astype(np.float32)
        out = centres[rng.integers(0, 1000, n)] + 0.6 * rng.standard_normal((n, dim)).astype(np.float32)
    scaled: NDArray[np.float32] = out / np.float32(np.sqrt(dim))
    return scaled


def _seed(data_dir: Path, n_items: int, n_users: int, dim: int, vectors: str) -> object:
    # deferred import: Feast
    from feature_repo.testing import random_items

    store = open_store(get_settings(data_dir=data_dir))
    rng = np.random.default_rng(0)
    now = datetime.now(UTC)
    listed = [now - timedelta(hours=float(h)) for h in rng.uniform(0, 20, n_items)]
    items = random_items(
        n_items,
        seed=rng,
        dim=dim,
        content_dim=64,
        item_scale=1 / np.sqrt(dim),
        listed_at=listed,
        categories=20,
        sellers=500,
        encoder_version="bench",
    )
    if vectors != "gaussian":
        item_vectors = _vectors(vectors, n_items, dim, rng)
        items = [dataclasses.replace(it, item_vector=item_vectors[k]) for k, it in enumerate(items)]
    for start in range(0, n_items, 1000):
        store.write_items(items[start : start + 1000])  # type: ignore[attr-defined]
    user_vectors = _vectors(vectors, n_users, dim, rng)
    users = [StoredUser(f"user-{u}", user_vectors[u], 5, "bench", now) for u in range(n_users)]
    store.users().write_users(users)  # type: ignore[attr-defined]
    offline = store.offline  # type: ignore[attr-defined]
    if isinstance(offline, ParquetOfflineLog):
        # the merges of the bulk load, counted in seed_s, not left to run beside the load phases
        offline.merge_parts()
    return store


def _feast_reads(store: object, n_users: int, n: int) -> list[float]:
    refs = USER_FEATURES
    feast = store.feast  # type: ignore[attr-defined]
    rng = random.Random(3)
    out = []
    for _ in range(n):
        uid = f"user-{rng.randrange(n_users)}"
        t = time.perf_counter()
        feast.get_online_features(
            features=refs, entity_rows=[{"user_id": uid}], full_feature_names=True
        ).to_dict()
        out.append((time.perf_counter() - t) * 1e3)
    return out


def _in_process_slots(data_dir: Path, args: argparse.Namespace, n: int) -> list[float]:
    """Wall times (ms) of ``n`` slot requests served by a direct call of the route's handler
    (``api.routes.exploration.slots_json``) in this process, inside the app's own lifespan (the same
    state, BLAS limits, gc freeze and GIL switch interval as a worker), minus HTTP and the decision log
    (``api.connect_kafka`` off). What a slot request costs with no transport at all; 200 requests warm it up
    first. The requests run back to back without yielding to the event loop, so the app's background
    maintenance does not run between them."""

    settings = get_settings(data_dir=data_dir)
    settings = settings.model_copy(
        update={
            "api": settings.api.model_copy(
                update={"connect_kafka": False, "offline_decisions": False, "search_index": False}
            ),
            "exploration": settings.exploration.model_copy(update={"candidates_m": args.m}),
        }
    )
    rng = random.Random(11)
    bodies = [SlotsRequest.model_validate(slot_payload(rng, args.users, args.k)) for _ in range(n + 200)]
    app = create_app(settings)

    async def timed() -> list[float]:
        out = []
        async with app.router.lifespan_context(app):
            state = app.state.coldstart
            for i, body in enumerate(bodies):
                t = time.perf_counter()
                slots_json(state, body)
                if i >= 200:
                    out.append((time.perf_counter() - t) * 1e3)
        return out

    return asyncio.run(timed())


def _wait_ready(
    port: int, n_items: int, proc: subprocess.Popen[bytes], timeout_s: float = 1200, consecutive: int = 1
) -> None:
    """Until ``consecutive`` fresh connections in a row (handed to the workers in turn) find
    ``/readyz`` ready with the whole pool."""
    # deferred import: httpx
    import httpx

    deadline = time.monotonic() + timeout_s
    streak = 0
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"API exited with {proc.returncode}")
        try:
            r = httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=2)
            ok = r.status_code == 200 and r.json()["pool_size"] >= n_items
        except httpx.HTTPError:
            ok = False
        streak = streak + 1 if ok else 0
        if streak >= consecutive:
            return
        time.sleep(0.05 if ok else 0.2)
    raise RuntimeError("API not ready in time")


def _calibration_ms(repeats: int = 5) -> float:
    """Median wall time of a fixed pure-Python loop (10**6 additions), ms: the machine's speed."""
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        acc = 0
        for i in range(1_000_000):
            acc += i
        times.append((time.perf_counter() - t) * 1e3)
    return float(np.median(times))


def _phase(
    args: argparse.Namespace, port: int, rate: float, pids: dict[str, int | None], target: str
) -> dict[str, Any]:
    """One load phase: the load generator at ``rate`` against ``port``; CPU per request of ``pids``."""
    before = cpu_s(pids)
    load = subprocess.Popen(
        [sys.executable, str(LOADGEN), "--port", str(port), "--rate", str(rate),
         "--duration", str(args.duration), "--warmup", str(args.warmup), "--users", str(args.users),
         "--k", str(args.k), "--connections", str(args.connections), "--target", target],
        cwd=ROOT, stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    time.sleep(args.warmup)  # connections are open once the warm-up runs
    root = next(pid for pid in pids.values() if pid is not None)
    split = connections_per_worker(root, port)
    stdout, _ = load.communicate()
    if load.returncode:
        raise RuntimeError(f"load generator exited with {load.returncode}")
    lg: dict[str, Any] = json.loads(stdout.strip().splitlines()[-1])
    lg["connections_per_worker"] = split
    after = cpu_s(pids)
    sent = max(1, lg["sent"])
    lg["cpu_ms_per_request"] = {
        **{k: round((after[k] - before[k]) / sent * 1e3, 3) for k in after},
        "loadgen": round(lg["cpu_s"] / sent * 1e3, 3),
    }
    return lg


def _baseline_phases(
    args: argparse.Namespace,
    rates: list[float],
    start: Callable[[int], subprocess.Popen[bytes]],
    target: str,
    name: str | None = None,
) -> dict[float, dict[str, Any]]:
    """A baseline server started by ``start(port)``, driven at each of ``rates`` (load generator
    ``target``; its CPU counted as ``name``, default ``target``), then stopped."""
    port = free_port()
    proc = start(port)
    try:
        return {rate: _phase(args, port, rate, {name or target: proc.pid}, target) for rate in rates}
    finally:
        stop(proc)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--items", type=int, default=10_000)
    ap.add_argument("--users", type=int, default=1000)
    ap.add_argument("--dim", type=int, default=128)
    ap.add_argument(
        "--vectors",
        choices=["clustered", "gaussian"],
        default="clustered",
        help="Item and user vectors: around 1,000 centres (as benchmarks/pool.py) or i.i.d. Gaussian.",
    )
    ap.add_argument("--rate", type=float, default=300.0)
    ap.add_argument("--duration", type=float, default=20.0)
    ap.add_argument("--warmup", type=float, default=5.0)
    ap.add_argument(
        "--extra-rates", type=float, nargs="*", default=[], help="Further load phases on the same server."
    )
    ap.add_argument(
        "--rates",
        type=float,
        nargs="+",
        default=None,
        help="Sweep: load phases on the same server, the first one reported at the top level.",
    )
    ap.add_argument("--workers", type=int, default=2, help="uvicorn worker processes.")
    ap.add_argument(
        "--shared-socket",
        action="store_true",
        help="Workers share one listening socket (uvicorn's own mode) instead of round-robin hand-out.",
    )
    ap.add_argument("--k", type=int, default=5)
    ap.add_argument("--m", type=int, default=100)
    ap.add_argument("--connections", type=int, default=32)
    ap.add_argument("--feast-reads", type=int, default=3000)
    ap.add_argument("--decision-log", choices=["kafka", "offline", "both", "none"], default="kafka")
    ap.add_argument(
        "--feature-server",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="After the slot phases, drive Feast's own feature server (feast serve, same workers) at the "
        "same rates: the over-HTTP baseline.",
    )
    ap.add_argument(
        "--floor",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="After the slot phases, drive a do-nothing HTTP server (one uvloop process) at the same "
        "rates: the floor of any Python HTTP endpoint on this machine.",
    )
    ap.add_argument(
        "--in-process",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="Before the server starts, time --feast-reads slot requests served by a direct call of the "
        "route's handler in this process (no HTTP, no decision log).",
    )
    ap.add_argument(
        "--pool",
        choices=["auto", "exact", "hnsw"],
        default="auto",
        help="The API's cold-pool index (auto: hnsw from 100,000 items, exact below).",
    )
    ap.add_argument(
        "--snapshot",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="Write the pool snapshot (coldstart exploration pool-snapshot) before the API starts, so it "
        "starts from it (default: with the hnsw pool).",
    )
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="cs-bench-slots-"))
    broker = None
    server = None
    try:
        calibration_ms = _calibration_ms()
        t = time.perf_counter()
        store = _seed(tmp, args.items, args.users, args.dim, args.vectors)
        seed_s = time.perf_counter() - t
        in_process_ms = _in_process_slots(tmp, args, args.feast_reads) if args.in_process else []
        env = dict(os.environ)
        env.update(
            {
                "COLDSTART_DATA_DIR": str(tmp),
                "COLDSTART_API__API_KEYS": json.dumps([API_KEY]),
                "COLDSTART_API__SEARCH_INDEX": "false",
                "COLDSTART_API__OFFLINE_DECISIONS": str(args.decision_log in ("offline", "both")).lower(),
                "COLDSTART_API__CONNECT_KAFKA": str(args.decision_log in ("kafka", "both")).lower(),
                "COLDSTART_EXPLORATION__CANDIDATES_M": str(args.m),
            }
        )
        if args.decision_log in ("kafka", "both"):
            broker = TansuBroker(partitions=4).start()
            ensure_topics(broker.bootstrap_servers, 4)
            env["COLDSTART_KAFKA__BOOTSTRAP_SERVERS"] = broker.bootstrap_servers
        pool = args.pool if args.pool != "auto" else ("hnsw" if args.items >= 100_000 else "exact")
        env["COLDSTART_EXPLORATION__POOL"] = json.dumps({"type": pool})
        snapshot_s = None
        if args.snapshot if args.snapshot is not None else pool == "hnsw":
            t = time.perf_counter()
            subprocess.run(
                [sys.executable, "-m", "cli.main", "exploration", "pool-snapshot"],
                cwd=ROOT,
                env=env,
                check=True,
                stdout=subprocess.DEVNULL,
            )
            snapshot_s = time.perf_counter() - t
        port = free_port()
        started = time.perf_counter()
        server = subprocess.Popen(
            [sys.executable, "-m", "cli.main", "api", "serve", "--host", "127.0.0.1",
             "--port", str(port), "--workers", str(args.workers), "--log-level", "warning",
             "--balance", "shared_socket" if args.shared_socket else "round_robin"],
            cwd=ROOT,
            env=env,
        )  # fmt: skip
        _wait_ready(port, args.items, server, consecutive=2 * args.workers)
        ready_s = time.perf_counter() - started
        if args.workers > 1:  # workers start together; /readyz answers from whichever is up first
            time.sleep(10.0)
        feast_ms = _feast_reads(store, args.users, args.feast_reads)
        rates = args.rates if args.rates else [args.rate, *args.extra_rates]
        pids = {"api": server.pid, "broker": broker.pid if broker is not None else None}
        runs = [(rate, _phase(args, port, rate, pids, "slots")) for rate in rates]
        rss = rss_mb(server.pid)
        if args.feature_server or args.floor:
            # the API and the broker stop first: each baseline gets the machine to itself
            stop(server)
            server = None
            if broker is not None:
                broker.stop()
                broker = None
        floors = _baseline_phases(args, rates, start_floor_server, "floor") if args.floor else {}
        fs = (
            _baseline_phases(
                args, rates, lambda p: start_feature_server(tmp, p, args.workers), "feast", "feature_server"
            )
            if args.feature_server
            else {}
        )
        result = summary(
            args,
            runs=runs,
            feast_ms=feast_ms,
            in_process_ms=in_process_ms,
            floors=floors,
            feature_server=fs,
            measured={
                "seed_s": seed_s,
                "pool": pool,
                "snapshot_s": snapshot_s,
                "ready_s": ready_s,
                "rss": rss,
                "calibration_ms": calibration_ms,
            },
        )
        print(json.dumps(result))
    finally:
        if server is not None:
            stop(server)
        if broker is not None:
            broker.stop()
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
