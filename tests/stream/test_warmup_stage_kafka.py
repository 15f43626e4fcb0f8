"""The warm-up inside the real learner: Tansu broker, SQLite feature store, a learner killed with SIGKILL."""

from __future__ import annotations

import json
import multiprocessing
import os
import signal
import sqlite3
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from coldstart.contracts import Interaction
from coldstart.settings import Settings
from exploration.config import ExplorationSettings
from exploration.pool import ExactPool, ItemPools
from feature_repo import open_store
from feature_repo.feast_store import FeastFeatureStore
from feature_repo.records import StoredItem, StoredUser
from feature_repo.testing import random_items
from stream.broker import TansuBroker
from stream.config import ArchiveSettings, KafkaSettings, WarmupStageConfig
from stream.pool_feed import PoolFeed
from stream.producer import EventProducer
from stream.warmup_batch import Delivery
from stream.warmup_checkpoint import WarmupCheckpoint
from stream.warmup_stage import WarmupStage
from tests.stream.helpers import module_store_fixtures

store_dir, store = module_store_fixtures()  # own store (see the helper)


pytestmark = pytest.mark.integration

T0 = datetime(2026, 6, 1, 12, 0, tzinfo=UTC)
DIM = 8
N_ITEMS, N_USERS = 12, 10


def _items(prefix: str) -> list[StoredItem]:
    return random_items(N_ITEMS, seed=11, prefix=prefix, listed_at=T0, dim=DIM)


def _users(prefix: str) -> list[StoredUser]:
    rng = np.random.default_rng(12)
    return [
        StoredUser(f"{prefix}-u{j}", rng.standard_normal(DIM).astype(np.float32), 0, "trained", T0)
        for j in range(N_USERS)
    ]


def _events(prefix: str, n: int) -> list[Interaction]:
    rng = np.random.default_rng(13)
    kinds = ["impression", "impression", "click", "add_to_cart", "purchase", "rating"]
    out = []
    for k in range(n):
        kind = kinds[int(rng.integers(len(kinds)))]
        out.append(
            Interaction(
                event_id=f"{prefix}-e{k}",
                user_id=f"{prefix}-u{int(rng.integers(N_USERS))}",
                item_id=f"{prefix}-i{int(rng.integers(N_ITEMS))}",
                kind=kind,  # type: ignore[arg-type]
                value=float(rng.integers(1, 6)) if kind == "rating" else None,
                ts=T0 + timedelta(seconds=k),
            )
        )
    return out


def clean_run(
    tmp_path: Path, items: list[StoredItem], users: list[StoredUser], events: list[Interaction]
) -> tuple[Any, WarmupStage]:
    """One learner's result, the reference: the stage over ``events`` in one batch, no Kafka, no
    crash, on a store of its own (returned with the stage)."""
    clean_store = open_store(Settings(data_dir=tmp_path / "clean"))
    clean_store.write_items(items)
    clean_store.users().write_users(users)
    stage = WarmupStage(
        clean_store,
        WarmupCheckpoint(tmp_path / "clean.sqlite3", durable=False),
        WarmupStageConfig(announce=False, max_tracked_events=8),
    )
    stage.process([Delivery(e) for e in events])
    return clean_store, stage


def assert_same_items(got_store: Any, expected_store: Any, items: list[StoredItem]) -> None:
    """Every item's vector (1e-5), clicks, impressions and status are the reference's, and it warmed up."""
    ids = [it.item_id for it in items]
    got, expected = got_store.get_items(ids), expected_store.get_items(ids)
    for i, item in zip(ids, items, strict=True):
        np.testing.assert_allclose(got[i].item_vector, expected[i].item_vector, rtol=1e-5, atol=1e-5)
        assert (got[i].clicks, got[i].impressions, got[i].status) == (
            expected[i].clicks,
            expected[i].impressions,
            expected[i].status,
        ), i
        assert not np.allclose(got[i].item_vector, item.item_vector)  # it did warm up


