"""The warm-up stage of the learn consumer: interactions in, blended item and user vectors out.

For every polled batch of :class:`~coldstart.contracts.Interaction` events the learner hands to
:meth:`WarmupStage.apply_polled` (before it commits any offset), the stage

1. reads the batch's item rows from the feature store (the content vector ``c``, status) and the
   touched items' and users' warm-up state from its checkpoint (a user never seen before starts from
   its stored vector, or zeros);
2. drops re-deliveries and duplicates and indexes the rest (:class:`_Batch`), then runs the batch
   math (:func:`models.warmup.batch.apply_batch`): the item's evidence counterpart is the user's
   vector just before the event, the user's counterpart the item's content vector
   (``user_counterpart="content"``) or its served vector at the start of the batch;
3. writes the item state rows (``item_vector``, ``impressions``, ``clicks`` = positive interactions,
   ``status``: cold / warming / warm, ``graduated`` kept) and the changed user rows in one call
   (:meth:`~feature_repo.base.FeatureStore.write_states`), upserts this process's pool and announces
   the rows on ``items.stored`` (other processes' pools);
4. commits, in ONE SQLite transaction (:mod:`stream.warmup_checkpoint`), the new statistics together
   with the Kafka offsets they cover.

Delivery (docs/warmup.md "State and restarts"):

* the checkpoint holds, per ``(topic, partition)``, the next offset not yet applied; a record below it
  is a re-delivery and is skipped, however old (the learner commits Kafka offsets lazily and holds
  them back for open reward windows, so re-deliveries after a restart can span minutes);
* event-id de-duplication (the last ``max_tracked_events`` ids per item and per user) catches the
  same event published twice at different offsets (producer retries);
* the store write happens before the checkpoint commit, and the learner commits Kafka offsets only
  after the stage returned: a learner killed between the write and the checkpoint re-applies the
  batch from the old checkpoint (same statistics, the store row is simply rewritten), one killed
  before the write loses nothing either. The Kafka offsets the learner commits are therefore never
  ahead of the checkpoint, and on restart it resumes from its checkpoint plus the uncommitted
  offsets.

This is the ``single`` layout: one learner per consumer group (the checkpoint is per learner). With
``warmup.layout = "partitioned"`` any number of learners share the work (:mod:`stream.warmup_group`).
"""

from __future__ import annotations

import dataclasses
import logging
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from coldstart.contracts import Interaction, decode_event
from coldstart.errors import InvalidInputError
from coldstart.topics import INTERACTIONS
from exploration.pool.pools import ItemPools
from feature_repo import open_store
from feature_repo.base import FeatureStore
from feature_repo.records import StoredItem, StoredUser
from models.warmup import ItemWarmState, UserWarmState
from models.warmup.batch import StateBlock, apply_batch, apply_per_event
from models.warmup.served import ServedWarmup
from stream.admin import topic_id
from stream.config import WarmupStageConfig
from stream.pool_feed import StoredAnnouncer
from stream.warmup_batch import Coordinates, Delivery, WarmupBatch
from stream.warmup_checkpoint import ItemSlot, UserSlot, WarmupCheckpoint
from stream.warmup_model import build_warmup_model, served_warmup
from stream.warmup_rows import Classifier, StateCache, feed_pools, item_row, item_start, user_row, user_start

if TYPE_CHECKING:
    from coldstart.settings import Settings
    from exploration.pool.base import CandidatePool
    from stream.producer import EventProducer

log = logging.getLogger(__name__)


@dataclass
class WarmupStats:
    """Counters of a stage (one batch, or cumulative in :attr:`WarmupStage.stats`)."""

    applied: int = 0
    redelivered: int = 0
    duplicates: int = 0
    unknown_items: int = 0
    malformed: int = 0
    items_written: int = 0
    users_written: int = 0
    batches: int = 0
    seconds: float = 0.0
    compute_s: float = 0.0  # reads of states and rows + the blend
    write_s: float = 0.0  # item state and user rows to the feature store
    publish_s: float = 0.0  # pool upserts + items.stored announcements
    checkpoint_s: float = 0.0

    def add(self, other: WarmupStats) -> None:
        """Accumulate ``other`` into this."""
        for f in dataclasses.fields(self):
            setattr(self, f.name, getattr(self, f.name) + getattr(other, f.name))


