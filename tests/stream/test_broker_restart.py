"""Every consumer keeps running through a broker restart and handles what is published after it,
without a process restart: the encoder worker, the learner and the archive.

The broker comes back empty (no topics, offsets or groups) and nothing but the process under test
creates topics. The embedded broker recreates a topic a consumer asks for (with its own default
partition count, whatever the client requests), so the consumer tests check that the topics exist
again and that consumption resumes; the :class:`TopicKeeper` test checks that a process recreates
every topic it owns with ``kafka.partitions`` partitions by itself.
"""

from __future__ import annotations

import sqlite3
import threading
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from functools import partial
from pathlib import Path
from typing import Any

import pytest
from kafka import KafkaConsumer

from coldstart.decisions import Candidate, Decision, Slot
from coldstart.errors import BrokerError
from coldstart.topics import DECISIONS, INTERACTIONS, ITEMS_LISTED, TOPICS
from exploration.config import ExplorationSettings
from exploration.model_store import LocalModelStore
from feature_repo.offline.parquet import ParquetOfflineLog
from stream.archive_worker import run_archive
from stream.broker import TansuBroker, free_port
from stream.config import ArchiveSettings, EncodeWorkerSettings, KafkaSettings
from stream.encode_worker import EncodeWorker
from stream.learn_worker import LearnWorker
from stream.link import BrokerLink, TopicKeeper
from stream.online_learner import OnlineLearner
from stream.producer import EventProducer
from tests.faults import kill_broker, wait_for
from tests.stream.helpers import WorkerThread, good_event

pytestmark = [pytest.mark.integration, pytest.mark.timeout(180)]

PARTITIONS = 3  # not the embedded broker's default for auto-created topics


def _restart_empty(broker: TansuBroker) -> TansuBroker:
    """SIGKILL the broker and start a bare one on its port (no topics: nobody else creates them)."""
    kill_broker(broker)
    time.sleep(2)
    return TansuBroker(broker.port, partitions=PARTITIONS).start(create_topics=False)


def _partitions(bootstrap: str, topic: str) -> int:
    meta = KafkaConsumer(bootstrap_servers=bootstrap, allow_auto_create_topics=False)
    try:
        return len(meta.partitions_for_topic(topic) or ())
    finally:
        meta.close()


def _recreated(bootstrap: str, topics: list[str], partitions: int | None = None) -> bool:
    counts = [_partitions(bootstrap, t) for t in topics]
    return all(n > 0 and (partitions is None or n == partitions) for n in counts)


def _kafka(broker: TansuBroker, **kw: Any) -> KafkaSettings:
    return KafkaSettings(bootstrap_servers=broker.bootstrap_servers, partitions=PARTITIONS, **kw)


def _decision(n: int, prefix: str) -> Decision:
    return Decision(
        decision_id=f"{prefix}-d{n}",
        ts=datetime.now(UTC),
        user_id=f"{prefix}-u",
        context={},
        policy="uniform",
        model_version="v000000",
        candidates=[Candidate(item_id="i0", probability=1.0, score=0.0, features={})],
        slots=[Slot(item_id="i0", position=0, propensity=1.0, score=0.0)],
    )


def test_encoder_worker_recovers_from_a_broker_restart(encoder: Any, store: Any) -> None:
    broker = TansuBroker(free_port(), partitions=PARTITIONS).start()
    kafka = _kafka(broker, encode=EncodeWorkerSettings(group_id=f"enc-{uuid.uuid4().hex[:8]}", linger_ms=20))
    worker = EncodeWorker(broker.bootstrap_servers, kafka, encoder, store)
    thread = WorkerThread(worker)
    thread.start()
    prefix = uuid.uuid4().hex[:6]
    try:
        with EventProducer(broker.bootstrap_servers, kafka) as producer:
            first = good_event(prefix, 0, None)
            producer.publish_item(first)
            producer.flush()
        wait_for(lambda: bool(store.get_items([first.item_id])), 60)

        broker = _restart_empty(broker)
        wait_for(lambda: _recreated(broker.bootstrap_servers, [ITEMS_LISTED]), 30, what="topics")
        with EventProducer(broker.bootstrap_servers, kafka) as producer:
            after = good_event(prefix, 1, None)
            producer.publish_item(after)
            producer.flush()
        wait_for(lambda: bool(store.get_items([after.item_id])), 30, what="stored")
        assert thread.is_alive() and thread.error is None
    finally:
        worker.stop()
        thread.join(60)
        broker.stop()
    assert thread.error is None


