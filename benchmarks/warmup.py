"""Warm-up inside the learn consumer: throughput and freshness, on the embedded default (Tansu + SQLite).

The warm-up runs the posterior model the artifacts ship (calibrated here on random vectors). Prints one
JSON object:

* ``interactions_per_s``: a backlog of interactions through the learner (``LearnWorker`` + VW policy)
  with the warm-up stage (decode, join, batch math, one feature-store write per batch, pool and
  checkpoint writes, items.stored announcements), from its first to its last record;
* ``baseline_interactions_per_s``: the same backlog through the same learner with the stage's
  per-event kernel (``kernel="per_event"``: the warm-up rules applied one event at a time, the code
  path before the batch kernel), and ``ratio_vs_baseline``;
* ``learner_no_warmup_per_s``: the same backlog through the learner without the stage;
* ``stage_only_per_s``: the stage alone on the same kind of batches, no Kafka;
* ``partitioned_one_member_per_s``: the same backlog through one member of the partitioned warm-up
  (``warmup.layout = "partitioned"``: user side, ``warmup.item_evidence``, item side; no policy);
* ``freshness_p50_s`` / ``freshness_p99_s``: a live stream at ``--rate`` interactions/s (default 5,000:
  half the 10,000/s target) into a learner with the stage; for each click, event ``ts`` → the item's
  row in the online store counts that click (``clicks >= k`` for the item's k-th click), polled every
  10 ms by another process (Feast's SQLite online table read directly, the ``clicks`` rows in one query);
  ``learner_cpu_share``, ``publisher_cpu_share``, ``probe_cpu_share``: CPU seconds per second of each
  process in that phase (this machine has 2 cores; the broker is a fourth process).

Each throughput phase has a broker of its own (an empty topic) and items and users of its own. Every
phase runs with the collector settings of a running learner (``learn_command``: start-up objects
frozen, ``learner_young_gc_threshold`` net allocations between young collections).

    .venv/bin/python benchmarks/warmup.py [--items 400] [--users 2000] [--events 20000] [--rate 5000]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import multiprocessing
import tempfile
import threading
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from coldstart.contracts import Interaction, now_utc
from coldstart.process import settled_heap
from coldstart.settings import Settings
from exploration.config import ExplorationSettings
from exploration.model_store import LocalModelStore
from exploration.pool import ExactPool, ItemPools
from feature_repo import open_store
from feature_repo.records import StoredUser
from models.warmup.posterior import fit_posterior_calibration
from models.warmup.served import ServedWarmup
from stream.broker import TansuBroker
from stream.config import KafkaSettings, WarmupStageConfig
from stream.learn_worker import LEARNER_YOUNG_GC_THRESHOLD, LearnWorker
from stream.online_learner import OnlineLearner
from stream.pool_feed import StoredAnnouncer
from stream.producer import EventProducer
from stream.warmup_batch import Delivery
from stream.warmup_checkpoint import WarmupCheckpoint
from stream.warmup_group import EvidencePublisher, WarmupGroupWorker
from stream.warmup_model import build_warmup_model
from stream.warmup_sides import ItemSide, UserSide
from stream.warmup_stage import WarmupStage

ITEM_DIM, CONTENT_DIM = 64, 256
_PROBE_PERIOD_S = 0.01  # the freshness reader's poll period


def _seed_store(store: Any, prefix: str, n_items: int, n_users: int, rng: np.random.Generator) -> None:
    # deferred import: Feast
    from feature_repo.testing import random_items

    now = datetime.now(UTC)
    items = random_items(
        n_items,
        seed=rng,
        prefix=prefix,
        dim=ITEM_DIM,
        content_dim=CONTENT_DIM,
        listed_at=now,
        categories=7,
        encoder_version="bench",
    )
    for start in range(0, len(items), 200):
        store.write_items(items[start : start + 200])
    users = [
        StoredUser(f"{prefix}-u{j}", rng.standard_normal(ITEM_DIM).astype(np.float32), 0, "trained", now)
        for j in range(n_users)
    ]
    for start in range(0, len(users), 500):
        store.users().write_users(users[start : start + 500])


def _events(prefix: str, n: int, n_items: int, n_users: int, rng: np.random.Generator) -> list[Any]:

    kinds = rng.choice(["impression", "click", "add_to_cart", "purchase"], size=n, p=[0.6, 0.3, 0.07, 0.03])
    items = rng.zipf(1.3, size=n) % n_items  # a few popular items, a long tail
    users = rng.integers(n_users, size=n)
    now = datetime.now(UTC)
    return [
        Interaction(
            event_id=f"{prefix}-e{k}",
            user_id=f"{prefix}-u{int(users[k])}",
            item_id=f"{prefix}-i{int(items[k])}",
            kind=str(kinds[k]),  # type: ignore[arg-type]
            ts=now,
        )
        for k in range(n)
    ]


def _learner(settings: Any, bootstrap: str, group: str, stage: Any) -> Any:

    learner = OnlineLearner(
        settings.exploration, LocalModelStore(settings.data_dir / f"models-{group}"), seed=0
    )
    worker = LearnWorker(
        bootstrap,
        settings.kafka,
        learner,
        group,
        max_poll_records=settings.exploration.learner_max_poll_records,
    )
    worker.warmup = stage
    return worker


def _group(settings: Any, store: Any, producer: Any, served: Any, state_dir: Path) -> Any:
    """One member of the partitioned warm-up (what a ``partitioned`` learner runs beside the policy)."""

    cfg = WarmupStageConfig(layout="partitioned")
    model, version = build_warmup_model(cfg, served, "bench")
    return WarmupGroupWorker(
        settings.kafka.bootstrap_servers,
        settings.kafka,
        UserSide(store, model, cfg, version, EvidencePublisher(producer)),
        ItemSide(
            store,
            model,
            cfg,
            version,
            pools=ItemPools(ExactPool(), ExactPool()),
            announce=StoredAnnouncer(producer, wait=False),
        ),
        "grp-partitioned.warmup",
        state_dir,
        durable=cfg.durable,
        max_poll_records=settings.exploration.learner_max_poll_records,
    )


def _served(rng: np.random.Generator) -> Any:
    """A posterior warm-up calibrated on random vectors (what ``models train`` ships, in shape)."""

    users = rng.standard_normal((2000, ITEM_DIM)).astype(np.float32)
    items = rng.standard_normal((400, ITEM_DIM)).astype(np.float32)
    cal = fit_posterior_calibration(
        users, items, rng.integers(2000, size=5000), rng.integers(400, size=5000), seed=0
    )
    return ServedWarmup(cal, prior_strength=10.0, min_positives=1, validation={})


def _throughput(worker: Any, done: Any, n: int, timeout_s: float = 300.0) -> float:
    """Run ``worker`` on a published backlog; records/s from its first to its last record."""
    thread = threading.Thread(target=worker.run, kwargs={"max_s": timeout_s}, daemon=True)
    thread.start()
    t_first = t_last = None
    k_first = 0
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        k = done()
        now = time.perf_counter()
        if k > 0 and t_first is None:
            t_first, k_first = now, k
        if k >= n:
            t_last = now
            break
        time.sleep(0.002)
    worker.stop()
    thread.join(60)
    if t_first is None or t_last is None:
        raise RuntimeError(f"the learner did not finish the backlog ({done()} of {n})")
    # from the first progress seen (group joined, first batch done) to the end: the records of that
    # first batch are not counted, their time was not measured
    return (n - k_first) / max(t_last - t_first, 1e-9)


def _probe_main(data_dir: str, expect_q: Any, result_q: Any, settle_s: float) -> None:
    """The reader (another process): event ts → the online ``item_state`` row counts the click.

    It reads Feast's SQLite online table directly, the ``clicks`` rows only, in one query, and
    decodes them as Feast does (``ValueProto``, ``serialize_entity_key``): the rows that
    ``get_online_features`` returns, without Feast's per-call machinery. Through
    ``get_online_features`` one read of the ~350 items waiting for a click took 56 ms and the reader
    ~0.44 of a core, on the 2-core machine the learner runs on, and its period grew with the backlog
    it measured. It polls every ``_PROBE_PERIOD_S`` and reports its own CPU share.
    """
    import resource  # deferred import: this process's CPU time, POSIX only
    import sqlite3  # deferred import: only this reader opens the online file itself

    # deferred import: Feast (only this reader uses it directly)
    from feast.infra.key_encoding_utils import serialize_entity_key
    from feast.protos.feast.types.EntityKey_pb2 import EntityKey
    from feast.protos.feast.types.Value_pb2 import Value

    from feature_repo.opening import repo_config

    settings = Settings(data_dir=Path(data_dir))
    config = repo_config(settings.feast, settings.data_dir)
    path = Path(config.online_store.path)
    if not path.is_absolute() and config.repo_path is not None:
        path = Path(config.repo_path) / path
    conn: sqlite3.Connection | None = None  # opened at the first read: the file may not exist yet
    query = f'SELECT entity_key, value FROM "{config.project}_item_state" WHERE feature_name = ?'
    version = config.entity_key_serialization_version
    names: dict[bytes, str] = {}

    def key_of(item_id: str) -> bytes:
        proto = EntityKey(join_keys=["item_id"], entity_values=[Value(string_val=item_id)])
        return bytes(serialize_entity_key(proto, entity_key_serialization_version=version))

    pending: dict[str, list[tuple[int, float]]] = {}
    lat: list[float] = []
    reads = 0
    ended_at: float | None = None
    t_start, cpu_start = time.monotonic(), resource.getrusage(resource.RUSAGE_SELF)
    while True:
        while not expect_q.empty():
            msg = expect_q.get()
            if msg is None:
                ended_at = time.monotonic()
            else:
                item_id, k, ts = msg
                if item_id not in pending:
                    names[key_of(item_id)] = item_id
                pending.setdefault(item_id, []).append((k, ts))
        waiting = any(pending.values())
        if waiting:
            conn = conn or sqlite3.connect(path)
            rows = conn.execute(query, ("clicks",)).fetchall()
            now = time.time()
            reads += 1
            for key, blob in rows:
                item_id = names.get(bytes(key))
                if item_id is None or not pending[item_id]:
                    continue
                value = Value()
                value.ParseFromString(blob)
                clicks = value.int64_val
                while pending[item_id] and clicks >= pending[item_id][0][0]:
                    lat.append(now - pending[item_id].pop(0)[1])
        if ended_at is not None and (not waiting or time.monotonic() - ended_at > settle_s):
            break
        time.sleep(_PROBE_PERIOD_S)
    cpu = resource.getrusage(resource.RUSAGE_SELF)
    cpu_s = cpu.ru_utime + cpu.ru_stime - cpu_start.ru_utime - cpu_start.ru_stime
    share = cpu_s / max(time.monotonic() - t_start, 1e-9)
    result_q.put((lat, sum(len(v) for v in pending.values()), share, reads))


def _publisher_main(cmd_q: Any, expect_q: Any, done_q: Any) -> None:
    """The live publisher (another process, like the marketplace backend): paced interactions, and
    for each click the (item, k-th click, event ts) the reader waits for."""

    cmd = cmd_q.get()
    if cmd is None:
        return
    import resource  # deferred import: this process's CPU time, POSIX only

    bootstrap, prefix, n, n_items, n_users, rate = cmd
    cpu_start = resource.getrusage(resource.RUSAGE_SELF)
    live = _events(prefix, n, n_items, n_users, np.random.default_rng(1))
    producer = EventProducer(bootstrap, KafkaSettings(bootstrap_servers=bootstrap, partitions=4))
    clicks: dict[str, int] = {}
    t_start = time.perf_counter()
    for k, ev in enumerate(live):
        pause = t_start + k / rate - time.perf_counter()
        if pause > 0:
            time.sleep(pause)
        ev = ev.model_copy(update={"ts": now_utc()})
        if ev.kind != "impression":
            clicks[ev.item_id] = clicks.get(ev.item_id, 0) + 1
            expect_q.put((ev.item_id, clicks[ev.item_id], ev.ts.timestamp()))
        producer.publish_interaction(ev)
    wall = time.perf_counter() - t_start
    producer.flush()
    producer.close()
    cpu = resource.getrusage(resource.RUSAGE_SELF)
    cpu_s = cpu.ru_utime + cpu.ru_stime - cpu_start.ru_utime - cpu_start.ru_stime
    expect_q.put(None)
    done_q.put((len(live) / wall, cpu_s / wall))


def _progress(worker: Any, stage: Any) -> Any:
    """Records fully processed so far (by the stage when there is one, else by the learner)."""
    if stage is None:
        return lambda: worker.learner.stats.interactions
    s = stage.stats
    return lambda: s.applied + s.redelivered + s.duplicates + s.unknown_items + s.malformed


def run(args: argparse.Namespace, tmp: Path) -> dict[str, Any]:

    rng = np.random.default_rng(0)
    served = _served(rng)
    # the freshness reader is another process (forked now, before any client thread exists)
    ctx = multiprocessing.get_context("fork")
    expect_q, result_q = ctx.Queue(), ctx.Queue()
    probe = ctx.Process(target=_probe_main, args=(str(tmp), expect_q, result_q, 30.0), daemon=True)
    probe.start()
    cmd_q, done_q = ctx.Queue(), ctx.Queue()
    publisher = ctx.Process(target=_publisher_main, args=(cmd_q, expect_q, done_q), daemon=True)
    publisher.start()
    out: dict[str, Any] = {"items": args.items, "users": args.users, "events": args.events, "rate": args.rate}
    store = open_store(Settings(data_dir=tmp))
    # started: from here every phase runs with the collector settings of a running learner (learn_command)
    heap = contextlib.ExitStack()
    heap.enter_context(settled_heap(LEARNER_YOUNG_GC_THRESHOLD))

    def settings_for(bootstrap: str) -> Settings:
        return Settings(
            data_dir=tmp,
            kafka=KafkaSettings(bootstrap_servers=bootstrap, partitions=4),
            exploration=ExplorationSettings(checkpoint_interval_s=5.0),
        )

    def stage_for(
        name: str, kernel: str, producer: Any, bootstrap: str | None, pools: Any = None
    ) -> WarmupStage:
        cfg = WarmupStageConfig(kernel=kernel)  # type: ignore[arg-type]
        return WarmupStage(
            store,
            WarmupCheckpoint(tmp / f"warmup-{name}.sqlite3", durable=cfg.durable),
            cfg,
            pools=pools,
            announce=None if producer is None else StoredAnnouncer(producer, wait=False),
            bootstrap_servers=bootstrap,
            served=served,
            served_version="bench",
        )

    # 1. the stage alone, no Kafka (batches of the learner's poll size)
    batch = ExplorationSettings().learner_max_poll_records
    _seed_store(store, "solo", args.items, args.users, rng)
    events = _events("solo", args.events, args.items, args.users, rng)
    solo = stage_for("solo", "batch", None, None)
    t0 = time.perf_counter()
    for start in range(0, len(events), batch):
        solo.process([Delivery(e) for e in events[start : start + batch]])
    out["stage_only_per_s"] = round(len(events) / (time.perf_counter() - t0), 1)

    # 2. backlogs through the learner: no stage, the per-event kernel, the batch kernel
    rates = {}
    for name, kernel in (("no_warmup", None), ("per_event", "per_event"), ("batch", "batch")):
        with TansuBroker(partitions=4) as broker:
            bootstrap = broker.bootstrap_servers
            settings = settings_for(bootstrap)
            producer = EventProducer(bootstrap, settings.kafka)
            _seed_store(store, name, args.items, args.users, rng)
            for e in _events(name, args.events, args.items, args.users, rng):
                producer.publish_interaction(e)
            producer.flush()
            stage = None
            if kernel is not None:
                stage = stage_for(name, kernel, producer, bootstrap, ItemPools(ExactPool(), ExactPool()))
            worker = _learner(settings, bootstrap, f"grp-{name}", stage)
            rates[name] = _throughput(worker, _progress(worker, stage), args.events)
            producer.close()
    # 2b. the partitioned layout, one member (the per-process cost of the user/item split)
    with TansuBroker(partitions=4) as broker:
        bootstrap = broker.bootstrap_servers
        settings = settings_for(bootstrap)
        producer = EventProducer(bootstrap, settings.kafka)
        _seed_store(store, "partitioned", args.items, args.users, rng)
        for e in _events("partitioned", args.events, args.items, args.users, rng):
            producer.publish_interaction(e)
        producer.flush()
        group = _group(settings, store, producer, served, tmp / "warmup-partitioned")
        # each interaction is applied twice: on its user's side, then (as evidence) on its item's
        rates["partitioned"] = _throughput(group, lambda: group.stats.applied // 2, args.events)
        producer.close()
    out["partitioned_one_member_per_s"] = round(rates["partitioned"], 1)
    out["interactions_per_s"] = round(rates["batch"], 1)
    out["baseline_interactions_per_s"] = round(rates["per_event"], 1)
    out["ratio_vs_baseline"] = round(rates["batch"] / rates["per_event"], 3)
    out["learner_no_warmup_per_s"] = round(rates["no_warmup"], 1)
    out["target_interactions_per_s"] = 10_000

    # 3. freshness: a live stream into a learner with the stage, its group joined
    with TansuBroker(partitions=4) as broker:
        bootstrap = broker.bootstrap_servers
        settings = settings_for(bootstrap)
        producer = EventProducer(bootstrap, settings.kafka)
        prefix = "live"
        _seed_store(store, prefix, args.items, args.users, rng)
        stage = stage_for("live", "batch", producer, bootstrap, ItemPools(ExactPool(), ExactPool()))
        worker = _learner(settings, bootstrap, "grp-live", stage)
        thread = threading.Thread(target=worker.run, daemon=True)
        thread.start()
        first = _events("join", 100, args.items, args.users, rng)  # unknown items: counted, not written
        for ev in first:
            producer.publish_interaction(ev)
        producer.flush()
        deadline = time.monotonic() + 120
        while stage.stats.unknown_items < len(first):
            if time.monotonic() > deadline:
                raise RuntimeError("the live learner did not join its group")
            time.sleep(0.05)
        cpu0, t0 = time.process_time(), time.monotonic()
        cmd_q.put((bootstrap, prefix, int(args.rate * args.seconds), args.items, args.users, args.rate))
        achieved, publisher_share = done_q.get(timeout=args.seconds * 3 + 120)
        out["learner_cpu_share"] = round((time.process_time() - cpu0) / (time.monotonic() - t0), 3)
        out["rate_achieved"] = round(achieved, 1)
        out["publisher_cpu_share"] = round(publisher_share, 3)
        lat, missing, probe_share, probe_reads = result_q.get(timeout=120)
        out["probe_cpu_share"] = round(probe_share, 3)
        out["probe_reads"] = probe_reads
        probe.join(10)
        publisher.join(10)
        worker.stop()
        thread.join(60)
        producer.close()
    a = np.asarray(lat)
    out["freshness_p50_s"] = round(float(np.percentile(a, 50)), 4) if a.size else None
    out["freshness_p99_s"] = round(float(np.percentile(a, 99)), 4) if a.size else None
    out["freshness_max_s"] = round(float(a.max()), 4) if a.size else None
    out["freshness_n"] = int(a.size)
    out["freshness_not_seen"] = missing
    out["live_batches"] = stage.stats.batches
    nb = max(stage.stats.batches, 1)
    out["live_events_per_batch"] = round(stage.stats.applied / nb, 1)
    out["live_stage_s_per_batch"] = {
        k: round(getattr(stage.stats, k) / nb, 4)
        for k in ("seconds", "compute_s", "write_s", "publish_s", "checkpoint_s")
    }
    out["target_freshness_p99_s"] = 1.0
    out["learner_young_gc_threshold"] = LEARNER_YOUNG_GC_THRESHOLD
    store.close()
    heap.close()
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--items", type=int, default=400)
    ap.add_argument("--users", type=int, default=2000)
    ap.add_argument("--events", type=int, default=20000, help="backlog size of the throughput phases")
    ap.add_argument("--rate", type=float, default=5000.0, help="live interactions/s of the freshness phase")
    ap.add_argument("--seconds", type=float, default=15.0, help="length of the freshness phase")
    args = ap.parse_args()
    # the collector settings of a running learner (``learn_command``), for every phase alike
    with (
        settled_heap(LEARNER_YOUNG_GC_THRESHOLD),
        tempfile.TemporaryDirectory(prefix="coldstart-bench-warmup-") as d,
    ):
        print(json.dumps(run(args, Path(d))))


if __name__ == "__main__":
    main()