def _settings(data_dir: Path, bootstrap: str, group: str) -> Settings:
    return Settings(
        data_dir=data_dir,
        # the archive has its own crash test (tests/stream/test_archive.py)
        kafka=KafkaSettings(
            bootstrap_servers=bootstrap, partitions=4, archive=ArchiveSettings(with_learner=False)
        ),
        exploration=ExplorationSettings(learner_group_id=group, checkpoint_interval_s=3600.0),
        # 8 remembered event ids per item/user: re-deliveries must be recognised by the checkpointed offsets
        warmup=WarmupStageConfig(max_tracked_events=8),
    )


def _learner_main(data_dir: str, bootstrap: str, group: str, idle_exit_s: float | None, out: str) -> None:
    """A learner process running what ``coldstart stream learn`` runs."""
    from stream.learn_worker import learn_command

    stats = learn_command(idle_exit_s=idle_exit_s, settings=_settings(Path(data_dir), bootstrap, group))
    warm = stats.warmup
    Path(out).write_text(
        json.dumps({"interactions": stats.interactions, "warmup": vars(warm) if warm else None})
    )


def _applied(checkpoint: Path) -> int:
    if not checkpoint.exists():
        return 0
    with sqlite3.connect(checkpoint) as db:
        try:
            return int(db.execute("SELECT coalesce(sum(next_offset), 0) FROM offsets").fetchone()[0])
        except sqlite3.OperationalError:
            return 0


