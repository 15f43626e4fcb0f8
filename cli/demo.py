"""``coldstart demo``: the main job on the embedded default.

1. adapts ``../shared/data/movielens`` into the generic catalog layout under
   ``<data_dir>/catalogs/movielens`` (once);
2. finds the encoder artifact (``models.artifact`` / newest under ``models.artifacts_dir``). When there
   is none it trains the default offline encoder once on that catalog (``coldstart models train``,
   pretrained towers from PyPI, several minutes on 2 cores); ``--tiny-encoder`` builds a tiny random
   artifact instead (seconds; mechanics only, meaningless vectors);
3. starts the embedded Tansu broker (or uses ``COLDSTART_KAFKA__BOOTSTRAP_SERVERS`` / a running
   ``coldstart broker``), an encoder worker in its own process (``coldstart stream encode``), and a
   loopback HTTP server that serves the posters as image URLs;
4. writes the user vectors learned next to the item tower (the artifact's ``users.npz``) to the store,
   so users known at training time get personal slots; keeps a pool index in this process, fed from
   ``items.stored`` (as the API does);
5. publishes ``limit`` movies as ItemListed events at ``rate`` events/s, shows progress;
6. starts the API (``coldstart api serve``) on a free loopback port, asks it for exploration slots for
   a few users and searches the cold pool by text, and prints a summary: items stored, dead letters,
   throughput, freshness p50/p99 (listed_at → readable online AND returned by the pool), API latency.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import typer
from tqdm import tqdm

from coldstart.contracts import now_utc
from coldstart.errors import ColdstartError, NotFoundError
from coldstart.settings import Settings
from coldstart.topics import ITEMS_LISTED
from exploration.pool import ExactPool, ItemPools
from feature_repo import open_store
from feature_repo.seed_users import seed_users_from_artifact
from models.artifact import resolve_artifact
from models.catalog import Catalog, adapt_movielens
from stream.catalog_events import catalog_events
from stream.freshness import FreshnessProbe
from stream.image_server import ImageServer


@dataclass(frozen=True)
class DemoSummary:
    """What :func:`run_demo` reports (seconds, items/s)."""

    published: int
    stored_online: int
    in_pool: int
    dead_letters: int
    text_only: int
    elapsed_s: float
    throughput_items_per_s: float
    freshness_p50_s: float | None
    freshness_p99_s: float | None
    encoder_version: str
    bootstrap_servers: str
    api_slots_requests: int = 0
    api_slots_p50_ms: float | None = None


def _say(msg: str) -> None:
    typer.secho(msg, fg=typer.colors.CYAN, err=True)


def ensure_catalog(settings: Settings) -> Path:
    """The MovieLens catalog in the generic layout under ``<data_dir>/catalogs/movielens`` (adapted once)."""

    out = settings.data_dir / "catalogs" / "movielens"
    if not (out / "items.csv").is_file():
        _say(f"adapting {settings.movielens_dir} into the generic catalog layout at {out}")
        report = adapt_movielens(settings.movielens_dir, out)
        _say(f"  {report.n_items} movies, {report.n_interactions} ratings, {report.n_users} users")
    return out


def ensure_encoder(settings: Settings, catalog: Path, *, tiny: bool) -> Path:
    """An encoder artifact directory: the configured/newest one, else a tiny or freshly trained one."""

    if tiny:
        # deferred import: torch, onnx
        from models.testing import build_tiny_artifact

        root = settings.data_dir / "demo-artifacts"
        try:
            return resolve_artifact(root, root)
        except NotFoundError:
            _say("building a tiny random encoder artifact (mechanics only: vectors are meaningless)")
            return build_tiny_artifact(root, seed=settings.seed)
    try:
        return resolve_artifact(settings.models.artifact, settings.models.artifacts_dir)
    except NotFoundError:
        pass
    _say(
        "no encoder artifact: training the default offline encoder once on the MovieLens catalog "
        "(`coldstart models train`; use --tiny-encoder for a quick mechanics-only run)"
    )
    cmd = [sys.executable, "-m", "cli.main", "models", "train", "--catalog", str(catalog)]
    subprocess.run(cmd, check=True)
    return resolve_artifact(settings.models.artifact, settings.models.artifacts_dir)


def _start_worker(
    settings: Settings, bootstrap: str, artifact: Path, log: Path, image_host: str, catalog_dir: Path
) -> subprocess.Popen[bytes]:
    env = dict(os.environ)
    env["COLDSTART_KAFKA__BOOTSTRAP_SERVERS"] = bootstrap
    env["COLDSTART_DATA_DIR"] = str(settings.data_dir.absolute())
    # the worker may fetch from the demo's own loopback image server (that host:port only) and read
    # the catalog's files; every other internal address and path stays refused
    env["COLDSTART_KAFKA__IMAGES__EGRESS__ALLOW_HOSTS"] = json.dumps([image_host])
    env["COLDSTART_KAFKA__IMAGES__PATH_ROOTS"] = json.dumps([str(catalog_dir.absolute())])
    cmd = [
        sys.executable,
        "-m",
        "cli.main",
        "stream",
        "encode",
        "--artifact",
        str(artifact),
        "--verbose",
    ]
    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("wb") as out:
        return subprocess.Popen(cmd, env=env, stdout=out, stderr=subprocess.STDOUT)


def _wait_worker_ready(proc: subprocess.Popen[bytes], log: Path, timeout_s: float = 300.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            tail = log.read_text(errors="replace")[-3000:]
            raise ColdstartError(f"the encoder worker exited with code {proc.returncode}:\n{tail}")
        if log.is_file() and "assigned [" in log.read_text(errors="replace"):
            return
        time.sleep(0.2)
    raise ColdstartError(
        f"the encoder worker did not join its consumer group within {timeout_s:.0f}s ({log})"
    )


def run_demo(
    settings: Settings, *, limit: int = 300, rate: float = 10.0, tiny_encoder: bool = False
) -> DemoSummary:
    """Bring up broker + encoder worker, stream ``limit`` MovieLens movies as new items, print a summary.

    Parameters
    ----------
    limit
        Movies to publish (the catalog has ~2,900 with a poster and a plot).
    rate
        Publishing rate in events/s (``0`` = as fast as possible; freshness then includes queueing).
    tiny_encoder
        Use a tiny random artifact when no trained one exists (mechanics only).
    """

    # deferred import: kafka-python
    from stream.broker import ensure_broker
    from stream.dlq import read_dead_letters
    from stream.pool_feed import PoolFeed
    from stream.producer import EventProducer

    catalog_dir = ensure_catalog(settings)
    artifact = ensure_encoder(settings, catalog_dir, tiny=tiny_encoder)
    _say(f"encoder artifact: {artifact}")
    n_items = min(limit, len(Catalog.load(catalog_dir, check_images=False).items))
    logs = settings.data_dir / "logs"
    with ensure_broker(settings.kafka, log_path=logs / "tansu.log") as bootstrap:
        _say(f"Kafka: {bootstrap}")
        worker_log = logs / "encode-worker.log"
        server = ImageServer(catalog_dir).start()
        proc = _start_worker(settings, bootstrap, artifact, worker_log, server.host_port, catalog_dir)
        try:
            _say("opening the feature store (embedded: SQLite online + parquet offline)")
            store = open_store(settings)
            if (artifact / "users.npz").is_file():
                seeded = seed_users_from_artifact(store.users(), artifact)
                _say(f"seeded {seeded} user vectors learned next to the item tower ({artifact.name})")
            content_pool = ExactPool()
            pools = ItemPools(content=content_pool)
            feed = PoolFeed(
                bootstrap, pools.upsert_items, fetch_max_wait_ms=settings.kafka.follow_fetch_wait_ms
            ).start()
            pools.rebuild_from_store(store)
            _say(f"waiting for the encoder worker to join its group (log: {worker_log})")
            _wait_worker_ready(proc, worker_log)
            with FreshnessProbe(store, content_pool, contains=content_pool.__contains__) as probe:
                producer = EventProducer(bootstrap, settings.kafka)
                events = list(
                    catalog_events(catalog_dir, limit=n_items, image_mode="url", image_url=server.url)
                )
                start = time.monotonic()

                def publish() -> None:

                    interval = 1.0 / rate if rate > 0 else 0.0
                    next_t = time.monotonic()
                    for event in events:
                        fresh = event.model_copy(update={"listed_at": now_utc()})
                        probe.expect(fresh.item_id, fresh.listed_at)
                        producer.publish_item(fresh)
                        if interval:
                            next_t += interval
                            time.sleep(max(0.0, next_t - time.monotonic()))
                    producer.flush()

                publisher = threading.Thread(target=publish, daemon=True)
                publisher.start()
                with tqdm(total=len(events), desc="stored + in pool", unit="item") as bar:
                    deadline = time.monotonic() + 60 + 10 * len(events)
                    while time.monotonic() < deadline:
                        seen = len(probe.latencies)
                        bar.update(seen - bar.n)
                        if seen >= len(events) or proc.poll() is not None:
                            break
                        time.sleep(0.1)
                elapsed = time.monotonic() - start
                publisher.join(30)
                producer.close()
            feed.stop()
            p50, p99 = probe.percentiles()
            ids = [e.item_id for e in events]
            online = len(store.get_items(ids))
            in_pool = len(set(ids) & set(content_pool.ids()))
            dlq = len(read_dead_letters(bootstrap, ITEMS_LISTED))
            api_stats = _exercise_api(settings, bootstrap, artifact, logs / "api.log")
        finally:
            server.stop()
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
                try:
                    proc.wait(60)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()
    worker_stats = _last_json_line(worker_log)
    summary = DemoSummary(
        published=len(events),
        stored_online=online,
        in_pool=in_pool,
        dead_letters=dlq,
        text_only=int(worker_stats.get("text_only", 0)),
        elapsed_s=round(elapsed, 2),
        throughput_items_per_s=round(len(probe.latencies) / elapsed, 2) if elapsed > 0 else 0.0,
        freshness_p50_s=None if p50 is None else round(p50, 3),
        freshness_p99_s=None if p99 is None else round(p99, 3),
        encoder_version=artifact.name,
        bootstrap_servers=bootstrap,
        api_slots_requests=int(api_stats["requests"]),
        api_slots_p50_ms=api_stats["p50_ms"],
    )
    _print_summary(summary, worker_stats)
    return summary


def _free_port() -> int:

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _exercise_api(settings: Settings, bootstrap: str, artifact: Path, log: Path) -> dict[str, Any]:
    """Start ``coldstart api serve`` on loopback, ask it for slots and a search, print what it answers."""
    # deferred import: httpx
    import httpx

    port = _free_port()
    env = dict(os.environ)
    env["COLDSTART_KAFKA__BOOTSTRAP_SERVERS"] = bootstrap
    env["COLDSTART_DATA_DIR"] = str(settings.data_dir.absolute())
    env["COLDSTART_MODELS__ARTIFACT"] = str(artifact.absolute())
    cmd = [
        sys.executable,
        "-m",
        "cli.main",
        "api",
        "serve",
        "--port",
        str(port),
        "--log-level",
        "warning",
    ]
    key = settings.api.api_keys[0] if settings.api.api_keys else ""
    base = f"http://127.0.0.1:{port}"
    with log.open("wb") as out:
        proc = subprocess.Popen(cmd, env=env, stdout=out, stderr=subprocess.STDOUT)
    try:
        _say(f"starting the API on {base} (log: {log})")
        with httpx.Client(base_url=base, headers={"X-API-Key": key}, timeout=30.0) as http:
            deadline = time.monotonic() + 300
            while True:
                if proc.poll() is not None:
                    tail = log.read_text(errors="replace")[-3000:]
                    raise ColdstartError(f"the API exited with code {proc.returncode}:\n{tail}")
                try:
                    if http.get("/readyz").status_code == 200:
                        break
                except httpx.TransportError:
                    pass
                if time.monotonic() > deadline:
                    raise ColdstartError(f"the API was not ready within 300 s ({log})")
                time.sleep(0.3)
            latencies: list[float] = []
            for user in ("1", "2", "3", "new-user"):
                t0 = time.perf_counter()
                r = http.post("/v1/exploration/slots", json={"user_id": user, "k": 3})
                latencies.append((time.perf_counter() - t0) * 1000)
                r.raise_for_status()
                body = r.json()
                picks = ", ".join(f"{s['item_id']} (p={s['propensity']:.3f})" for s in body["slots"])
                typer.echo(f"  slots for user {user!r}: {picks}")
            r = http.get("/v1/search", params={"text": "a space adventure", "k": 3})
            if r.status_code == 200:
                hits = r.json()["hits"]
                typer.echo(f"  search 'a space adventure': {[h.get('item_id') for h in hits]}")
            else:
                typer.echo(f"  search answered {r.status_code}: {r.text[:200]}")
        latencies.sort()
        return {"requests": len(latencies), "p50_ms": round(latencies[len(latencies) // 2], 2)}
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def _last_json_line(log: Path) -> dict[str, Any]:
    if not log.is_file():
        return {}
    for line in reversed(log.read_text(errors="replace").splitlines()):
        if line.startswith("{"):
            try:
                parsed = json.loads(line)
            except ValueError:
                continue
            if isinstance(parsed, dict):
                return parsed
    return {}


def _print_summary(summary: DemoSummary, worker: dict[str, Any]) -> None:
    typer.echo("")
    typer.secho("coldstart demo: summary", bold=True)
    typer.echo(f"  items published        {summary.published}")
    typer.echo(f"  stored online          {summary.stored_online}")
    typer.echo(f"  in the pool index      {summary.in_pool}")
    typer.echo(f"  dead letters (DLQ)     {summary.dead_letters}")
    typer.echo(f"  text-only (bad image)  {summary.text_only}")
    typer.echo(
        f"  throughput             {summary.throughput_items_per_s} items/s over {summary.elapsed_s} s"
    )
    typer.echo(
        f"  freshness              p50 {summary.freshness_p50_s} s, p99 {summary.freshness_p99_s} s "
        "(listed_at -> online AND in the pool)"
    )
    typer.echo(f"  encoder                {summary.encoder_version}")
    typer.echo(
        f"  API slots              {summary.api_slots_requests} requests, p50 {summary.api_slots_p50_ms} ms"
    )
    if worker:
        typer.echo(
            f"  worker                 {worker.get('batches')} batches, encode {worker.get('encode_s')} s, "
            f"write {worker.get('write_s')} s, image failures {worker.get('image_failures')}"
        )
    typer.echo(json.dumps(asdict(summary)))
