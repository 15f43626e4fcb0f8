"""Several learners in one consumer group (``warmup.layout = "partitioned"``): Tansu with 4 partitions,
the SQLite feature store, learner processes running ``learn_command``; one of them SIGKILLed."""

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
from kafka import KafkaConsumer, TopicPartition

from coldstart.contracts import Interaction, ItemEvidence, encode_event
from coldstart.decisions import Candidate, Decision, Slot
from coldstart.settings import Settings
from coldstart.topics import INTERACTIONS, ITEM_EVIDENCE
from exploration.config import ExplorationSettings, RewardConfig
from exploration.model_store import LocalModelStore
from feature_repo.feast_store import FeastFeatureStore
from feature_repo.records import StoredItem, StoredUser
from stream.broker import TansuBroker
from stream.config import ArchiveSettings, KafkaSettings, WarmupStageConfig
from stream.producer import EventProducer
from stream.warmup_stage import WarmupStage
from tests.stream.helpers import module_store_fixtures, read_dlq
from tests.stream.test_warmup_stage_kafka import (
    N_ITEMS,
    N_USERS,
    _events,
    _items,
    _users,
    _wait,
    assert_same_items,
    clean_run,
)

store_dir, store = module_store_fixtures()

pytestmark = pytest.mark.integration

PARTITIONS = 4
WINDOW_S = 4.0
SLOTS = 2
# spawn, not fork: this process runs Kafka threads whose locks a forked child could inherit held
CTX = multiprocessing.get_context("spawn")


def _settings(data_dir: Path, bootstrap: str, group: str, models: Path) -> Settings:
    return Settings(
        data_dir=data_dir,
        kafka=KafkaSettings(
            bootstrap_servers=bootstrap, partitions=PARTITIONS, archive=ArchiveSettings(with_learner=False)
        ),
        exploration=ExplorationSettings(
            learner_group_id=group,
            model_store_dir=models,
            checkpoint_interval_s=0.5,  # policy checkpoints and offset commits happen mid-stream
            rewards=RewardConfig(window_s=WINDOW_S, by_kind={"click": 1.0}),  # a click closes its slot
            learner_max_poll_records=50,  # many small batches: partitions interleave and move mid-stream
        ),
        # 8 remembered event ids: re-deliveries must be recognised by the checkpointed offsets
        warmup=WarmupStageConfig(max_tracked_events=8, layout="partitioned", durable=False),
    )


def _learner_main(data_dir: str, bootstrap: str, group: str, out: str) -> None:
    """A learner process running what ``coldstart stream learn`` runs, until SIGTERM."""
    import logging

    from stream.learn_worker import learn_command

    # the test reads from the learner's log who owns the policy and which warm-up partitions
    handler = logging.FileHandler(out + ".log")
    for name in ("stream.learn_worker", "stream.warmup_group"):
        logging.getLogger(name).addHandler(handler)
        logging.getLogger(name).setLevel(logging.INFO)
    settings = _settings(Path(data_dir), bootstrap, group, Path(out).parent / "models")
    stats = learn_command(settings=settings)
    Path(out).write_text(json.dumps({"learned": stats.learned, "warmup": vars(stats.warmup or {})}))


def _decisions(prefix: str, n: int) -> tuple[list[Decision], list[Interaction]]:
    """``n`` decisions of ``SLOTS`` slots (now: their reward windows are open) and, for each, an
    impression of every slot and a click on the first."""
    rng = np.random.default_rng(21)
    now = datetime.now(UTC)
    decisions, interactions = [], []
    for k in range(n):
        user = f"{prefix}-u{int(rng.integers(N_USERS))}"
        items = [f"{prefix}-i{int(j)}" for j in rng.choice(N_ITEMS, SLOTS, replace=False)]
        d = Decision(
            decision_id=f"{prefix}-d{k}",
            ts=now,
            user_id=user,
            policy="uniform",
            model_version="v000000",
            candidates=[Candidate(item_id=i, probability=1 / SLOTS, score=0.0) for i in items],
            slots=[Slot(item_id=i, position=p, propensity=1 / SLOTS, score=0.0) for p, i in enumerate(items)],
        )
        decisions.append(d)
        for p, i in enumerate(items):
            interactions.append(
                Interaction(
                    event_id=f"{d.decision_id}-imp{p}",
                    user_id=user,
                    item_id=i,
                    kind="impression",
                    ts=now + timedelta(milliseconds=10),
                    decision_id=d.decision_id,
                    position=p,
                )
            )
        interactions.append(
            Interaction(
                event_id=f"{d.decision_id}-click",
                user_id=user,
                item_id=items[0],
                kind="click",
                ts=now + timedelta(milliseconds=20),
                decision_id=d.decision_id,
                position=0,
            )
        )
    return decisions, interactions


