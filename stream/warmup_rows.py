"""What both warm-up layouts (one learner, or partitioned across a group) do with states and rows:
how an interaction weighs, where a state starts, how a state becomes a feature-store row, and how
written rows reach this process's pool. The stages differ in where states live and who applies which
half of the batch math; these rules are shared so the two layouts write the same rows.
"""

from __future__ import annotations

import dataclasses
import logging
from collections import OrderedDict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TypeVar

import numpy as np

from coldstart.contracts import Interaction
from exploration.pool.base import POOL_STATUSES, CandidatePool, entry_from_item
from exploration.pool.pools import ItemPools
from feature_repo.offline.base import epoch_us, from_epoch_us
from feature_repo.records import StoredItem, StoredUser
from models.warmup import ItemWarmState, UserWarmState, WarmupModel
from models.warmup.base import Vector
from stream.config import WarmupStageConfig
from stream.warmup_checkpoint import ItemSlot, UserSlot, WarmupCheckpoint

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Classifier:
    """Evidence weight and positiveness of an interaction, from the stage's config."""

    config: WarmupStageConfig

    def __call__(self, it: Interaction) -> tuple[float, bool]:
        weights = self.config.shrinkage.weights
        if it.kind == "rating":
            good = it.value is not None and it.value >= self.config.rating_threshold
            return weights.get("rating_positive" if good else "rating_negative", 0.0), good
        return weights.get(it.kind, 0.0), it.kind in self.config.positive_kinds


class StateCache:
    """The most recently used item and user states (at most ``size`` each) in front of checkpoints;
    a state read from a checkpoint gets its ``δ`` recomputed with ``model`` (``δ`` is not stored)."""

    def __init__(self, model: WarmupModel, size: int) -> None:
        self.model = model
        self.size = size
        self._items: OrderedDict[str, ItemSlot] = OrderedDict()
        self._users: OrderedDict[str, UserSlot] = OrderedDict()

    def items(self, checkpoint: WarmupCheckpoint, ids: Sequence[str]) -> dict[str, ItemSlot]:
        """Copies of the states of ``ids`` (absent: never seen)."""

        def loaded(slot: ItemSlot) -> ItemSlot:
            return dataclasses.replace(slot, state=self.model.update_item(slot.state, []))

        return _cached(self._items, ids, checkpoint.load_items, loaded)

    def users(self, checkpoint: WarmupCheckpoint, ids: Sequence[str]) -> dict[str, UserSlot]:
        """Copies of the states of ``ids`` (absent: never seen)."""

        def loaded(slot: UserSlot) -> UserSlot:
            return dataclasses.replace(slot, state=self.model.update_user(slot.state, []))

        return _cached(self._users, ids, checkpoint.load_users, loaded)

    def remember(self, items: Sequence[ItemSlot], users: Sequence[UserSlot]) -> None:
        """Keep the committed states (call after their checkpoint commit)."""
        for s in items:
            self._items[s.state.item_id] = s
            self._items.move_to_end(s.state.item_id)
        for u in users:
            self._users[u.state.user_id] = u
            self._users.move_to_end(u.state.user_id)
        while len(self._items) > self.size:
            self._items.popitem(last=False)
        while len(self._users) > self.size:
            self._users.popitem(last=False)

    def clear(self) -> None:
        """Forget every state (the partitions they belong to may have moved)."""
        self._items.clear()
        self._users.clear()


Slot = TypeVar("Slot", ItemSlot, UserSlot)


def _cached(
    cache: Mapping[str, Slot],
    ids: Sequence[str],
    load: Callable[[Sequence[str]], dict[str, Slot]],
    loaded: Callable[[Slot], Slot],
) -> dict[str, Slot]:
    """Copies of the cached states of ``ids``, the others loaded (and passed through ``loaded``: a
    loaded state is the caller's own, read from the checkpoint for this call, so it is not copied)."""
    out = {i: cache[i].copy() for i in ids if i in cache}
    for key, slot in load([i for i in ids if i not in out]).items():
        out[key] = loaded(slot)
    return out


def content_vector(row: StoredItem, slot: ItemSlot | None) -> Vector:
    """The frozen content vector ``c`` of a stored item, shape ``(item_dim,)``."""
    ivec = np.asarray(row.item_vector, dtype=np.float32)
    civ = row.content_item_vector
    if civ is not None:
        c = np.asarray(civ, dtype=np.float32)
        if c.shape == ivec.shape:
            return c
    if slot is not None:
        return slot.state.prior
    return ivec  # never warmed: the item vector is the content vector


def item_start(model: WarmupModel, row: StoredItem, slot: ItemSlot | None) -> ItemSlot:
    """An item's state for this batch: ``slot`` with the stored content prior (a re-encoded item gets
    its new ``c``), or a new state from the row."""
    c = content_vector(row, slot)
    if slot is None:
        return ItemSlot(ItemWarmState.new(row.item_id, c), 0, epoch_us(row.updated_at))
    if not np.array_equal(slot.state.prior, c):
        slot.state = model.update_item(dataclasses.replace(slot.state, prior=c), [])
    return slot


def user_start(user_id: str, row: StoredUser | None, dim: int) -> UserSlot:
    """A never-seen user's state: its stored vector as the prior (a vector written by a warm-up whose
    checkpoint this one is not, or a trained one), else zeros."""
    prior = np.zeros(dim, dtype=np.float32)
    last = 0
    if row is not None:
        vec = np.asarray(row.vector, dtype=np.float32)
        last = epoch_us(row.updated_at)
        if vec.shape == (dim,) and bool(np.isfinite(vec).all()):
            prior = vec
        else:
            log.warning("user %s: stored vector of shape %s ignored (item_dim %d)", user_id, vec.shape, dim)
    return UserSlot(UserWarmState.new(user_id, prior), last)


def item_row(row: StoredItem, slot: ItemSlot, newest_us: int, model_version: str) -> StoredItem:
    """The stored row of an item after its state changed (``newest_us``: its newest event's time);
    advances ``slot.last_us`` so every write of the item is newer than the one before."""
    slot.last_us = max(newest_us, epoch_us(row.updated_at) + 1, slot.last_us + 1)
    return dataclasses.replace(
        row,
        item_vector=slot.state.vector,
        status="graduated" if row.status == "graduated" else slot.state.status,
        impressions=slot.impressions,
        clicks=slot.state.positives,
        model_version=model_version,
        updated_at=from_epoch_us(slot.last_us),
    )


def user_row(slot: UserSlot, newest_us: int, model_version: str) -> StoredUser:
    """The stored row of a user after its state changed; advances ``slot.last_us``."""
    slot.last_us = max(newest_us, slot.last_us + 1)
    s = slot.state
    return StoredUser(s.user_id, s.vector, s.interactions, model_version, from_epoch_us(slot.last_us))


def feed_pools(pools: ItemPools | CandidatePool | None, rows: Sequence[StoredItem]) -> None:
    """Hand written rows to this process's pool: upserts, and removals of items that left the pool."""
    if pools is None or not rows:
        return
    if isinstance(pools, ItemPools):
        pools.upsert_items(rows)
        return
    pools.upsert([entry_from_item(r, "item") for r in rows if r.status in POOL_STATUSES])
    gone = [r.item_id for r in rows if r.status not in POOL_STATUSES]
    if gone:
        pools.remove(gone)
