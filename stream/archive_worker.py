"""The archive: the ``decisions`` and ``interactions`` topics copied into the offline store.

One :class:`ArchiveWorker` per topic, each a member of the ``<archive.group_id>-<topic>`` group. A
micro-batch is decoded, written to the offline store (its writers de-duplicate on ``decision_id``
and ``event_id``), and only then committed: the offline store converges to the topic, whatever
crashes in between (a re-delivered batch is written again and adds nothing). A record that cannot
be decoded goes to ``<topic>.dlq``. :func:`run_archive` runs both workers until stopped; ``coldstart
stream archive`` runs it, and ``coldstart stream learn`` runs it beside the learner.
"""

from __future__ import annotations

import logging
import threading
from typing import Any, Literal

from coldstart.contracts import Interaction, decode_event
from coldstart.decisions import Decision
from coldstart.topics import DECISIONS, INTERACTIONS
from feature_repo.offline.base import OfflineLog
from stream.base import BatchSettings, Envelope, MicroBatchConsumer, Rejection
from stream.config import KafkaSettings
from stream.dlq import DeadLetterQueue
from stream.metrics import ConsumerMetrics
from stream.producer import EventProducer

log = logging.getLogger(__name__)

ArchivedTopic = Literal["decisions", "interactions"]
_Record = Decision | Interaction


class ArchiveWorker(MicroBatchConsumer[_Record, list[_Record], list[_Record]]):
    """Copies one topic into the offline store, committing after each write (see the module)."""

    def __init__(
        self,
        bootstrap_servers: str,
        kafka: KafkaSettings,
        offline: OfflineLog,
        topic: ArchivedTopic,
        producer: EventProducer,
    ) -> None:
        cfg = kafka.archive
        # a group per topic: members of one group with different subscriptions are left without
        # partitions by some brokers (the embedded one among them)
        group = f"{cfg.group_id}-{topic}"
        dlq = DeadLetterQueue(producer, bootstrap_servers, group, topic)
        batch = BatchSettings(
            group_id=group,
            max_batch_size=cfg.max_batch_size,
            linger_ms=cfg.linger_ms,
            pipeline_depth=1,
            compute_threads=1,
        )
        super().__init__(bootstrap_servers, topic, kafka, batch, dlq)
        self.offline = offline
        self.contract: type[_Record] = Decision if topic == DECISIONS else Interaction

    def _parse(self, record: Any) -> _Record:
        return decode_event(record.value, self.contract)

    def _prepare(self, batch: list[Envelope[_Record]]) -> list[_Record]:
        return [env.event for env in batch]

    def _compute(self, prepared: list[_Record]) -> tuple[list[_Record], list[Rejection]]:
        return prepared, []

    def _write(self, computed: list[list[_Record]]) -> None:
        records = [r for batch in computed for r in batch]
        if not records:
            return
        if self.contract is Decision:
            new = self.offline.write_decisions([r for r in records if isinstance(r, Decision)])
        else:
            new = self.offline.write_interactions([r for r in records if isinstance(r, Interaction)])
        self.metrics.add(written=new)


def run_archive(
    bootstrap_servers: str,
    kafka: KafkaSettings,
    offline: OfflineLog,
    stop: threading.Event,
    *,
    idle_exit_s: float | None = None,
) -> dict[str, ConsumerMetrics]:
    """Run the decisions and interactions archive workers until ``stop`` is set (or both are idle)."""
    producer = EventProducer(bootstrap_servers, kafka)
    topics: tuple[ArchivedTopic, ...] = ("decisions", "interactions")
    assert topics == (DECISIONS, INTERACTIONS)
    workers = {topic: ArchiveWorker(bootstrap_servers, kafka, offline, topic, producer) for topic in topics}
    errors: dict[str, BaseException] = {}

    def run(topic: str, worker: ArchiveWorker) -> None:
        try:
            worker.run(idle_exit_s=idle_exit_s)
        except BaseException as exc:
            errors[topic] = exc
            log.exception("archive of %s stopped", topic)

    threads = [
        threading.Thread(target=run, args=(t, w), name=f"archive-{t}", daemon=True)
        for t, w in workers.items()
    ]
    for t in threads:
        t.start()
    try:
        while any(t.is_alive() for t in threads) and not stop.wait(0.2):
            pass
    finally:
        for w in workers.values():
            w.stop()
        for t in threads:
            t.join(60)
        producer.close()
    if errors:
        raise next(iter(errors.values()))
    return {t: w.metrics for t, w in workers.items()}
