"""``coldstart stream learn``: the online learner of the exploration policy.

It consumes the ``decisions`` and ``interactions`` topics in one consumer group, joins interactions
to decisions by ``decision_id`` within the reward window (:class:`exploration.rewards.RewardJoiner`),
and lets the policy learn every slot as soon as its reward is final: immediately after a
maximal-reward interaction (a click), or with the collected/default reward when the window closes.
Every ``checkpoint_interval_s`` it publishes a new version to the model store, which API replicas
hot-reload.

Delivery: offsets are committed only after the checkpoint that contains what they stand for, and
never past a record that still matters (a decision whose window is open, or an interaction joined to
one), so a crash re-delivers everything the last checkpoint lacks. Each checkpoint also stores its
resume point (the offsets it had read, its expiry horizon, the final slots of open decisions and the
decisions closed early): a learner starting from it skips the re-delivered decisions it had closed
and keeps the learned slots of the open ones, so no slot is learned twice.
Malformed interactions go to ``interactions.dlq``; malformed decisions are logged and counted.

Several learners may share the group when the warm-up is partitioned (``warmup.layout``): the
warm-up runs in its own consumer group (:mod:`stream.warmup_group`), and every ``decisions`` and
``interactions`` partition of this group goes to one member (:class:`OneOwnerAssignor`), which learns
the policy; if it leaves, another takes over from the newest checkpoint.
"""

from __future__ import annotations

import logging
import signal
import threading
import time
from collections.abc import Mapping, Sequence
from typing import Any, Protocol

from kafka import ConsumerRebalanceListener, TopicPartition
from kafka.coordinator.assignors.range import RangePartitionAssignor
from kafka.errors import KafkaError
from kafka.structs import OffsetAndMetadata

from coldstart.contracts import Interaction, decode_event
from coldstart.decisions import Decision
from coldstart.errors import BrokerError, InvalidInputError
from coldstart.process import settled_heap
from coldstart.settings import Settings, get_settings
from coldstart.topics import DECISIONS, INTERACTIONS
from exploration.model_store import LocalModelStore
from feature_repo import open_offline_log
from stream.admin import ensure_topics
from stream.archive_worker import run_archive
from stream.broker import resolve_bootstrap
from stream.config import KafkaSettings
from stream.dlq import DeadLetterQueue
from stream.link import TopicKeeper, group_consumer
from stream.one_owner import OneOwnerAssignor
from stream.online_learner import LearnerStats, OnlineLearner
from stream.producer import EventProducer
from stream.warmup_batch import Coordinates
from stream.warmup_group import build_warmup_group
from stream.warmup_stage import WarmupStats, build_warmup_stage

log = logging.getLogger(__name__)

# net allocations between young collections in a running learner (see coldstart.process.settled_heap)
LEARNER_YOUNG_GC_THRESHOLD = 50_000


class PollHook(Protocol):
    """What the learner runs on every poll before any offset is committed (the warm-up stage)."""

    stats: WarmupStats

    def apply_polled(
        self, polled: Mapping[Any, Sequence[Any]], decoded: Mapping[Coordinates, Interaction] | None = None
    ) -> Any:
        """Apply one ``KafkaConsumer.poll`` result (records of other topics are ignored); ``decoded``
        holds the interactions the caller parsed already, by ``(topic, partition, offset)``."""

    def close(self) -> None:
        """Release what the hook holds (its checkpoint)."""


