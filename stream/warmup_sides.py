"""The two halves of the partitioned warm-up (``warmup.layout = "partitioned"``), Kafka-free.

* :class:`UserSide` applies the interactions of the ``interactions`` partitions a learner owns to
  their users (``interactions`` is keyed by ``user_id``: a user's events are in one partition, in
  order) and turns every event into an :class:`~coldstart.contracts.ItemEvidence` carrying the user's
  vector just before it (:func:`models.warmup.batch.user_pass`).
* :class:`ItemSide` adds the evidence of the ``warmup.item_evidence`` partitions a learner owns
  (keyed by ``item_id``) to their items (:func:`models.warmup.batch.item_pass`) and writes the rows.

With ``user_counterpart="content"`` a user's update depends only on its own events and the items'
frozen content vectors, and item sums are order-free, so any split of the partitions over learners
gives the vectors of one learner (up to float32 rounding).

Each partition has its own checkpoint (:class:`Owned`): the states of the entities it owns and the
offsets they cover, committed in one transaction after the store write (and, on the user side, after
the evidence is acknowledged by the broker). The item side also keeps, per source ``interactions``
partition, the next source offset it has not applied: a user side restarted from its checkpoint
re-publishes the evidence of records it had published already (same values, same source offsets, in
order), and those are dropped.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

from coldstart.contracts import ItemEvidence
from coldstart.topics import INTERACTIONS, ITEM_EVIDENCE
from exploration.pool.base import CandidatePool
from exploration.pool.pools import ItemPools
from feature_repo.base import FeatureStore
from feature_repo.offline.base import epoch_us
from feature_repo.records import StoredItem, StoredUser
from models.warmup import UserWarmState, WarmupModel
from models.warmup.base import Vector
from models.warmup.batch import EventBlock, StateBlock, item_pass, user_pass
from stream.config import WarmupStageConfig
from stream.warmup_batch import Delivery
from stream.warmup_checkpoint import ItemSlot, UserSlot, WarmupCheckpoint
from stream.warmup_rows import (
    Classifier,
    StateCache,
    content_vector,
    feed_pools,
    item_row,
    item_start,
    user_row,
    user_start,
)
from stream.warmup_stage import WarmupStats

log = logging.getLogger(__name__)


@dataclass
class Owned:
    """One owned partition: its checkpoint and the offsets committed in it."""

    checkpoint: WarmupCheckpoint
    offsets: dict[tuple[str, int], int] = field(default_factory=dict)

    @classmethod
    def open(cls, checkpoint: WarmupCheckpoint) -> Owned:
        """The partition's checkpoint as committed."""
        return cls(checkpoint, checkpoint.offsets())

    def next_offset(self, topic: str, partition: int) -> int:
        """The first offset of ``topic[partition]`` not applied in this checkpoint."""
        return self.offsets.get((topic, partition), 0)

    def commit(
        self, items: Sequence[ItemSlot], users: Sequence[UserSlot], offsets: Mapping[tuple[str, int], int]
    ) -> None:
        """States and offsets in one transaction."""
        self.checkpoint.commit(items, users, offsets)
        for key, off in offsets.items():
            self.offsets[key] = max(self.offsets.get(key, 0), off)


@dataclass(frozen=True)
class EvidenceDelivery:
    """One item evidence record with the ``warmup.item_evidence`` partition and offset it came from."""

    evidence: ItemEvidence
    partition: int
    offset: int


class _Side:
    """What both sides share: the store, the rules and the state cache."""

    def __init__(
        self, store: FeatureStore, model: WarmupModel, config: WarmupStageConfig, model_version: str
    ) -> None:
        self.store = store
        self.model = model
        self.config = config
        self.model_version = model_version
        self.cache = StateCache(model, config.cache_size)


