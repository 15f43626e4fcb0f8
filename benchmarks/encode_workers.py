"""Several encoder worker processes in one consumer group against one (``benchmarks/ingest.py
--workers N``): each process runs the worker as ``coldstart stream encode`` does, with its encoder
warmed up on ``warm`` first, and reports when it polled its first record and wrote its last batch.
"""

from __future__ import annotations

import logging
import multiprocessing
import threading
import time
from pathlib import Path
from typing import Any

from coldstart.contracts import ItemListed
from coldstart.settings import Settings
from feature_repo import open_store
from stream.broker import TansuBroker
from stream.config import KafkaSettings
from stream.encode_worker import EncodeWorker
from stream.pool_feed import PoolFeed, StoredAnnouncer
from stream.producer import EventProducer


def _encode_worker_main(
    artifact: str | None,
    threads: int | None,
    kafka_json: str,
    data_dir: str,
    warm: list[Any],
    stop: Any,
    report: Any,
) -> None:
    """One ``coldstart stream encode`` process: the worker of the artifact, until ``stop`` is set;
    reports (wall time of its first polled record, of its last write, items written). The encoder
    runs one batch of ``warm`` first, as the in-process phases' encoder had (its first run is slow)."""
    # deferred import: torch
    import models

    logging.basicConfig(level=logging.ERROR)
    kafka = KafkaSettings.model_validate_json(kafka_json)
    bootstrap = str(kafka.bootstrap_servers)
    path = None if artifact is None else Path(artifact)
    encoder = models.load_encoder(path, providers=["CPUExecutionProvider"], threads=threads)
    encoder.batch_size = kafka.encode.max_batch_size
    encoder.encode(warm)
    store = open_store(Settings(data_dir=Path(data_dir)))
    producer = EventProducer(bootstrap, kafka)
    worker = EncodeWorker(
        bootstrap, kafka, encoder, store, producer=producer, on_stored=StoredAnnouncer(producer)
    )
    thread = threading.Thread(target=worker.run, daemon=True)
    thread.start()
    first = last = None
    written = 0
    while not stop.wait(0.005):
        now = time.time()
        if first is None and worker.metrics.records > 0:
            first = now
        if worker.metrics.written != written:
            written, last = worker.metrics.written, now
    worker.stop()
    thread.join(60)
    producer.close()
    report.put((first, last, written))


def workers_rate(
    n_workers: int,
    events: list[ItemListed],
    warm: list[Any],
    kafka: KafkaSettings,
    artifact: Path | None,
    data_dir: Path,
) -> float:
    """Items/s of ``n_workers`` encoder processes in one consumer group draining a published backlog
    (a broker of its own): items written / (last write - first polled record), over all processes."""

    ctx = multiprocessing.get_context("spawn")  # the children load their own encoder, no forked threads
    seen: set[str] = set()

    def count(rows: Any) -> None:
        seen.update(r.item_id for r in rows)

    with TansuBroker(partitions=4) as broker:
        bootstrap = broker.bootstrap_servers
        cfg = kafka.model_copy(update={"bootstrap_servers": bootstrap})
        producer = EventProducer(bootstrap, cfg)
        for event in events:
            producer.publish_item(event)
        producer.flush()
        feed = PoolFeed(bootstrap, count, fetch_max_wait_ms=cfg.follow_fetch_wait_ms).start()
        stop, report = ctx.Event(), ctx.Queue()
        threads = 1 if cfg.encode.compute_threads > 1 else None
        worker_args = (
            None if artifact is None else str(artifact),
            threads,
            cfg.model_dump_json(),
            str(data_dir),
            warm,
        )
        procs = [
            ctx.Process(target=_encode_worker_main, args=(*worker_args, stop, report))
            for _ in range(n_workers)
        ]
        for proc in procs:
            proc.start()
        deadline = time.monotonic() + 600
        while len(seen) < len(events) and time.monotonic() < deadline:
            time.sleep(0.05)
        stop.set()
        reports = [report.get(timeout=120) for _ in procs]
        for proc in procs:
            proc.join(60)
        feed.stop()
        producer.close()
    if len(seen) < len(events):
        raise SystemExit(f"{n_workers} workers wrote {len(seen)} of {len(events)} items")
    active = [r for r in reports if r[0] is not None and r[1] is not None]
    written = sum(r[2] for r in active)
    return written / max(max(r[1] for r in active) - min(r[0] for r in active), 1e-9)
