"""Ingestion: Kafka → encoder worker → Feast online store + pool index, against the bare encoder.

Prints ONE JSON object:

- ``items`` events published (good + planted bad), ``online`` good items readable online at the end,
  ``dlq`` dead letters (must equal the planted bad events: ``online == items - planted_bad``);
- ``encoder_items_per_s``: the same encoder, same batch size and the same number of batches at once
  (``--compute-threads``, as the worker runs them), on the same items already in memory (no Kafka, no
  image fetch, no Feast), measured right before and right after phase A and averaged;
- ``pipeline_items_per_s``: phase A publishes the catalog up front, then one encoder worker drains it;
  rate = good items written / time from the first polled batch to the last write;
- ``overhead_ratio`` = pipeline / encoder (target ≥ 0.9);
- ``freshness_p50_s`` / ``freshness_p99_s``: phase B publishes more items at 50 % of the pipeline's
  measured max rate with ``listed_at`` = publish time; freshness = listed_at → the vector is readable
  from the online store AND returned by the pool index (target p99 ≤ 1.0 s). The pool is fed as in
  production: the worker announces written rows on ``items.stored`` and a :class:`PoolFeed` follows it.
- ``workers_items_per_s`` (with ``--workers N``): phase C, ``N`` encoder processes (each as
  ``coldstart stream encode`` runs it) in one consumer group drain a backlog on a broker of their own,
  against 1 process on the same backlog; ``workers_ratio`` = N / 1;
- ``stages_phase_a`` / ``stages_phase_b``: where the worker's time went in each phase
  (:class:`~stream.encode_worker.StageTimes`: seconds blocked on image fetches, in the encoder, in the
  store write and in the announcement, summed and per batch); ``worker``: phase B's counters.

Items are real MovieLens posters + titles/genres/plots (``../shared/data/movielens``), served as image
URLs by a loopback HTTP server in its own process (the stand-in for the marketplace's image host shares
no GIL with the worker under test). The broker is a private Tansu on a free port, the store a fresh embedded
Feast store (SQLite online + parquet offline) in a temporary directory.

Usage::

    .venv/bin/python benchmarks/ingest.py [--items 400] [--freshness-items 150] [--artifact DIR | --tiny]
        [--workers 2 [--workers-items 256]]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from encode_workers import workers_rate

from coldstart.contracts import ImageRef, ItemListed
from coldstart.settings import Settings
from coldstart.topics import ITEMS_LISTED
from exploration.pool import ExactPool, ItemPools
from feature_repo import open_store
from models.config import OfflineEncoderConfig
from stream.broker import TansuBroker
from stream.config import EncodeWorkerSettings, ImageFetchSettings, KafkaSettings
from stream.dlq import read_dead_letters
from stream.egress_policy import EgressPolicy
from stream.encode_worker import EncodeWorker
from stream.freshness import FreshnessProbe
from stream.image_server import ImageServer
from stream.pool_feed import PoolFeed, StoredAnnouncer
from stream.producer import EventProducer


def load_encoder(args: argparse.Namespace, tmp: Path) -> tuple[Any, str, Path | None]:
    """The encoder under test, loaded as ``coldstart stream encode`` loads it for ``--compute-threads``."""
    # deferred import: torch, torch, onnx
    import models

    threads = 1 if args.compute_threads > 1 else None

    if args.tiny:
        # deferred import: torch, torch, onnx
        from models.testing import build_tiny_artifact

        path = build_tiny_artifact(tmp / "artifacts", seed=0)
        return (
            models.load_encoder(path, providers=["CPUExecutionProvider"], threads=threads),
            "tiny (random weights)",
            path,
        )
    if args.untrained_heads:
        # the default encoder's exact architecture and pretrained towers, heads untrained: same cost
        # per item as a trained artifact (throughput does not depend on head weights)
        import torch

        # deferred import: torch
        from models.export import build_artifact
        from models.item_tower import ItemTower
        from models.towers import build_towers

        torch.set_num_threads(2)
        towers = build_towers(OfflineEncoderConfig(), seed=0)
        path = build_artifact(towers, ItemTower(towers.image_dim, towers.text_dim).eval(), tmp / "artifacts")
        enc = models.load_encoder(path, providers=["CPUExecutionProvider"], threads=threads)
        return enc, "default architecture, pretrained towers, untrained heads", path
    enc = models.load_encoder(args.artifact, providers=["CPUExecutionProvider"], threads=threads)
    return enc, "trained", args.artifact


def catalog_items(settings: Settings, tmp: Path, n: int) -> tuple[Any, list[Any]]:
    # deferred import: torch
    from models.catalog import Catalog, adapt_movielens

    out = tmp / "catalog"
    adapt_movielens(settings.movielens_dir, out)
    cat = Catalog.load(out)
    if len(cat.items) < n:
        raise SystemExit(f"the MovieLens catalog has {len(cat.items)} items, {n} asked")
    return cat, cat.items[:n]


def event_of(item: Any, url: str | None, prefix: str = "") -> ItemListed:
    return ItemListed(
        item_id=f"{prefix}{item.item_id}",
        title=item.title,
        description=item.text,
        category=item.category,
        image=ImageRef(url=url) if url else None,
        seller_id="bench",
        listed_at=datetime.now(UTC),
    )


def encoder_rate(encoder: Any, items: list[Any], batch: int, concurrency: int = 1, limit: int = 256) -> float:
    """Items/s of the bare encoder on in-memory items: batches of ``batch``, ``concurrency`` at once
    (as the worker's compute threads run them)."""
    contents = [it.content() for it in items[: max(limit, batch * concurrency)]]
    batches = [contents[i : i + batch] for i in range(0, len(contents), batch)]
    encoder.encode(batches[0])  # warm-up
    start = time.perf_counter()
    with ThreadPoolExecutor(concurrency) as pool:
        list(pool.map(encoder.encode, batches))
    return len(contents) / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--items", type=int, default=400, help="phase A events (max-rate phase)")
    parser.add_argument("--freshness-items", type=int, default=150, help="phase B events (freshness)")
    parser.add_argument("--bad-every", type=int, default=50, help="plant a poison event every N events")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--linger-ms", type=int, default=20)
    parser.add_argument(
        "--compute-threads",
        type=int,
        default=EncodeWorkerSettings().compute_threads,
        help="batches encoded at once (worker and baseline alike; > 1: single-threaded sessions)",
    )
    parser.add_argument("--artifact", type=Path, default=None, help="encoder artifact (default: newest)")
    parser.add_argument("--tiny", action="store_true", help="tiny random encoder (mechanics only)")
    parser.add_argument(
        "--untrained-heads",
        action="store_true",
        help="default architecture with pretrained towers and untrained heads (no trained artifact needed)",
    )
    parser.add_argument(
        "--workers",
        type=int,
        default=0,
        help="also measure this many encoder processes in one group against one (phase C)",
    )
    parser.add_argument("--workers-items", type=int, default=256, help="phase C backlog per run")
    args = parser.parse_args()
    logging.basicConfig(level=logging.ERROR)

    with tempfile.TemporaryDirectory(prefix="coldstart-bench-") as tmp_name:
        tmp = Path(tmp_name)
        settings = Settings(data_dir=tmp / "data")
        with contextlib.redirect_stdout(sys.stderr):  # model loaders print; stdout is the JSON alone
            encoder, encoder_kind, artifact = load_encoder(args, tmp)
        cat, items = catalog_items(settings, tmp, args.items + args.freshness_items)
        phase_a, phase_b = items[: args.items], items[args.items :]
        encoder.batch_size = args.batch_size
        # the baseline is measured right before AND right after the pipeline phase (same items, same
        # batch size) and averaged, so load changes on a shared machine hit both sides alike
        enc_before = encoder_rate(encoder, phase_a, args.batch_size, args.compute_threads)

        store = open_store(settings)
        content_pool = ExactPool()
        pools = ItemPools(content=content_pool)
        with TansuBroker(partitions=4) as broker, ImageServer(cat.root, process=True) as server:
            kafka = KafkaSettings(
                bootstrap_servers=broker.bootstrap_servers,
                images=ImageFetchSettings(egress=EgressPolicy(allow_hosts=[server.host_port])),
                encode=EncodeWorkerSettings(
                    group_id="bench",
                    max_batch_size=args.batch_size,
                    linger_ms=args.linger_ms,
                    compute_threads=args.compute_threads,
                ),
            )
            bootstrap = broker.bootstrap_servers

            def url(it: Any) -> str | None:
                return server.url(it.image_path) if it.image_path is not None else None

            producer = EventProducer(bootstrap, kafka)
            planted = 0
            good_ids: list[str] = []
            for i, it in enumerate(phase_a):
                if args.bad_every and i % args.bad_every == args.bad_every - 1:
                    producer.send(ITEMS_LISTED, f"bad-{i}", b'{"item_id": "bad", "title": 3}')
                    planted += 1
                event = event_of(it, url(it))
                producer.publish_item(event)
                good_ids.append(event.item_id)
            producer.flush()

            # as in production: the worker announces rows on items.stored, the pool follows that topic
            feed = PoolFeed(
                bootstrap, pools.upsert_items, fetch_max_wait_ms=kafka.follow_fetch_wait_ms
            ).start()
            worker = EncodeWorker(
                bootstrap, kafka, encoder, store, producer=producer, on_stored=StoredAnnouncer(producer)
            )
            thread = threading.Thread(target=worker.run, daemon=True)
            thread.start()
            n_a = len(phase_a) + planted
            while worker.metrics.records == 0:
                time.sleep(0.001)
            t0 = time.perf_counter()
            while worker.metrics.written + worker.metrics.dead_lettered < n_a:
                time.sleep(0.002)
                if not thread.is_alive():
                    raise SystemExit("the worker died")
            pipe_rate = len(phase_a) / (time.perf_counter() - t0)
            worker.stop()
            thread.join(60)
            stages_a = {"batches": worker.metrics.batches, **worker.stages.snapshot()}
            enc_after = encoder_rate(encoder, phase_a, args.batch_size, args.compute_threads)
            enc_rate = (enc_before + enc_after) / 2
            worker = EncodeWorker(
                bootstrap, kafka, encoder, store, producer=producer, on_stored=StoredAnnouncer(producer)
            )
            thread = threading.Thread(target=worker.run, daemon=True)
            thread.start()
            while not worker.joined:  # wait for the group before timing freshness
                time.sleep(0.01)

            # phase B: publish at 50 % of the max rate; freshness = listed_at -> online AND in the pool
            interval = 1.0 / (0.5 * pipe_rate)
            probe = FreshnessProbe(
                store, pools.content, space="content", contains=content_pool.__contains__
            ).start()
            next_t = time.perf_counter()
            for it in phase_b:
                event = event_of(it, url(it))
                probe.expect(event.item_id, event.listed_at)
                producer.publish_item(event)
                good_ids.append(event.item_id)
                next_t += interval
                time.sleep(max(0.0, next_t - time.perf_counter()))
            producer.flush()
            probe.wait(60)
            probe.stop()
            worker.stop()
            thread.join(60)
            feed.stop()
            producer.close()
            p50, p99 = probe.percentiles()
            # phase C: N encoder processes in one consumer group against one, same backlog
            scale: dict[str, float] = {}
            if args.workers > 1:
                for n in (1, args.workers):
                    scale[str(n)] = round(
                        workers_rate(
                            n,
                            [event_of(it, url(it), f"w{n}-") for it in phase_a[: args.workers_items]],
                            [it.content() for it in phase_a[: args.batch_size]],
                            kafka,
                            artifact,
                            settings.data_dir,
                        ),
                        2,
                    )
            online = len(store.get_items(good_ids))
            dlq = len(read_dead_letters(bootstrap, ITEMS_LISTED))
            snap = worker.metrics.snapshot()

    total_events = len(phase_a) + len(phase_b) + planted
    print(
        json.dumps(
            {
                "items": total_events,
                "online": online,
                "dlq": dlq,
                "planted_bad": planted,
                "pipeline_items_per_s": round(pipe_rate, 2),
                "encoder_items_per_s": round(enc_rate, 2),
                "encoder_items_per_s_before_after": [round(enc_before, 2), round(enc_after, 2)],
                "overhead_ratio": round(pipe_rate / enc_rate, 3),
                "freshness_p50_s": None if p50 is None else round(p50, 3),
                "freshness_p99_s": None if p99 is None else round(p99, 3),
                "freshness_items": len(probe.latencies),
                "publish_rate_phase_b_per_s": round(0.5 * pipe_rate, 2),
                "batch_size": args.batch_size,
                "compute_threads": args.compute_threads,
                "linger_ms": args.linger_ms,
                "encoder": encoder_kind,
                "encoder_version": encoder.version,
                "stages_phase_a": stages_a,
                "worker": {
                    k: snap[k] for k in ("batches", "encode_s", "write_s", "image_failures", "text_only")
                },
                "stages_phase_b": worker.stages.snapshot(),
                **(
                    {
                        "workers_items_per_s": scale,
                        "workers_ratio": round(scale[str(args.workers)] / scale["1"], 3),
                    }
                    if scale
                    else {}
                ),
                "checks": {
                    "online_eq_items_minus_bad": online == total_events - planted,
                    "dlq_eq_planted": dlq == planted,
                    "overhead_ratio_ge_0_9": pipe_rate / enc_rate >= 0.9,
                    "freshness_p99_le_1s": p99 is not None and p99 <= 1.0,
                },
            }
        )
    )


if __name__ == "__main__":
    main()