class UserSide(_Side):
    """Users of the owned ``interactions`` partitions (see the module docstring).

    ``publish`` sends the batch's evidence and returns once the broker acknowledged it.
    """

    def __init__(
        self,
        store: FeatureStore,
        model: WarmupModel,
        config: WarmupStageConfig,
        model_version: str,
        publish: Callable[[Sequence[ItemEvidence]], None],
    ) -> None:
        super().__init__(store, model, config, model_version)
        self.publish = publish
        self.classify = Classifier(config)

    def process(
        self,
        deliveries: Sequence[Delivery],
        owned: Mapping[int, Owned],
        skipped: Mapping[int, int] | None = None,
    ) -> WarmupStats:
        """Apply a batch of interactions (each from an owned partition); returns its counters.
        ``skipped``: per partition, the offset after the batch's undecodable records (they count as
        applied: the checkpoint moves past them)."""
        st = WarmupStats()
        started = time.perf_counter()
        moved: dict[int, int] = {}
        fresh: list[Delivery] = []
        for d in deliveries:
            off = d.offset or 0  # Kafka records: every delivery has its offset
            if off < max(
                owned[d.partition].next_offset(INTERACTIONS, d.partition), moved.get(d.partition, 0)
            ):
                st.redelivered += 1
                continue
            moved[d.partition] = off + 1
            fresh.append(d)
        for p, off in (skipped or {}).items():
            moved[p] = max(moved.get(p, 0), off)
        if not fresh:
            for p, off in moved.items():
                if off > owned[p].next_offset(INTERACTIONS, p):
                    owned[p].commit([], [], {(INTERACTIONS, p): off})
            return st
        stored = self.store.get_items(list(dict.fromkeys(d.interaction.item_id for d in fresh)))
        known = [d for d in fresh if d.interaction.item_id in stored]
        st.unknown_items = len(fresh) - len(known)
        users = self._users(known, stored, owned)
        rows: dict[str, int] = {}
        seen: dict[str, set[str]] = {}
        keys: dict[str, list[str]] = {}
        newest: dict[str, int] = {}
        counterpart: dict[str, Vector] = {}  # per item: what its users move toward
        user_rows, counterparts, weights, positives, user_new = [], [], [], [], []
        for d in known:
            it = d.interaction
            c = counterpart.get(it.item_id)
            if c is None:
                item = stored[it.item_id]
                c = (
                    content_vector(item, None)
                    if self.config.user_counterpart == "content"
                    else item.item_vector
                )
                counterpart[it.item_id] = c
            slot = users[it.user_id]
            if slot.state.prior.shape != np.shape(c):  # item_dim changed since the user's state
                log.warning("user %s: state of another item_dim restarted from zeros", it.user_id)
                slot.state = UserWarmState.new(it.user_id, np.zeros(np.shape(c), dtype=np.float32))
            key = it.count_key()
            user_seen = seen.setdefault(it.user_id, set(slot.state.seen_event_ids))
            new = key not in user_seen
            user_seen.add(key)
            if new:
                keys.setdefault(it.user_id, []).append(key)
            else:
                st.duplicates += 1
            weight, positive = self.classify(it)
            user_rows.append(rows.setdefault(it.user_id, len(rows)))
            counterparts.append(np.asarray(c, dtype=np.float64))
            weights.append(weight)
            positives.append(positive)
            user_new.append(new)
            newest[it.user_id] = max(newest.get(it.user_id, 0), epoch_us(it.ts))
        evidence: list[ItemEvidence] = []
        changed: list[UserSlot] = []
        written: list[StoredUser] = []
        if known:
            slots = [users[u] for u in rows]
            events = EventBlock(
                np.zeros(len(known), dtype=np.int64),
                np.asarray(user_rows, dtype=np.int64),
                np.asarray(weights, dtype=np.float64),
                np.asarray(positives, dtype=np.bool_),
                np.asarray(user_new, dtype=np.bool_),
            )
            up = user_pass(
                self.model, StateBlock.of([s.state for s in slots]), events, np.stack(counterparts)
            )
            for j, slot in enumerate(slots):
                before = slot.state.vector
                slot.state = up.state(
                    j, slot.state, keys.get(slot.state.user_id, ()), self.config.max_tracked_events
                )
                changed.append(slot)
                if self.config.write_unchanged_users or not np.array_equal(slot.state.vector, before):
                    written.append(user_row(slot, newest[slot.state.user_id], self.model_version))
            evidence = [
                ItemEvidence(
                    item_id=d.interaction.item_id,
                    event_id=d.interaction.event_id,
                    count_key=d.interaction.count_key(),
                    kind=d.interaction.kind,
                    weight=weights[k],
                    positive=positives[k],
                    ts=d.interaction.ts,
                    user_vector=ItemEvidence.pack(up.before[k]),
                    source_partition=d.partition,
                    source_offset=int(d.offset or 0),
                )
                for k, d in enumerate(known)
            ]
        # the store, then the evidence (acknowledged), then the checkpoints: a crash in between
        # re-applies the batch from the old checkpoint and re-publishes the same evidence
        t0 = time.perf_counter()
        st.compute_s = t0 - started
        if written:
            self.store.write_states([], written)
        t1 = time.perf_counter()
        self.publish(evidence)
        t2 = time.perf_counter()
        part_of = {d.interaction.user_id: d.partition for d in known}
        for p, off in moved.items():
            owned[p].commit(
                [], [u for u in changed if part_of[u.state.user_id] == p], {(INTERACTIONS, p): off}
            )
        self.cache.remember([], changed)
        st.applied = len(known) - st.duplicates
        st.users_written = len(written)
        st.write_s, st.publish_s, st.checkpoint_s = t1 - t0, t2 - t1, time.perf_counter() - t2
        st.batches = 1
        st.seconds = time.perf_counter() - started
        return st

    def _users(
        self, known: Sequence[Delivery], stored: Mapping[str, StoredItem], owned: Mapping[int, Owned]
    ) -> dict[str, UserSlot]:
        """The states of the batch's users from their partitions' checkpoints; a user never seen starts
        from its stored vector (or zeros)."""
        by_part: dict[int, list[str]] = {}
        dims: dict[str, int] = {}
        for d in known:
            user_id = d.interaction.user_id
            by_part.setdefault(d.partition, []).append(user_id)
            if user_id not in dims:
                dims[user_id] = len(content_vector(stored[d.interaction.item_id], None))
        users: dict[str, UserSlot] = {}
        for p, ids in by_part.items():
            users.update(self.cache.users(owned[p].checkpoint, list(dict.fromkeys(ids))))
        unseen = [u for u in dims if u not in users]
        if unseen:
            rows = self.store.users().get_users(unseen)
            users.update({u: user_start(u, rows.get(u), dims[u]) for u in unseen})
            new = set(unseen)
            for p, ids in by_part.items():  # pinned before any row derived from them is written
                pinned = [users[u] for u in dict.fromkeys(ids) if u in new]
                if pinned:
                    owned[p].commit([], pinned, {})
        return users