def _decisions_through_a_restart(
    broker: TansuBroker,
    kafka: KafkaSettings,
    run: Callable[[], object],
    stop: Callable[[], None],
    handled: Callable[[str], bool],
) -> None:
    """Run a decisions consumer (``run`` in a thread) through a broker restart: a decision published
    before and one after must both be ``handled``, the consumer never raising or exiting."""
    errors: list[BaseException] = []

    def target() -> None:
        try:
            run()
        except BaseException as exc:
            errors.append(exc)

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    prefix = uuid.uuid4().hex[:6]
    try:
        for n in range(2):
            if n == 1:
                broker = _restart_empty(broker)
                recreated = partial(_recreated, broker.bootstrap_servers, [DECISIONS, INTERACTIONS])
                wait_for(recreated, 30, what="topics recreated")
            decision = _decision(n, prefix)
            with EventProducer(broker.bootstrap_servers, kafka) as producer:
                producer.publish_decision(decision)
                producer.flush()
            wait_for(partial(handled, decision.decision_id), 60 if n == 0 else 30, what=f"decision {n}")
        assert thread.is_alive() and not errors
    finally:
        stop()
        thread.join(60)
        broker.stop()
    assert not errors


def test_learner_recovers_from_a_broker_restart(tmp_path: Path) -> None:
    broker = TansuBroker(free_port(), partitions=PARTITIONS).start()
    kafka = _kafka(broker)
    settings = ExplorationSettings(checkpoint_interval_s=3600.0)
    learner = OnlineLearner(settings, LocalModelStore(tmp_path / "models"), seed=0)
    worker = LearnWorker(broker.bootstrap_servers, kafka, learner, f"learn-{uuid.uuid4().hex[:8]}")
    seen: list[str] = []
    on_decision = learner.on_decision

    def record(decision: Decision, **where: Any) -> Any:
        seen.append(decision.decision_id)
        return on_decision(decision, **where)

    learner.on_decision = record  # type: ignore[method-assign]
    _decisions_through_a_restart(broker, kafka, worker.run, worker.stop, lambda did: did in seen)


def test_archive_recovers_from_a_broker_restart(tmp_path: Path) -> None:
    broker = TansuBroker(free_port(), partitions=PARTITIONS).start()
    kafka = _kafka(broker, archive=ArchiveSettings(group_id=f"arch-{uuid.uuid4().hex[:8]}", linger_ms=20))
    offline = ParquetOfflineLog(tmp_path / "offline")
    stop = threading.Event()
    _decisions_through_a_restart(
        broker,
        kafka,
        lambda: run_archive(broker.bootstrap_servers, kafka, offline, stop),
        stop.set,
        lambda did: did in {d.decision_id for d in offline.read_decisions()},
    )


def test_topic_keeper_recreates_the_topics_a_process_owns() -> None:
    broker = TansuBroker(free_port(), partitions=PARTITIONS).start()
    names = [spec.name for spec in TOPICS]
    keeper = TopicKeeper(broker.bootstrap_servers, PARTITIONS, probe_every_s=0.2, check_every_s=3600)

    def recreated_by(k: TopicKeeper) -> Callable[[], bool]:
        def check() -> bool:
            k.tick()
            return _recreated(broker.bootstrap_servers, names, PARTITIONS)

        return check

    try:
        assert keeper.tick() == []  # nothing missing, nothing done
        kill_broker(broker)
        wait_for(lambda: bool(keeper.tick()) or keeper.outages == 1, 5)  # the probe sees the outage
        broker = TansuBroker(broker.port, partitions=PARTITIONS).start(create_topics=False)
        assert not _recreated(broker.bootstrap_servers, names)
        wait_for(recreated_by(keeper), 10, what="recreated by the keeper")
        assert sorted(keeper.created) == sorted(names)

        # a restart between two probes: found by the periodic check
        fast = TopicKeeper(broker.bootstrap_servers, PARTITIONS, probe_every_s=0.2, check_every_s=1.0)
        kill_broker(broker)
        broker = TansuBroker(broker.port, partitions=PARTITIONS).start(create_topics=False)
        wait_for(recreated_by(fast), 10, what="recreated by the periodic check")
        assert fast.outages == 0
    finally:
        broker.stop()


