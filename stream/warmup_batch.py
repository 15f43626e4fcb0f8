"""One polled batch of interactions made ready for the warm-up math: events of unknown items and
events counted already dropped, the rest indexed by the touched item and user states.

An event counts once per item (its event id, or its ``count_key``: a second click on one slot is the
same engagement) and once per user; a user's state whose width differs from the items' restarts from
zeros (the encoder's ``item_dim`` changed).
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from coldstart.contracts import Interaction
from coldstart.topics import INTERACTIONS
from feature_repo.offline.base import epoch_us
from feature_repo.records import StoredItem
from models.warmup import UserWarmState
from models.warmup.batch import EventBlock
from stream.warmup_checkpoint import ItemSlot, UserSlot

log = logging.getLogger(__name__)

#: Where a record was read: ``(topic, partition, offset)``.
Coordinates = tuple[str, int, int]


@dataclass(frozen=True)
class Delivery:
    """One interaction with the Kafka coordinates it came from (``offset=None``: not from Kafka)."""

    interaction: Interaction
    topic: str = INTERACTIONS
    partition: int = 0
    offset: int | None = None


@dataclass
class WarmupBatch:
    """The fresh interactions of one batch after de-duplication, as rows of the touched states
    (:meth:`collect`), and their arrays for the batch math (:meth:`events`)."""

    items: dict[str, int] = dataclasses.field(default_factory=dict)  # item_id -> row
    users: dict[str, int] = dataclasses.field(default_factory=dict)
    item_rows: list[int] = dataclasses.field(default_factory=list)  # per event
    user_rows: list[int] = dataclasses.field(default_factory=list)
    weights: list[float] = dataclasses.field(default_factory=list)
    positives: list[bool] = dataclasses.field(default_factory=list)
    user_new: list[bool] = dataclasses.field(default_factory=list)
    item_keys: dict[str, list[str]] = dataclasses.field(default_factory=dict)  # new count keys
    user_keys: dict[str, list[str]] = dataclasses.field(default_factory=dict)
    impressions: dict[str, int] = dataclasses.field(default_factory=dict)
    item_ts: dict[str, int] = dataclasses.field(default_factory=dict)  # newest event µs
    user_ts: dict[str, int] = dataclasses.field(default_factory=dict)
    unknown: list[str] = dataclasses.field(default_factory=list)
    applied: int = 0
    duplicates: int = 0

    @classmethod
    def collect(
        cls,
        fresh: Sequence[Delivery],
        stored: Mapping[str, StoredItem],
        items: Mapping[str, ItemSlot],
        users: Mapping[str, UserSlot],
        classify: Callable[[Interaction], tuple[float, bool]],
    ) -> WarmupBatch:
        """Drop events with unknown items and events counted already (the same event id, or a
        second click on one slot: see ``Interaction.count_key``); index the rest."""
        b = cls()
        item_seen: dict[str, set[str]] = {}
        user_seen: dict[str, set[str]] = {}
        for d in fresh:
            it = d.interaction
            slot = items.get(it.item_id)
            if it.item_id not in stored or slot is None:
                b.unknown.append(it.item_id)
                continue
            seen = item_seen.get(it.item_id)
            if seen is None:
                seen = item_seen[it.item_id] = set(slot.state.seen_event_ids)
            key = it.count_key()
            if it.event_id in seen or key in seen:
                b.duplicates += 1
                continue
            seen.add(key)
            user = users[it.user_id]
            if user.state.prior.shape != slot.state.prior.shape:  # item_dim changed since the user's state
                log.warning(
                    "user %s: state of shape %s, items have %s: restarted from zeros",
                    it.user_id,
                    user.state.prior.shape,
                    slot.state.prior.shape,
                )
                user.state = UserWarmState.new(it.user_id, np.zeros_like(slot.state.prior))
            useen = user_seen.get(it.user_id)
            if useen is None:
                useen = user_seen[it.user_id] = set(user.state.seen_event_ids)
            new_for_user = key not in useen
            useen.add(key)
            weight, positive = classify(it)
            b.item_rows.append(b.items.setdefault(it.item_id, len(b.items)))
            b.user_rows.append(b.users.setdefault(it.user_id, len(b.users)))
            b.weights.append(weight)
            b.positives.append(positive)
            b.user_new.append(new_for_user)
            b.item_keys.setdefault(it.item_id, []).append(key)
            if new_for_user:
                b.user_keys.setdefault(it.user_id, []).append(key)
            if it.kind == "impression":
                b.impressions[it.item_id] = b.impressions.get(it.item_id, 0) + 1
            ts = epoch_us(it.ts)
            b.item_ts[it.item_id] = max(b.item_ts.get(it.item_id, 0), ts)
            b.user_ts[it.user_id] = max(b.user_ts.get(it.user_id, 0), ts)
            b.applied += 1
        return b

    def events(self) -> EventBlock:
        """The indexed events as arrays."""
        return EventBlock(
            np.asarray(self.item_rows, dtype=np.int64),
            np.asarray(self.user_rows, dtype=np.int64),
            np.asarray(self.weights, dtype=np.float64),
            np.asarray(self.positives, dtype=np.bool_),
            np.asarray(self.user_new, dtype=np.bool_),
        )
