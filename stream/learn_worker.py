"""``coldstart stream learn``: the online learner of the exploration policy.

It consumes the ``decisions`` and ``interactions`` topics in one consumer group, joins interactions
to decisions by ``decision_id`` within the reward window (:class:`exploration.rewards.RewardJoiner`),
and lets the policy learn every slot as soon as its reward is final: immediately after a
maximal-reward interaction (a click), or with the collected/default reward when the window closes.
Every ``checkpoint_interval_s`` it publishes a new version to the model store, which API replicas
hot-reload.

Delivery: offsets are committed only after the checkpoint that contains what they stand for, and
never past a record that still matters (a decision whose window is open, or an interaction joined to
one), so a crash re-delivers everything the last checkpoint lacks. Slots of decisions that closed
after the oldest still-open decision may be learned twice after a crash (at-least-once).
Malformed interactions go to ``interactions.dlq``; malformed decisions are logged and counted.
"""

from __future__ import annotations

import logging
import signal
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from kafka import KafkaConsumer, TopicPartition
from kafka.errors import KafkaError
from kafka.structs import OffsetAndMetadata

from coldstart.errors import BrokerError, InvalidInputError
from coldstart.settings import Settings, get_settings
from exploration.config import ExplorationSettings
from exploration.model_store import LocalModelStore, ModelStore, load_policy
from exploration.policies import Policy, build_policy, learn_slot
from exploration.records import Decision
from exploration.rewards import RewardJoiner, SlotReward
from feature_repo import open_offline_log
from stream.archive_worker import run_archive
from stream.broker import resolve_bootstrap
from stream.config import KafkaSettings
from stream.contracts import Interaction, decode_event
from stream.dlq import DeadLetterQueue
from stream.link import TopicKeeper
from stream.producer import EventProducer
from stream.topics import DECISIONS, INTERACTIONS, ensure_topics
from stream.warmup_stage import WarmupStats, build_warmup_stage

log = logging.getLogger(__name__)


class PollHook(Protocol):
    """What the learner runs on every poll before any offset is committed (the warm-up stage)."""

    stats: WarmupStats

    def apply_polled(self, polled: Mapping[Any, Sequence[Any]]) -> Any:
        """Apply one ``KafkaConsumer.poll`` result (records of other topics are ignored)."""

    def close(self) -> None:
        """Release what the hook holds (its checkpoint)."""


@dataclass
class LearnerStats:
    """Counters of one learner run (``warmup``: the warm-up stage's, when it ran)."""

    decisions: int = 0
    interactions: int = 0
    malformed: int = 0
    learned: int = 0
    checkpoints: int = 0
    last_version: str | None = None
    rewards: dict[str, int] = field(default_factory=lambda: {"max_reward": 0, "window": 0})
    warmup: WarmupStats | None = None