def _lag(bootstrap: str, state_dir: Path) -> int:
    """Records of ``interactions`` and ``warmup.item_evidence`` that no partition checkpoint covers."""
    total = 0
    for topic in (INTERACTIONS, ITEM_EVIDENCE):
        for partition, end in _ends(bootstrap, topic).items():
            total += end - _applied(state_dir / f"{topic}-{partition}.sqlite3", topic, partition)
    return total


def _ends(bootstrap: str, topic: str) -> dict[int, int]:
    """The next offset of each partition of ``topic``, read by consuming it (the embedded broker's
    ListOffsets answers per record batch, not per record)."""
    consumer = KafkaConsumer(bootstrap_servers=bootstrap, client_id="test-ends", enable_auto_commit=False)
    try:
        parts = sorted(consumer.partitions_for_topic(topic) or [])
        consumer.assign([TopicPartition(topic, p) for p in parts])
        consumer.seek_to_beginning()
        ends = dict.fromkeys(parts, 0)
        while polled := consumer.poll(timeout_ms=500):
            for tp, records in polled.items():
                ends[tp.partition] = int(records[-1].offset) + 1
        return ends
    finally:
        consumer.close()


def _applied_sum(state_dir: Path, topic: str) -> int:
    return sum(_applied(state_dir / f"{topic}-{p}.sqlite3", topic, p) for p in range(PARTITIONS))


def _applied(path: Path, topic: str, partition: int) -> int:
    if not path.exists():
        return 0
    with sqlite3.connect(path) as db:
        try:
            row = db.execute(
                "SELECT next_offset FROM offsets WHERE topic = ? AND partition = ?", (topic, partition)
            ).fetchone()
        except sqlite3.OperationalError:
            return 0
    return 0 if row is None else int(row[0])


def _policy_owner(logs: list[Path]) -> int:
    """Which learner holds the policy now (the last take-over / hand-over line of each log)."""
    owners = []
    for k, log in enumerate(logs):
        said = [ln for ln in (log.read_text().splitlines() if log.exists() else []) if "the policy at" in ln]
        if said and "took over" in said[-1]:
            owners.append(k)
    assert len(owners) == 1, owners
    return owners[0]


def _settled(logs: list[Path]) -> bool:
    """Both members are in the warm-up group with half the partitions each."""
    for log in logs:
        owns = [ln for ln in (log.read_text().splitlines() if log.exists() else []) if " owns " in ln]
        if not owns or owns[-1].count("interactions") != PARTITIONS // 2:
            return False
    return True


def _start(data_dir: Path, bootstrap: str, group: str, out: Path) -> Any:
    proc = CTX.Process(target=_learner_main, args=(str(data_dir), bootstrap, group, str(out)))
    proc.start()
    return proc


def _stop(procs: list[Any]) -> None:
    for p in procs:
        os.kill(p.pid, signal.SIGTERM)  # a graceful stop: final checkpoint, commit, exit
    for p in procs:
        p.join(60)
        assert p.exitcode == 0


def _assert_same(
    store: FeastFeatureStore, expected: Any, stage: WarmupStage, state_dir: Path, items: list[StoredItem]
) -> None:
    assert_same_items(store, expected, items)
    counts: dict[str, int] = {}
    for path in state_dir.glob(f"{INTERACTIONS}-*.sqlite3"):
        with sqlite3.connect(path) as db:
            counts.update(dict(db.execute("SELECT user_id, interactions FROM users").fetchall()))
    uids = sorted(counts)
    assert len(uids) == N_USERS
    got_u, exp_u = store.users().get_users(uids), expected.users().get_users(uids)
    for u in uids:
        np.testing.assert_allclose(got_u[u].vector, exp_u[u].vector, rtol=1e-5, atol=1e-5)
        state = stage.user_state(u)
        assert state is not None and counts[u] == state.interactions, u


def _publish(producer: EventProducer, decisions: list[Decision], events: list[Interaction]) -> None:
    for d in decisions:
        producer.publish_decision(d)
    for e in events:
        producer.publish_interaction(e)
    producer.flush()


def _two_members(store_dir: Path, bootstrap: str, group: str, tmp_path: Path) -> tuple[list[Any], list[Path]]:
    """Two learner processes, returned once both are in the warm-up group (before the stream)."""
    procs = [_start(store_dir, bootstrap, group, tmp_path / f"{k}.json") for k in range(2)]
    logs = [tmp_path / f"{k}.json.log" for k in range(2)]
    _wait(lambda: _settled(logs), 60, "both members to join")
    return procs, logs


def _finish(bootstrap: str, state_dir: Path, procs: list[Any]) -> None:
    """Wait until every record is applied and every reward window closed; stop the learners."""
    _wait(lambda: _lag(bootstrap, state_dir) == 0, 120, "the group to apply the stream")
    time.sleep(WINDOW_S + 2.0)
    _stop(procs)