class WarmupStage:
    """Applies the warm-up to batches of interactions (see the module docstring).

    Parameters
    ----------
    store
        The feature store: content vectors are read from it, blended vectors written to it.
    checkpoint
        Statistics and offsets (the source of truth of the warm-up state).
    config
        Hyperparameters and behaviour.
    pools
        This process's pool index (``ItemPools`` or an item-space ``CandidatePool``), or ``None``.
    announce
        Called with every batch of written rows (e.g. ``stream.pool_feed.StoredAnnouncer``, not waiting), or
        ``None``.
    bootstrap_servers
        Kafka address, used once per topic to check that the checkpointed offsets belong to the same
        log (Kafka topic id): offsets of a re-created topic (e.g. the embedded broker restarted with
        memory storage) are forgotten instead of skipping new records. ``None``: no check.
    """

    def __init__(
        self,
        store: FeatureStore,
        checkpoint: WarmupCheckpoint,
        config: WarmupStageConfig | None = None,
        *,
        pools: ItemPools | CandidatePool | None = None,
        announce: Callable[[Sequence[StoredItem]], None] | None = None,
        bootstrap_servers: str | None = None,
        served: ServedWarmup | None = None,
        served_version: str = "",
    ) -> None:
        self.config = config or WarmupStageConfig()
        self.bootstrap_servers = bootstrap_servers
        self._verified: set[str] = set()
        self.store = store
        self.checkpoint = checkpoint
        self.pools = pools
        self.announce = announce
        self.model, self.model_version = build_warmup_model(self.config, served, served_version)
        self.classify = Classifier(self.config)
        self.stats = WarmupStats()
        self._offsets: dict[tuple[str, int], int] = checkpoint.offsets()
        self._cache = StateCache(self.model, self.config.cache_size)
        self._lock = threading.Lock()

    # ------------------------------------------------------------------ construction
    @classmethod
    def from_settings(
        cls,
        settings: Settings,
        store: FeatureStore,
        *,
        producer: EventProducer | None = None,
        pools: ItemPools | CandidatePool | None = None,
        config: WarmupStageConfig | None = None,
    ) -> WarmupStage:
        """The stage of a process: ``config``, else ``settings.warmup``; checkpoint
        ``<data_dir>/warmup/<learner group>.sqlite3``; announcements through ``producer``."""
        config = config or settings.warmup
        group = settings.exploration.learner_group_id
        path = config.state_path or settings.data_dir / "warmup" / f"{group}.sqlite3"
        announce: Callable[[Sequence[StoredItem]], None] | None = None
        if producer is not None and config.announce:
            announce = StoredAnnouncer(producer, wait=False)
        served, version = served_warmup(settings) if config.model == "artifact" else (None, "")
        return cls(
            store,
            WarmupCheckpoint(path, durable=config.durable),
            config,
            pools=pools,
            announce=announce,
            served=served,
            served_version=version,
        )

    # ------------------------------------------------------------------ public API
    def applied_offset(self, topic: str, partition: int) -> int | None:
        """The next offset of ``topic[partition]`` the checkpoint has not applied (``None``: none)."""
        return self._offsets.get((topic, partition))

    def apply_polled(
        self, polled: Mapping[Any, Sequence[Any]], decoded: Mapping[Coordinates, Interaction] | None = None
    ) -> WarmupStats:
        """Apply the interaction records of one ``KafkaConsumer.poll`` result (other topics ignored).

        ``decoded`` holds interactions the caller parsed already (the learner parses every record
        once), by ``(topic, partition, offset)``; other records are parsed here. Malformed records
        are counted and skipped (the learner sends them to the DLQ).
        """
        known = decoded or {}
        deliveries: list[Delivery] = []
        bad = WarmupStats()
        bad_offsets: dict[tuple[str, int], int] = {}
        for records in polled.values():
            for rec in records:
                if rec.topic != INTERACTIONS:
                    continue
                if rec.topic not in self._verified:
                    self.verify_topic(str(rec.topic))
                interaction = known.get((rec.topic, rec.partition, int(rec.offset)))
                try:
                    if interaction is None:
                        interaction = decode_event(rec.value, Interaction)
                except InvalidInputError:
                    bad.malformed += 1
                    key = (str(rec.topic), int(rec.partition))
                    bad_offsets[key] = max(bad_offsets.get(key, 0), int(rec.offset) + 1)
                    continue
                deliveries.append(Delivery(interaction, rec.topic, int(rec.partition), int(rec.offset)))
        out = self.process(deliveries, extra_offsets=bad_offsets)
        out.malformed += bad.malformed
        self.stats.malformed += bad.malformed
        return out

    def verify_topic(self, topic: str) -> None:
        """Forget the checkpointed offsets of ``topic`` if it is not the log they were taken from."""
        self._verified.add(topic)
        if self.bootstrap_servers is None:
            return
        with self._lock:
            if self.checkpoint.adopt_topic_id(topic, topic_id(self.bootstrap_servers, topic)):
                log.warning("topic %s is a new log: its checkpointed offsets are dropped", topic)
                self._offsets = {k: v for k, v in self._offsets.items() if k[0] != topic}

    def process(
        self, deliveries: Sequence[Delivery], *, extra_offsets: Mapping[tuple[str, int], int] | None = None
    ) -> WarmupStats:
        """Apply a batch: update states, write the store and the pool, then checkpoint.

        Raises
        ------
        StoreError
            The feature store or the checkpoint could not be written; nothing of the batch is kept in
            memory, and the caller must not commit the batch's offsets.
        """
        t0 = time.perf_counter()
        with self._lock:
            out = self._process(deliveries, dict(extra_offsets or {}))
        out.batches = 1
        out.seconds = time.perf_counter() - t0
        self.stats.add(out)
        return out

    def item_state(self, item_id: str) -> ItemWarmState | None:
        """The current warm-up state of an item (from the checkpoint), or ``None``."""
        with self._lock:
            slot = self._cache.items(self.checkpoint, [item_id]).get(item_id)
        return None if slot is None else slot.state

    def user_state(self, user_id: str) -> UserWarmState | None:
        """The current warm-up state of a user (from the checkpoint), or ``None``."""
        with self._lock:
            slot = self._cache.users(self.checkpoint, [user_id]).get(user_id)
        return None if slot is None else slot.state

    def close(self) -> None:
        """Flush announcements, close the checkpoint."""
        flush = getattr(self.announce, "flush", None)
        if callable(flush):
            flush()
        self.checkpoint.close()

    # ------------------------------------------------------------------ internals
    def _process(self, deliveries: Sequence[Delivery], skipped: dict[tuple[str, int], int]) -> WarmupStats:
        """``skipped``: per partition, the offset after the batch's undecodable records. They only move
        the checkpoint: a valid record before one of them in the same poll is applied, not taken for
        a re-delivery."""
        st = WarmupStats()
        fresh: list[Delivery] = []
        offsets: dict[tuple[str, int], int] = {}
        for d in deliveries:
            if d.offset is not None:
                key = (d.topic, d.partition)
                if d.offset < max(self._offsets.get(key, 0), offsets.get(key, 0)):
                    st.redelivered += 1
                    continue
                offsets[key] = d.offset + 1
            fresh.append(d)
        for key, off in skipped.items():
            offsets[key] = max(offsets.get(key, 0), off)
        if not fresh:
            self._checkpoint_offsets(offsets)
            return st
        t0 = time.perf_counter()
        stored, items, users = self._read_states(fresh)
        batch = WarmupBatch.collect(fresh, stored, items, users, self.classify)
        st.applied, st.duplicates, st.unknown_items = batch.applied, batch.duplicates, len(batch.unknown)
        if batch.unknown:
            log.warning(
                "%d interactions with items not in the feature store skipped (e.g. %s)",
                len(batch.unknown),
                sorted(set(batch.unknown))[:5],
            )
        new_items, rows, new_users, user_rows = self._apply(batch, stored, items, users)
        # ----- write: the store first (one call: state rows and user rows), then this process's pool
        # and the announcements, then the checkpoint (see the module docstring)
        t1 = time.perf_counter()
        st.compute_s = t1 - t0
        self.store.write_states(rows, user_rows)
        t2 = time.perf_counter()
        feed_pools(self.pools, rows)
        if self.announce is not None and rows:
            self.announce(rows)
        t3 = time.perf_counter()
        self.checkpoint.commit(new_items, new_users, offsets)
        st.write_s, st.publish_s, st.checkpoint_s = t2 - t1, t3 - t2, time.perf_counter() - t3
        for key, off in offsets.items():
            self._offsets[key] = max(self._offsets.get(key, 0), off)
        self._cache.remember(new_items, new_users)
        st.items_written = len(rows)
        st.users_written = len(user_rows)
        return st

    def _read_states(
        self, fresh: Sequence[Delivery]
    ) -> tuple[dict[str, StoredItem], dict[str, ItemSlot], dict[str, UserSlot]]:
        """The batch's stored item rows and the (copied) warm-up states of its items and users; items
        and users never seen start from the store's vectors."""
        item_ids = list(dict.fromkeys(d.interaction.item_id for d in fresh))
        user_ids = list(dict.fromkeys(d.interaction.user_id for d in fresh))
        stored = self.store.get_items(item_ids)
        items = self._cache.items(self.checkpoint, item_ids)
        users = self._cache.users(self.checkpoint, user_ids)
        new_items = [i for i in stored if i not in items]
        for item_id, row in stored.items():
            items[item_id] = item_start(self.model, row, items.get(item_id))
        dim = next((s.state.prior.shape[0] for s in items.values()), None)
        unseen = [u for u in user_ids if u not in users] if dim is not None else []
        if unseen and dim is not None:
            known = self.store.users().get_users(unseen)
            for user_id in unseen:
                users[user_id] = user_start(user_id, known.get(user_id), dim)
        if new_items or unseen:
            # pin the starting states before any row derived from them is written: a restart after
            # that write must not take the written (warmed) vector for the prior
            self.checkpoint.commit([items[i] for i in new_items], [users[u] for u in unseen], {})
        return stored, items, users

    def _apply(
        self,
        batch: WarmupBatch,
        stored: Mapping[str, StoredItem],
        items: Mapping[str, ItemSlot],
        users: Mapping[str, UserSlot],
    ) -> tuple[list[ItemSlot], list[StoredItem], list[UserSlot], list[StoredUser]]:
        """Run the batch math on the touched states; the new slots and the rows to write."""
        item_slots = [items[i] for i in batch.items]
        user_slots = [users[u] for u in batch.users]
        if not item_slots:
            return [], [], [], []
        counterparts = (
            None
            if self.config.user_counterpart == "content"
            else np.stack([s.state.vector for s in item_slots])
        )
        kernel = apply_batch if self.config.kernel == "batch" else apply_per_event
        res = kernel(
            self.model,
            StateBlock.of([s.state for s in item_slots]),
            StateBlock.of([s.state for s in user_slots]),
            batch.events(),
            counterparts,
        )
        keep = self.config.max_tracked_events
        rows: list[StoredItem] = []
        for j, slot in enumerate(item_slots):
            item_id = slot.state.item_id
            slot.state = res.item_state(j, slot.state, batch.item_keys[item_id], keep)
            slot.impressions += batch.impressions.get(item_id, 0)
            rows.append(item_row(stored[item_id], slot, batch.item_ts[item_id], self.model_version))
        user_rows: list[StoredUser] = []
        for j, u in enumerate(user_slots):
            user_id = u.state.user_id
            before = u.state.vector
            u.state = res.user_state(j, u.state, batch.user_keys.get(user_id, ()), keep)
            if not self.config.write_unchanged_users and np.array_equal(u.state.vector, before):
                continue  # only weight-0 evidence (impressions): the checkpoint counts it, the row waits
            user_rows.append(user_row(u, batch.user_ts[user_id], self.model_version))
        return item_slots, rows, user_slots, user_rows

    def _checkpoint_offsets(self, offsets: Mapping[tuple[str, int], int]) -> None:
        moved = {k: v for k, v in offsets.items() if v > self._offsets.get(k, 0)}
        if moved:
            self.checkpoint.commit([], [], moved)
            self._offsets.update(moved)


def build_warmup_stage(
    settings: Settings,
    *,
    store: FeatureStore | None = None,
    producer: EventProducer | None = None,
    pools: ItemPools | CandidatePool | None = None,
    config: WarmupStageConfig | None = None,
) -> WarmupStage | None:
    """The learner's warm-up stage from the process settings, or ``None`` when it is disabled.

    Opens the configured feature store unless ``store`` is given (a store that cannot be opened is an
    error: a learner configured for warm-up must not silently stop warming items up). ``config``
    overrides ``settings.warmup``.
    """
    if not (config or settings.warmup).enabled:
        return None
    if store is None:
        store = open_store(settings)
    return WarmupStage.from_settings(settings, store, producer=producer, pools=pools, config=config)