class _CountingProducer:
    """A producer owned by the test: the link may drop it, never close it."""

    def __init__(self) -> None:
        self.closed = 0

    def close(self, timeout_s: float = 0.0) -> None:
        self.closed += 1


def test_broker_link_never_closes_a_producer_it_does_not_own() -> None:
    with TansuBroker(free_port(), partitions=PARTITIONS) as broker:
        injected = _CountingProducer()
        link = BrokerLink(
            broker.bootstrap_servers,
            KafkaSettings(partitions=PARTITIONS),
            make_producer=lambda: injected,
            owns_producers=False,
        )
        try:

            def failing(_: Any) -> Any:
                raise RuntimeError("send failed")

            with pytest.raises(BrokerError):
                link.publish(failing, timeout_s=0.1)  # the producer is dropped ...
            assert link.producer() is injected  # ... and the next one is the owner's, still open
        finally:
            link.close()
        time.sleep(0.2)  # a discarded producer is closed on a background thread
        assert injected.closed == 0


def test_partitioned_warmup_applies_the_new_logs_after_a_broker_restart(tmp_path: Path) -> None:
    """A member of the partitioned warm-up through a restart of the embedded broker (memory storage:
    the topics come back empty and are re-created, as the learner's TopicKeeper does): the
    interactions published after it are applied from offset 0 of the new log, not skipped as
    re-deliveries of the old one."""
    from coldstart.settings import Settings
    from coldstart.topics import ITEM_EVIDENCE
    from feature_repo import open_store
    from stream.admin import ensure_topics
    from stream.config import WarmupStageConfig
    from stream.warmup_group import build_warmup_group
    from tests.stream.test_warmup_stage_kafka import _events, _items, _users

    broker = TansuBroker(free_port(), partitions=PARTITIONS).start()
    kafka = _kafka(broker)
    group_id = f"learn-{uuid.uuid4().hex[:8]}"
    settings = Settings(
        data_dir=tmp_path,
        kafka=kafka,
        exploration=ExplorationSettings(learner_group_id=group_id),
        warmup=WarmupStageConfig(layout="partitioned", durable=False, announce=False),
    )
    store = open_store(settings)
    prefix = uuid.uuid4().hex[:6]
    store.write_items(_items(prefix))
    store.users().write_users(_users(prefix))
    events = _events(prefix, 60)
    producer = EventProducer(broker.bootstrap_servers, kafka)
    group = build_warmup_group(settings, producer=producer, store=store)
    assert group is not None
    state_dir = tmp_path / "warmup" / group_id

    def applied() -> int:  # interactions the user-side checkpoints cover
        total = 0
        for p in range(PARTITIONS):
            path = state_dir / f"{INTERACTIONS}-{p}.sqlite3"
            if path.exists():
                with sqlite3.connect(path) as db:
                    row = db.execute(
                        "SELECT next_offset FROM offsets WHERE topic = ? AND partition = ?", (INTERACTIONS, p)
                    ).fetchone()
                total += 0 if row is None else int(row[0])
        return total

    thread = threading.Thread(target=group.run, daemon=True)
    thread.start()
    try:
        with EventProducer(broker.bootstrap_servers, kafka) as publisher:
            for ev in events[:30]:
                publisher.publish_interaction(ev)
            publisher.flush()
        wait_for(lambda: applied() == 30, 60, what="the first half applied")
        broker = _restart_empty(broker)
        ensure_topics(broker.bootstrap_servers, PARTITIONS)
        wait_for(
            partial(_recreated, broker.bootstrap_servers, [INTERACTIONS, ITEM_EVIDENCE]), 30, what="topics"
        )
        with EventProducer(broker.bootstrap_servers, kafka) as publisher:
            for ev in events[30:50]:
                publisher.publish_interaction(ev)
            publisher.flush()
        # the new logs hold 20 records: the checkpoints count them from 0, none skipped
        wait_for(lambda: applied() == 20, 90, what="the new log applied")
        assert thread.is_alive()
        # every interaction of both logs counted once for its user (a re-delivery after a failed
        # commit is skipped by the checkpoint; the evidence the dead broker held is lost with it)
        counted = 0
        for path in state_dir.glob(f"{INTERACTIONS}-*.sqlite3"):
            with sqlite3.connect(path) as db:
                counted += int(db.execute("SELECT coalesce(sum(interactions), 0) FROM users").fetchone()[0])
        assert counted == 50, group.stats
    finally:
        group.stop()
        thread.join(60)
        producer.close()
        broker.stop()