def _evidence_json(prefix: str) -> bytes:
    """An ``ItemEvidence`` record as JSON with the placeholder ``VECTOR`` for its vector."""
    ok = ItemEvidence(
        item_id=f"{prefix}-i0",
        event_id="hostile",
        count_key="hostile",
        kind="click",
        weight=1.0,
        positive=True,
        ts=datetime.now(UTC),
        user_vector=ItemEvidence.pack(np.zeros(8)),
        source_partition=0,
        source_offset=10**9,
    )
    return encode_event(ok).replace(ok.user_vector.encode(), b"VECTOR")


def _fixture(prefix: str, store: FeastFeatureStore) -> tuple[list[StoredItem], list[StoredUser]]:
    items, users = _items(prefix), _users(prefix)
    store.write_items(items)
    store.users().write_users(users)
    return items, users


def test_two_learners_share_the_group_and_end_as_one(
    store: FeastFeatureStore, store_dir: Path, tmp_path: Path
) -> None:
    prefix = uuid.uuid4().hex[:8]
    items, users = _fixture(prefix, store)
    state_dir = store_dir / "warmup" / f"learn-{prefix}"
    with TansuBroker(partitions=PARTITIONS) as broker, EventProducer(broker.bootstrap_servers) as producer:
        bootstrap = broker.bootstrap_servers
        procs, _ = _two_members(store_dir, bootstrap, f"learn-{prefix}", tmp_path)
        decisions, joined = _decisions(prefix, 30)
        events = _events(prefix, 400) + joined
        _publish(producer, decisions, events)
        # hostile records on the internal topic: not JSON, and evidence whose vector holds a NaN
        nan = ItemEvidence.pack(np.full(8, np.nan)).encode()
        for raw in (b"{not json", _evidence_json(prefix).replace(b"VECTOR", nan)):
            producer.send(ITEM_EVIDENCE, f"{prefix}-i0", raw)
        producer.flush()
        _finish(bootstrap, state_dir, procs)
        letters = read_dlq(bootstrap, ITEM_EVIDENCE)
    reports = [json.loads((tmp_path / f"{k}.json").read_text()) for k in range(2)]
    assert sorted(letter.error for letter in letters) == ["invalid_event", "invalid_json"], letters
    # the work was shared: both members applied interactions
    assert all(r["warmup"]["applied"] > 0 for r in reports), reports
    # the policy is one model learned by one member: every slot learned exactly once
    assert sum(r["learned"] for r in reports) == len(decisions) * SLOTS, reports
    latest = LocalModelStore(tmp_path / "models").latest()
    assert latest is not None and latest.n_learned == len(decisions) * SLOTS
    expected, stage = clean_run(tmp_path, items, users, events)
    _assert_same(store, expected, stage, state_dir, items)


def test_a_learner_killed_mid_stream_loses_and_double_counts_nothing(
    store: FeastFeatureStore, store_dir: Path, tmp_path: Path
) -> None:
    prefix = uuid.uuid4().hex[:8]
    group = f"learn-{prefix}"
    items, users = _fixture(prefix, store)
    state_dir = store_dir / "warmup" / group
    with TansuBroker(partitions=PARTITIONS) as broker, EventProducer(broker.bootstrap_servers) as producer:
        bootstrap = broker.bootstrap_servers
        procs, logs = _two_members(store_dir, bootstrap, group, tmp_path)
        decisions, joined = _decisions(prefix, 30)
        events = joined + _events(prefix, 600)  # the clicks first: slots are learned before the kill
        first, second = events[:400], events[400:]
        dups = second[-10:]  # published twice (a producer retry): same event ids, new offsets
        _publish(producer, decisions, first)
        _wait(lambda: _applied_sum(state_dir, INTERACTIONS) >= 100, 60, "the learners to start on the stream")
        models = LocalModelStore(tmp_path / "models")
        _wait(
            lambda: (m := models.latest()) is not None and m.n_learned >= len(decisions), 60, "clicks learned"
        )
        # the member that learns the policy (it also holds half the warm-up partitions)
        k = _policy_owner(logs)
        os.kill(procs[k].pid, signal.SIGKILL)  # mid-stream, between any two of its steps
        procs[k].join(10)
        assert procs[k].exitcode == -signal.SIGKILL
        _publish(producer, [], second + dups)
        procs[k] = _start(store_dir, bootstrap, group, tmp_path / f"{k}b.json")
        _finish(bootstrap, state_dir, procs)
    latest = LocalModelStore(tmp_path / "models").latest()
    assert latest is not None and latest.n_learned == len(decisions) * SLOTS
    expected, stage = clean_run(tmp_path, items, users, events + dups)
    assert stage.stats.duplicates == len(dups)
    _assert_same(store, expected, stage, state_dir, items)