class ItemSide(_Side):
    """Items of the owned ``warmup.item_evidence`` partitions (see the module docstring).

    ``pools`` is this process's pool index or ``None``; ``announce`` is called with the written rows
    (``items.stored``) or ``None``.
    """

    def __init__(
        self,
        store: FeatureStore,
        model: WarmupModel,
        config: WarmupStageConfig,
        model_version: str,
        *,
        pools: ItemPools | CandidatePool | None = None,
        announce: Callable[[Sequence[StoredItem]], None] | None = None,
    ) -> None:
        super().__init__(store, model, config, model_version)
        self.pools = pools
        self.announce = announce

    def process(
        self,
        deliveries: Sequence[EvidenceDelivery],
        owned: Mapping[int, Owned],
        skipped: Mapping[int, int] | None = None,
    ) -> WarmupStats:
        """Apply a batch of evidence (each from an owned partition); returns its counters.
        ``skipped`` as for :meth:`UserSide.process`."""
        st = WarmupStats()
        started = time.perf_counter()
        offsets: dict[int, dict[tuple[str, int], int]] = {}
        fresh: list[EvidenceDelivery] = []
        for d in deliveries:
            mine, e = offsets.setdefault(d.partition, {}), d.evidence
            ev_key, src_key = (ITEM_EVIDENCE, d.partition), (INTERACTIONS, e.source_partition)
            if d.offset < max(owned[d.partition].next_offset(*ev_key), mine.get(ev_key, 0)):
                st.redelivered += 1
                continue
            mine[ev_key] = d.offset + 1
            if e.source_offset < max(owned[d.partition].next_offset(*src_key), mine.get(src_key, 0)):
                st.redelivered += 1  # re-published by a restarted user side
                continue
            mine[src_key] = e.source_offset + 1
            fresh.append(d)
        for p, after in (skipped or {}).items():
            mine = offsets.setdefault(p, {})
            mine[(ITEM_EVIDENCE, p)] = max(mine.get((ITEM_EVIDENCE, p), 0), after)
        ids = list(dict.fromkeys(d.evidence.item_id for d in fresh))
        stored = self.store.get_items(ids)
        part_of = {d.evidence.item_id: d.partition for d in fresh}
        items: dict[str, ItemSlot] = {}
        for p in {part_of[i] for i in stored}:
            items.update(self.cache.items(owned[p].checkpoint, [i for i in stored if part_of[i] == p]))
        pinned = [i for i in stored if i not in items]
        items = {i: item_start(self.model, row, items.get(i)) for i, row in stored.items()}
        for p in {part_of[i] for i in pinned}:  # pinned before any row derived from them is written
            owned[p].commit([items[i] for i in pinned if part_of[i] == p], [], {})
        rows: dict[str, int] = {}
        seen: dict[str, set[str]] = {}
        keys: dict[str, list[str]] = {}
        newest: dict[str, int] = {}
        impressions: dict[str, int] = {}
        item_rows, before, weights, positives = [], [], [], []
        for d in fresh:
            e = d.evidence
            slot = items.get(e.item_id)
            if slot is None:
                st.unknown_items += 1
                continue
            vec = e.vector()
            if vec.shape != slot.state.prior.shape:
                st.malformed += 1
                log.warning(
                    "evidence %s for item %s: vector of shape %s skipped", e.event_id, e.item_id, vec.shape
                )
                continue
            item_seen = seen.setdefault(e.item_id, set(slot.state.seen_event_ids))
            if e.event_id in item_seen or e.count_key in item_seen:
                st.duplicates += 1
                continue
            item_seen.add(e.count_key)
            keys.setdefault(e.item_id, []).append(e.count_key)
            item_rows.append(rows.setdefault(e.item_id, len(rows)))
            before.append(vec)
            weights.append(e.weight)
            positives.append(e.positive)
            impressions[e.item_id] = impressions.get(e.item_id, 0) + (e.kind == "impression")
            newest[e.item_id] = max(newest.get(e.item_id, 0), epoch_us(e.ts))
        slots = [items[i] for i in rows]
        written: list[StoredItem] = []
        if slots:
            ip = item_pass(
                self.model,
                StateBlock.of([s.state for s in slots]),
                np.asarray(item_rows, dtype=np.int64),
                np.stack(before),
                np.asarray(weights, dtype=np.float64),
                np.asarray(positives, dtype=np.bool_),
            )
            for j, slot in enumerate(slots):
                item_id = slot.state.item_id
                slot.state = ip.state(j, slot.state, keys[item_id], self.config.max_tracked_events)
                slot.impressions += impressions[item_id]
                written.append(item_row(stored[item_id], slot, newest[item_id], self.model_version))
        t0 = time.perf_counter()
        st.compute_s = t0 - started
        if written:
            self.store.write_states(written, [])
        t1 = time.perf_counter()
        feed_pools(self.pools, written)
        if self.announce is not None and written:
            self.announce(written)
        t2 = time.perf_counter()
        for p, covered in offsets.items():
            owned[p].commit([s for s in slots if part_of[s.state.item_id] == p], [], covered)
        self.cache.remember(slots, [])
        st.applied = len(item_rows)
        st.items_written = len(written)
        st.write_s, st.publish_s, st.checkpoint_s = t1 - t0, t2 - t1, time.perf_counter() - t2
        st.batches = 1
        st.seconds = time.perf_counter() - started
        return st
