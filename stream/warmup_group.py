"""The partitioned warm-up as a consumer-group member: any number of ``coldstart stream learn``
processes share the warm-up of one group (``warmup.layout = "partitioned"``).

Every member subscribes to ``interactions`` (its user side) and ``warmup.item_evidence`` (its item
side) in the consumer group ``<learner group>.warmup``; Kafka spreads the partitions of both over the
members, and a partition's state moves with it: each owned partition has its own checkpoint file
``<state dir>/<topic>-<partition>.sqlite3``, opened when the partition is assigned and closed when it
is revoked (between two polls, so never during a batch). The members share nothing but Kafka, the
feature store and that state directory (one host, or a volume every member mounts).

Delivery: each poll is applied by the two sides (:mod:`stream.warmup_sides`), each partition's
checkpoint committed after the store write; Kafka offsets are committed after that. A member killed
at any point re-applies, on whichever member gets its partitions, what its checkpoints lack;
re-delivered records are skipped by the checkpointed offsets, re-published evidence by the item
side's per-source offsets.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from kafka import ConsumerRebalanceListener, TopicPartition
from kafka.errors import KafkaError
from kafka.structs import OffsetAndMetadata

from coldstart.contracts import Interaction, ItemEvidence, decode_event
from coldstart.errors import ColdstartError, InvalidInputError
from coldstart.settings import Settings
from coldstart.topics import INTERACTIONS, ITEM_EVIDENCE
from exploration.pool.base import CandidatePool
from exploration.pool.pools import ItemPools
from feature_repo import open_store
from feature_repo.base import FeatureStore
from stream.admin import topic_id
from stream.broker import resolve_bootstrap
from stream.config import KafkaSettings
from stream.dlq import DeadLetterQueue
from stream.link import group_consumer
from stream.pool_feed import StoredAnnouncer
from stream.producer import EventProducer
from stream.warmup_batch import Delivery
from stream.warmup_checkpoint import WarmupCheckpoint
from stream.warmup_model import build_warmup_model, served_warmup
from stream.warmup_sides import EvidenceDelivery, ItemSide, Owned, UserSide
from stream.warmup_stage import WarmupStats

log = logging.getLogger(__name__)


class EvidencePublisher:
    """Sends a batch's evidence keyed by ``item_id`` and waits for the broker's acknowledgement."""

    def __init__(self, producer: EventProducer) -> None:
        self.producer = producer

    def __call__(self, evidence: Sequence[ItemEvidence]) -> None:
        for e in evidence:
            self.producer.publish(ITEM_EVIDENCE, e.item_id, e)
        if evidence:
            self.producer.flush()


class _Rebalance(ConsumerRebalanceListener):  # type: ignore[misc]
    def __init__(self, worker: WarmupGroupWorker) -> None:
        self.worker = worker

    def on_partitions_revoked(self, revoked: Any) -> None:
        self.worker.release(revoked)

    def on_partitions_assigned(self, assigned: Any) -> None:
        self.worker.adopt(assigned)


class WarmupGroupWorker:
    """One member of the partitioned warm-up (see the module docstring).

    Parameters
    ----------
    bootstrap_servers, kafka
        Kafka address and connection settings.
    users, items
        The two sides.
    group_id
        The warm-up's consumer group.
    state_dir
        Where the per-partition checkpoints are (shared by the members).
    durable
        ``fsync`` every checkpoint commit.
    max_poll_records
        Most records per poll (one batch of each side).
    dlq_producer
        Where undecodable evidence records are dead-lettered (``warmup.item_evidence.dlq``); ``None``:
        they are counted and skipped. Undecodable interactions are the policy learner's to
        dead-letter (it reads every one).
    """

    def __init__(
        self,
        bootstrap_servers: str,
        kafka: KafkaSettings,
        users: UserSide,
        items: ItemSide,
        group_id: str,
        state_dir: Path,
        *,
        durable: bool = True,
        max_poll_records: int = 4000,
        dlq_producer: EventProducer | None = None,
    ) -> None:
        self.bootstrap_servers = bootstrap_servers
        self.kafka = kafka
        self.users = users
        self.items = items
        self.group_id = group_id
        self.state_dir = Path(state_dir)
        self.durable = durable
        self.max_poll_records = max_poll_records
        self.stats = WarmupStats()
        self.dlq_producer = dlq_producer
        self._dlq: DeadLetterQueue | None = None
        self._owned: dict[tuple[str, int], Owned] = {}
        self._stop = threading.Event()

    def stop(self) -> None:
        """Finish the current batch and return from :meth:`run`."""
        self._stop.set()

    def owned(self) -> list[tuple[str, int]]:
        """The partitions this member owns now."""
        return sorted(self._owned)

    def adopt(self, assigned: Any) -> None:
        """Open the checkpoints of newly assigned partitions (checking each topic is still the log its
        offsets were taken from)."""
        ids: dict[str, str | None] = {}
        for tp in assigned:
            key = (str(tp.topic), int(tp.partition))
            if key in self._owned:
                continue
            cp = WarmupCheckpoint(self.state_dir / f"{key[0]}-{key[1]}.sqlite3", durable=self.durable)
            for topic in {key[0], INTERACTIONS}:  # the item side's source offsets are of interactions
                if topic not in ids:  # asked at every assignment: a restarted broker has new logs
                    ids[topic] = self._topic_id(topic)
                if cp.adopt_topic_id(topic, ids[topic]):
                    log.warning("%s-%d: topic %s is a new log, its offsets were dropped", *key, topic)
            self._owned[key] = Owned.open(cp)
        log.info("warm-up %s owns %s", self.group_id, self.owned())

    def _topic_id(self, topic: str, tries: int = 10, wait_s: float = 0.2) -> str | None:
        """The id of a topic this member was just assigned partitions of: it exists, so an empty
        answer (a broker still re-creating it) is asked again, ``tries`` times at most."""
        for _ in range(tries - 1):
            found = topic_id(self.bootstrap_servers, topic)
            if found is not None:
                return found
            time.sleep(wait_s)
        return topic_id(self.bootstrap_servers, topic)

    def release(self, revoked: Any) -> None:
        """Close the checkpoints of revoked partitions; forget cached states (they may move)."""
        for tp in revoked:
            owned = self._owned.pop((str(tp.topic), int(tp.partition)), None)
            if owned is not None:
                owned.checkpoint.close()
        self.users.cache.clear()
        self.items.cache.clear()

    def run(
        self, *, idle_exit_s: float | None = None, max_s: float | None = None, retry_s: float = 2.0
    ) -> WarmupStats:
        """Consume until stopped (or idle for ``idle_exit_s`` / running for ``max_s`` seconds).

        A batch the store, the checkpoint or the broker refuses is not committed: the member leaves
        the group, waits ``retry_s`` and joins again, so the batch is re-delivered (to it or to another
        member) and applied from the checkpoints.
        """
        start = time.monotonic()
        while not self._stop.is_set():
            try:
                self._consume(start, idle_exit_s, max_s)
                break
            except (ColdstartError, KafkaError) as exc:
                log.warning(
                    "warm-up batch not applied (%s: %s); rejoining in %.1fs", type(exc).__name__, exc, retry_s
                )
                self._stop.wait(retry_s)
        return self.stats

    def _consume(self, start: float, idle_exit_s: float | None, max_s: float | None) -> None:
        consumer = group_consumer(self.bootstrap_servers, self.kafka, self.group_id)
        if self.dlq_producer is not None and self._dlq is None:
            self._dlq = DeadLetterQueue(
                self.dlq_producer, self.bootstrap_servers, self.group_id, ITEM_EVIDENCE
            )
        consumer.subscribe([INTERACTIONS, ITEM_EVIDENCE], listener=_Rebalance(self))
        last_data = time.monotonic()
        try:
            while not self._stop.is_set():
                polled = consumer.poll(timeout_ms=200, max_records=self.max_poll_records)
                now = time.monotonic()
                if polled:
                    self.apply(polled)
                    self._commit(consumer, polled)
                    last_data = now
                if idle_exit_s is not None and now - last_data > idle_exit_s:
                    break
                if max_s is not None and now - start > max_s:
                    break
        finally:
            consumer.close()
            self.release(self._owned_tps())

    def apply(self, polled: Any) -> None:
        """Apply one poll: the interactions to the user side, the evidence to the item side."""
        interactions: list[Delivery] = []
        evidence: list[EvidenceDelivery] = []
        skipped: dict[str, dict[int, int]] = {INTERACTIONS: {}, ITEM_EVIDENCE: {}}
        for tp, records in polled.items():
            if (str(tp.topic), int(tp.partition)) not in self._owned:
                continue  # revoked during this poll: its new owner applies it
            for rec in records:
                try:
                    if tp.topic == INTERACTIONS:
                        it = decode_event(rec.value, Interaction)
                        interactions.append(Delivery(it, INTERACTIONS, int(rec.partition), int(rec.offset)))
                    else:
                        ev = decode_event(rec.value, ItemEvidence)
                        evidence.append(EvidenceDelivery(ev, int(rec.partition), int(rec.offset)))
                except InvalidInputError as exc:
                    self.stats.malformed += 1
                    skipped[str(tp.topic)][int(rec.partition)] = int(rec.offset) + 1
                    if tp.topic == ITEM_EVIDENCE and self._dlq is not None:
                        self._dlq.send(rec, getattr(exc, "error", "invalid_event"), str(exc))
        owned_users = {p: o for (t, p), o in self._owned.items() if t == INTERACTIONS}
        owned_items = {p: o for (t, p), o in self._owned.items() if t == ITEM_EVIDENCE}
        if interactions or skipped[INTERACTIONS]:
            self.stats.add(self.users.process(interactions, owned_users, skipped[INTERACTIONS]))
        if evidence or skipped[ITEM_EVIDENCE]:
            self.stats.add(self.items.process(evidence, owned_items, skipped[ITEM_EVIDENCE]))

    def _owned_tps(self) -> list[TopicPartition]:
        return [TopicPartition(t, p) for t, p in self._owned]

    def _commit(self, consumer: Any, polled: Any) -> None:
        """Commit the polled partitions' positions (their checkpoints cover them)."""
        offsets = {
            tp: OffsetAndMetadata(int(records[-1].offset) + 1, "", -1)
            for tp, records in polled.items()
            if records and (str(tp.topic), int(tp.partition)) in self._owned
        }
        if not offsets:
            return
        if self._dlq is not None:
            self._dlq.flush(self._stop)  # the dead letters are acknowledged before their offsets move
        try:
            consumer.commit(offsets)
        except KafkaError as exc:
            log.warning("warm-up offset commit failed (records will be re-delivered): %s", exc)


def build_warmup_group(
    settings: Settings,
    *,
    producer: EventProducer,
    store: FeatureStore | None = None,
    pools: ItemPools | CandidatePool | None = None,
) -> WarmupGroupWorker | None:
    """The partitioned warm-up member of a learner process, or ``None`` when the warm-up is disabled
    or not partitioned (``settings.warmup.layout``)."""
    config = settings.warmup
    if not config.enabled or config.layout != "partitioned":
        return None
    store = store or open_store(settings)
    served, version = served_warmup(settings) if config.model == "artifact" else (None, "")
    model, model_version = build_warmup_model(config, served, version)
    group = settings.exploration.learner_group_id
    announce = StoredAnnouncer(producer, wait=False) if config.announce else None
    return WarmupGroupWorker(
        resolve_bootstrap(settings.kafka),
        settings.kafka,
        UserSide(store, model, config, model_version, EvidencePublisher(producer)),
        ItemSide(store, model, config, model_version, pools=pools, announce=announce),
        f"{group}.warmup",
        config.state_path or settings.data_dir / "warmup" / group,
        durable=config.durable,
        max_poll_records=settings.exploration.learner_max_poll_records,
        dlq_producer=producer,
    )