def _wait(cond: Any, timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


def test_learner_killed_mid_stream_resumes_from_checkpoint_without_loss(
    store: FeastFeatureStore, store_dir: Path, tmp_path: Path
) -> None:
    prefix = uuid.uuid4().hex[:8]
    group = f"learn-{prefix}"
    items, users = _items(prefix), _users(prefix)
    store.write_items(items)
    store.users().write_users(users)
    events = _events(prefix, 600)
    dups = events[590:600]  # published twice (a producer retry): same event ids, new offsets
    # spawn, not fork: this process runs Kafka and pool-feed threads, whose locks a forked child could
    # inherit held (a learner that never starts)
    ctx = multiprocessing.get_context("spawn")
    with TansuBroker(partitions=4) as broker:
        bootstrap = broker.bootstrap_servers
        checkpoint = store_dir / "warmup" / f"{group}.sqlite3"
        pools = ItemPools(ExactPool(), ExactPool())
        pools.rebuild_from_store(store)
        with PoolFeed(bootstrap, pools.upsert_items), EventProducer(bootstrap) as producer:
            for ev in events[:300]:
                producer.publish_interaction(ev)
            producer.flush()
            first = ctx.Process(
                target=_learner_main, args=(str(store_dir), bootstrap, group, None, str(tmp_path / "a.json"))
            )
            first.start()
            _wait(lambda: _applied(checkpoint) >= 300, 60, "the first learner to apply 300 events")
            for ev in events[300:500]:
                producer.publish_interaction(ev)
            producer.flush()
            _wait(lambda: _applied(checkpoint) > 300, 30, "the first learner to start on the second part")
            assert first.pid is not None
            os.kill(first.pid, signal.SIGKILL)  # mid-stream: no Kafka offset was ever committed
            first.join(10)
            assert first.exitcode == -signal.SIGKILL
            for ev in events[500:] + dups:
                producer.publish_interaction(ev)
            producer.flush()
            second = ctx.Process(
                target=_learner_main, args=(str(store_dir), bootstrap, group, 60.0, str(tmp_path / "b.json"))
            )
            second.start()
            _wait(lambda: _applied(checkpoint) >= 610, 60, "the restarted learner to catch up")
            assert second.pid is not None
            os.kill(second.pid, signal.SIGTERM)  # a graceful stop: checkpoint, commit, exit
            second.join(30)
            assert second.exitcode == 0
            report = json.loads((tmp_path / "b.json").read_text())
            warm = report["warmup"]
            # the restart re-read everything from offset 0 (nothing committed): what the checkpoint
            # covers is skipped, the rest applied once; the 10 re-published events are duplicates
            assert warm["redelivered"] >= 300, report
            assert warm["duplicates"] == 10
            assert _applied(checkpoint) == 610
            ids = [it.item_id for it in items]
            final = store.get_items(ids)
            # the pool of another process (the API's, fed by items.stored) sees the final vectors
            _wait(
                lambda: all(
                    (e := pools.item.get(i)) is not None and np.array_equal(e.vector, final[i].item_vector)  # type: ignore[attr-defined]
                    for i in ids
                ),
                15,
                "the pool feed to deliver the warmed-up vectors",
            )
    clean_store, clean = clean_run(tmp_path, items, users, events + dups)
    assert clean.stats.applied == 600 and clean.stats.duplicates == 10
    assert_same_items(store, clean_store, items)
    uids = [u.user_id for u in users]
    got_u, exp_u = store.users().get_users(uids), clean_store.users().get_users(uids)
    with sqlite3.connect(checkpoint) as db:
        counts = dict(db.execute("SELECT user_id, interactions FROM users").fetchall())
    for u in uids:
        np.testing.assert_allclose(got_u[u].vector, exp_u[u].vector, rtol=1e-5, atol=1e-5)
        user_state = clean.user_state(u)
        assert user_state is not None and counts[u] == user_state.interactions


class _Record:
    """The fields of a ``kafka`` ConsumerRecord the stage reads."""

    def __init__(self, topic: str, partition: int, offset: int, value: bytes) -> None:
        self.topic, self.partition, self.offset, self.value = topic, partition, offset, value


def test_a_recreated_topic_is_a_new_log_not_a_redelivery(store: FeastFeatureStore, tmp_path: Path) -> None:
    from coldstart.contracts import encode_event

    prefix = uuid.uuid4().hex[:8]
    items, users = _items(prefix), _users(prefix)
    store.write_items(items)
    store.users().write_users(users)
    events = _events(prefix, 30)
    path = tmp_path / "cp.sqlite3"

    def polled(evs: list[Interaction]) -> dict[str, list[_Record]]:
        return {"tp": [_Record("interactions", 0, k, encode_event(e)) for k, e in enumerate(evs)]}

    with TansuBroker(partitions=1) as first:
        stage = WarmupStage(store, WarmupCheckpoint(path), bootstrap_servers=first.bootstrap_servers)
        assert stage.apply_polled(polled(events[:20])).applied == 20
        assert stage.apply_polled(polled(events[:20])).redelivered == 20  # same log: a re-delivery
        stage.close()
    # the embedded broker restarts (memory storage): the topic is new, its offsets start at 0 again
    with TansuBroker(partitions=1) as second:
        stage = WarmupStage(store, WarmupCheckpoint(path), bootstrap_servers=second.bootstrap_servers)
        assert stage.applied_offset("interactions", 0) == 20
        res = stage.apply_polled(polled(events[20:]))
        assert (res.applied, res.redelivered) == (10, 0)
        assert stage.applied_offset("interactions", 0) == 10
        stage.close()


def test_apply_polled_parses_only_the_records_the_caller_did_not(
    store: FeastFeatureStore, tmp_path: Path
) -> None:
    """The learner parses every record once and hands the results on: the stage takes them as given
    and parses the rest itself. A malformed record is counted and its offset passed, and the valid
    records before it in the same poll are applied (they once counted as re-deliveries: lost)."""
    from coldstart.contracts import encode_event

    prefix = uuid.uuid4().hex[:8]
    store.write_items(_items(prefix))
    store.users().write_users(_users(prefix))
    events = _events(prefix, 12)
    # records 0-5 carry bytes the stage could not parse: only the caller's parse makes them count
    records = [_Record("interactions", 0, k, b"\xff not json") for k in range(6)]
    records += [_Record("interactions", 0, k, encode_event(events[k])) for k in range(6, 12)]
    records.append(_Record("interactions", 0, 12, b"{}"))
    decoded = {("interactions", 0, k): events[k] for k in range(6)}
    stage = WarmupStage(store, WarmupCheckpoint(tmp_path / "cp.sqlite3"))
    res = stage.apply_polled({"tp": records}, decoded)
    assert (res.applied, res.malformed) == (12, 1)
    assert stage.applied_offset("interactions", 0) == 13
    assert stage.apply_polled({"tp": records[:6]}).malformed == 6  # without the caller's parse
    stage.close()