class OnlineLearner:
    """The Kafka-free core: decisions and interactions in, learned policy and checkpoints out.

    Parameters
    ----------
    settings
        Exploration settings (policy, reward window and kinds, checkpoint period).
    model_store
        Where checkpoints go; the newest one is the starting point (with *its* policy config: changing
        ``exploration.policy`` takes effect on an empty store, i.e. a new model).
    seed
        Policy seed when the store is empty.
    clock
        Epoch seconds (reward windows, checkpoint period).
    """

    def __init__(
        self,
        settings: ExplorationSettings,
        model_store: ModelStore,
        *,
        seed: int = 0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.settings = settings
        self.model_store = model_store
        self.clock = clock
        self.seed = seed
        latest = model_store.latest()
        self.policy: Policy
        if latest is not None:
            self.policy = load_policy(model_store, latest.version)
            self.config = latest.policy_config()
            self.seed = latest.seed
            self.version: str | None = latest.version
            self._learned_total = latest.n_learned
        else:
            self.config = settings.policy
            self.policy = build_policy(self.config, seed=seed)
            self.version = None
            self._learned_total = 0
        self.joiner = RewardJoiner(settings.rewards, clock=clock)
        self.stats = LearnerStats(last_version=self.version)
        self._since_checkpoint = 0
        self._last_checkpoint = clock()

    def on_decision(self, decision: Decision) -> list[SlotReward]:
        """Open a decision's reward window (and learn slots already final)."""
        self.stats.decisions += 1
        return self._learn(self.joiner.add_decision(decision))

    def on_interaction(self, interaction: Interaction) -> list[SlotReward]:
        """Join one interaction; learn the slots it made final."""
        self.stats.interactions += 1
        return self._learn(self.joiner.add_interaction(interaction))

    def tick(self, *, force_checkpoint: bool = False) -> str | None:
        """Close expired windows, learn them, checkpoint when due; returns a new version or ``None``."""
        self._learn(self.joiner.expire())
        due = self.clock() - self._last_checkpoint >= self.settings.checkpoint_interval_s
        if self._since_checkpoint and (due or force_checkpoint):
            return self.checkpoint()
        return None

    def checkpoint(self) -> str:
        """Publish the policy as a new version now."""
        cp = self.model_store.publish(
            self.policy.to_bytes(),
            config=self.config,
            seed=self.seed,
            n_learned=self._learned_total,
            parent=self.version,
        )
        self.version = cp.version
        self._since_checkpoint = 0
        self._last_checkpoint = self.clock()
        self.stats.checkpoints += 1
        self.stats.last_version = cp.version
        log.info("checkpoint %s (%d events learned in total)", cp.version, self._learned_total)
        return cp.version

    def _learn(self, finals: list[SlotReward]) -> list[SlotReward]:
        for r in finals:
            try:
                learn_slot(self.policy, r.decision, r.position, r.reward)
            except InvalidInputError as exc:
                log.warning("decision %s slot %d not learnable: %s", r.decision.decision_id, r.position, exc)
                continue
            self.stats.learned += 1
            self.stats.rewards[r.closed_by] = self.stats.rewards.get(r.closed_by, 0) + 1
            self._learned_total += 1
            self._since_checkpoint += 1
        return finals


class LearnWorker:
    """The learner as a Kafka consumer-group member (see the module docstring for delivery).

    Parameters
    ----------
    bootstrap_servers
        Kafka address.
    kafka
        Connection settings (group timeouts).
    learner
        The learning core.
    group_id
        Consumer group of the learners (run one learner per group: the policy is one model).
    max_poll_records
        Most records per poll (one warm-up batch).
    """

    def __init__(
        self,
        bootstrap_servers: str,
        kafka: KafkaSettings,
        learner: OnlineLearner,
        group_id: str,
        *,
        max_poll_records: int = 4000,
    ) -> None:
        self.max_poll_records = max_poll_records
        self.bootstrap_servers = bootstrap_servers
        self.kafka = kafka
        self.learner = learner
        self.group_id = group_id
        self._stop = threading.Event()
        self._open: dict[str, list[tuple[Any, int]]] = {}  # decision_id -> records that still matter
        self._position: dict[Any, int] = {}  # TopicPartition -> next offset consumed
        self._producer: Any = None
        self._dlq: Any = None
        self._committed_version: str | None = learner.version
        self.warmup: PollHook | None = None  # applied to every poll before any commit

    def stop(self) -> None:
        """Finish the current poll, checkpoint, commit and return from :meth:`run`."""
        self._stop.set()

    def run(self, *, idle_exit_s: float | None = None, max_s: float | None = None) -> LearnerStats:
        """Consume until stopped (or idle for ``idle_exit_s`` / running for ``max_s`` seconds)."""

        try:
            consumer = KafkaConsumer(
                bootstrap_servers=self.bootstrap_servers,
                group_id=self.group_id,
                client_id=f"{self.kafka.client_id}-{self.group_id}",
                enable_auto_commit=False,
                allow_auto_create_topics=False,  # the TopicKeeper creates them with kafka.partitions
                auto_offset_reset="earliest",
                session_timeout_ms=self.kafka.session_timeout_ms,
                heartbeat_interval_ms=self.kafka.heartbeat_interval_ms,
            )
            self._producer = EventProducer(self.bootstrap_servers, self.kafka)
            self._dlq = DeadLetterQueue(self._producer, self.bootstrap_servers, self.group_id, INTERACTIONS)
        except KafkaError as exc:
            raise BrokerError(f"learner cannot connect to {self.bootstrap_servers}: {exc}") from exc
        consumer.subscribe([DECISIONS, INTERACTIONS])
        # a broker that came back empty has none of our topics: the keeper recreates them
        keeper = TopicKeeper(self.bootstrap_servers, self.kafka.partitions)
        start = last_data = time.monotonic()
        try:
            while not self._stop.is_set():
                polled = consumer.poll(timeout_ms=200, max_records=self.max_poll_records)
                keeper.tick()
                now = time.monotonic()
                for tp, records in polled.items():
                    for record in records:
                        self._handle(record)
                        self._position[tp] = int(record.offset) + 1
                if self.warmup is not None and polled:
                    self.warmup.apply_polled(polled)  # warm-up written before any offset is committed
                if polled:
                    last_data = now
                self.learner.tick()
                if self.learner.version is not None and self._committed_version != self.learner.version:
                    self._commit(consumer)  # a new checkpoint holds what the offsets stand for
                if idle_exit_s is not None and now - last_data > idle_exit_s:
                    break
                if max_s is not None and now - start > max_s:
                    break
            self.learner.tick(force_checkpoint=True)
            self._commit(consumer)
        finally:
            consumer.close()
            if self._producer is not None:
                self._producer.close()
        return self.learner.stats

    def _handle(self, record: Any) -> None:

        tp = TopicPartition(record.topic, record.partition)
        if record.topic == DECISIONS:
            try:
                decision = decode_event(record.value, Decision)
            except InvalidInputError as exc:
                self.learner.stats.malformed += 1
                log.error(
                    "malformed decision at %s[%d]@%d: %s", record.topic, record.partition, record.offset, exc
                )
                return
            self._open.setdefault(decision.decision_id, []).append((tp, int(record.offset)))
            self.learner.on_decision(decision)
            return
        try:
            interaction = decode_event(record.value, Interaction)
        except InvalidInputError as exc:
            self.learner.stats.malformed += 1
            self._dlq.send(record, getattr(exc, "error", "invalid_event"), str(exc))
            return
        except Exception as exc:  # whatever a record holds, it must not stop the partition
            self.learner.stats.malformed += 1
            self._dlq.send(record, "parse_failed", f"{type(exc).__name__}: {exc}")
            return
        if interaction.decision_id is not None:
            self._open.setdefault(interaction.decision_id, []).append((tp, int(record.offset)))
        self.learner.on_interaction(interaction)

    def _commit(self, consumer: Any) -> None:
        """Commit, per partition, up to the oldest record that still matters."""

        self._dlq.flush(self._stop)
        open_ids = self.learner.joiner.open_decision_ids()
        hold: dict[Any, int] = {}
        for did, recs in self._open.items():
            if did in open_ids:
                for tp, off in recs:
                    hold[tp] = min(hold.get(tp, off), off)
        for did in [d for d in self._open if d not in open_ids]:
            del self._open[did]
        offsets = {
            tp: OffsetAndMetadata(min(pos, hold.get(tp, pos)), "", -1) for tp, pos in self._position.items()
        }
        if not offsets:
            return
        try:
            consumer.commit(offsets)
        except KafkaError as exc:
            log.warning("offset commit failed (records will be re-delivered): %s", exc)
        self._committed_version = self.learner.version


def learn_command(
    idle_exit_s: float | None = None,
    max_s: float | None = None,
    *,
    settings: Settings | None = None,
) -> LearnerStats:
    """Run the learner, its warm-up stage and the archive from the process settings (what
    ``coldstart stream learn`` runs); ``settings`` overrides them (tests)."""

    settings = settings or get_settings()
    store_dir = settings.exploration.model_store_dir or settings.data_dir / "model_store"
    learner = OnlineLearner(settings.exploration, LocalModelStore(store_dir), seed=settings.seed)
    bootstrap = resolve_bootstrap(settings.kafka)
    ensure_topics(bootstrap, settings.kafka.partitions)
    worker = LearnWorker(
        bootstrap,
        settings.kafka,
        learner,
        settings.exploration.learner_group_id,
        max_poll_records=settings.exploration.learner_max_poll_records,
    )
    producer = EventProducer(bootstrap, settings.kafka)
    worker.warmup = build_warmup_stage(settings, producer=producer)
    archive_stop = threading.Event()
    archive: threading.Thread | None = None
    if settings.kafka.archive.with_learner:
        # decisions and interactions into the offline store, each batch committed after its write

        offline = open_offline_log(settings)
        archive = threading.Thread(
            target=run_archive,
            args=(bootstrap, settings.kafka, offline, archive_stop),
            kwargs={"idle_exit_s": idle_exit_s},
            name="archive",
            daemon=True,
        )
        archive.start()
    signal.signal(signal.SIGTERM, lambda *_: worker.stop())
    signal.signal(signal.SIGINT, lambda *_: worker.stop())
    try:
        stats = worker.run(idle_exit_s=idle_exit_s, max_s=max_s)
        stats.warmup = worker.warmup.stats if worker.warmup is not None else None
        return stats
    finally:
        archive_stop.set()
        if archive is not None:
            archive.join(60)
        if worker.warmup is not None:
            worker.warmup.close()
        producer.close()