class _Handover(ConsumerRebalanceListener):  # type: ignore[misc]
    def __init__(self, worker: LearnWorker) -> None:
        self.worker = worker

    def on_partitions_revoked(self, revoked: Any) -> None:
        pass  # a revoked member keeps its state until it knows whether it keeps the partitions

    def on_partitions_assigned(self, assigned: Any) -> None:
        self.worker.takeover(assigned)


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
    one_owner
        Several learners share the group (partitioned warm-up): every partition goes to one member
        (:class:`OneOwnerAssignor`), which learns the policy; when it leaves, another member takes
        over from the newest checkpoint and the committed offsets. ``False``: Kafka's range assignor
        (run one learner per group).
    """

    def __init__(
        self,
        bootstrap_servers: str,
        kafka: KafkaSettings,
        learner: OnlineLearner,
        group_id: str,
        *,
        max_poll_records: int = 4000,
        one_owner: bool = False,
    ) -> None:
        self.max_poll_records = max_poll_records
        self.one_owner = one_owner
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
        self._owning = False

    def stop(self) -> None:
        """Finish the current poll, checkpoint, commit and return from :meth:`run`."""
        self._stop.set()

    def run(self, *, idle_exit_s: float | None = None, max_s: float | None = None) -> LearnerStats:
        """Consume until stopped (or idle for ``idle_exit_s`` / running for ``max_s`` seconds)."""

        strategy = [OneOwnerAssignor()] if self.one_owner else [RangePartitionAssignor]
        consumer = group_consumer(
            self.bootstrap_servers, self.kafka, self.group_id, partition_assignment_strategy=strategy
        )
        try:
            self._producer = EventProducer(self.bootstrap_servers, self.kafka)
            self._dlq = DeadLetterQueue(self._producer, self.bootstrap_servers, self.group_id, INTERACTIONS)
        except KafkaError as exc:
            consumer.close()
            raise BrokerError(f"learner cannot connect to {self.bootstrap_servers}: {exc}") from exc
        consumer.subscribe([DECISIONS, INTERACTIONS], listener=_Handover(self))
        # a broker that came back empty has none of our topics: the keeper recreates them
        keeper = TopicKeeper(self.bootstrap_servers, self.kafka.partitions)
        start = last_data = time.monotonic()
        try:
            while not self._stop.is_set():
                polled = consumer.poll(timeout_ms=200, max_records=self.max_poll_records)
                keeper.tick()
                now = time.monotonic()
                decoded: dict[Coordinates, Interaction] = {}
                for tp, records in polled.items():
                    for record in records:
                        interaction = self._handle(record)
                        if interaction is not None:
                            decoded[(record.topic, record.partition, int(record.offset))] = interaction
                        self._position[tp] = int(record.offset) + 1
                if self.warmup is not None and polled:
                    # warm-up written before any offset is committed; each record is parsed once
                    self.warmup.apply_polled(polled, decoded)
                if polled:
                    last_data = now
                    self.learner.positions = {
                        f"{tp.topic}:{tp.partition}": o for tp, o in self._position.items()
                    }
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

    def takeover(self, assigned: Any) -> None:
        """A new assignment (runs inside ``poll``, on the consumer's IO thread: no blocking Kafka call).

        A member that keeps its partitions goes on with its reward windows (records re-delivered from
        the committed offsets are recognised by the joiner); one that gains them starts from the
        newest checkpoint and its resume point; one that loses them drops what it learned since its
        last checkpoint (the new owner learns it from the committed offsets), so it never publishes a
        stale policy.
        """
        owning = bool(assigned)
        if owning != self._owning and self.one_owner:
            self.learner.reload()
            self._open.clear()
            self._position.clear()
            self._committed_version = self.learner.version
            log.info(
                "learner %s the policy at %s", "took over" if owning else "handed over", self.learner.version
            )
        self._owning = owning

    def _handle(self, record: Any) -> Interaction | None:
        """Learn from one record; the interaction it holds (``None``: a decision or malformed)."""

        tp = TopicPartition(record.topic, record.partition)
        if record.topic == DECISIONS:
            try:
                decision = decode_event(record.value, Decision)
            except InvalidInputError as exc:
                self.learner.stats.malformed += 1
                log.error(
                    "malformed decision at %s[%d]@%d: %s", record.topic, record.partition, record.offset, exc
                )
                return None
            self._open.setdefault(decision.decision_id, []).append((tp, int(record.offset)))
            self.learner.on_decision(decision, source=f"{tp.topic}:{tp.partition}", offset=int(record.offset))
            return None
        try:
            interaction = decode_event(record.value, Interaction)
        except InvalidInputError as exc:
            self.learner.stats.malformed += 1
            self._dlq.send(record, getattr(exc, "error", "invalid_event"), str(exc))
            return None
        except Exception as exc:  # whatever a record holds, it must not stop the partition
            self.learner.stats.malformed += 1
            self._dlq.send(record, "parse_failed", f"{type(exc).__name__}: {exc}")
            return None
        if interaction.decision_id is not None:
            self._open.setdefault(interaction.decision_id, []).append((tp, int(record.offset)))
        self.learner.on_interaction(interaction)
        return interaction

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
    producer = EventProducer(bootstrap, settings.kafka)
    group = build_warmup_group(settings, producer=producer)
    worker = LearnWorker(
        bootstrap,
        settings.kafka,
        learner,
        settings.exploration.learner_group_id,
        max_poll_records=settings.exploration.learner_max_poll_records,
        # several learners may share the group: the policy goes to one of them (even without warm-up)
        one_owner=settings.warmup.layout == "partitioned",
    )
    worker.warmup = None if group is not None else build_warmup_stage(settings, producer=producer)
    warmup_thread: threading.Thread | None = None
    if group is not None:
        # the partitioned warm-up: its own consumer group, in its own thread
        warmup_thread = threading.Thread(
            target=group.run, kwargs={"idle_exit_s": idle_exit_s, "max_s": max_s}, name="warmup", daemon=True
        )
        warmup_thread.start()
    archive_stop = threading.Event()
    archive: threading.Thread | None = None
    if settings.kafka.archive.with_learner:
        # decisions and interactions into the offline store, each batch committed after its write
        archive = threading.Thread(
            target=run_archive,
            args=(bootstrap, settings.kafka, open_offline_log(settings), archive_stop),
            kwargs={"idle_exit_s": idle_exit_s},
            name="archive",
            daemon=True,
        )
        archive.start()

    def stop(*_: Any) -> None:
        worker.stop()
        if group is not None:
            group.stop()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    try:
        # started: what exists now lives as long as the process (coldstart.process.settled_heap)
        with settled_heap(LEARNER_YOUNG_GC_THRESHOLD):
            stats = worker.run(idle_exit_s=idle_exit_s, max_s=max_s)
            if warmup_thread is not None:
                warmup_thread.join()  # it ends by itself (idle, max_s) or was stopped with the learner
        stats.warmup = group.stats if group is not None else (worker.warmup.stats if worker.warmup else None)
        return stats
    finally:
        archive_stop.set()
        if group is not None:
            group.stop()
        for thread in (warmup_thread, archive):
            if thread is not None:
                thread.join(60)
        if worker.warmup is not None:
            worker.warmup.close()
        producer.close()
