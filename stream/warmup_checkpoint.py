"""The warm-up stage's checkpoint: per-item and per-user statistics and the Kafka offsets they cover,
in one SQLite file, committed in one transaction (so statistics and offsets never disagree).

The checkpoint is the source of truth of the warm-up state; the feature store holds the rows derived
from it. A record below a partition's checkpointed offset is a re-delivery (see
:mod:`stream.warmup_stage`).
"""

from __future__ import annotations

import dataclasses
import json
import sqlite3
import threading
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import numpy as np

from coldstart.errors import StoreError
from models.warmup import ItemWarmState, UserWarmState
from models.warmup.base import Vector


@dataclass
class ItemSlot:
    """An item's warm-up state with what the stage keeps beside it."""

    state: ItemWarmState
    impressions: int = 0
    last_us: int = 0  # event time of the item's last written row, µs since the epoch

    def copy(self) -> ItemSlot:
        """A shallow copy (the state is immutable; ``dataclasses.replace`` costs ~10× more)."""
        return ItemSlot(self.state, self.impressions, self.last_us)


@dataclass
class UserSlot:
    """A user's warm-up state and the event time of its last written row (µs)."""

    state: UserWarmState
    last_us: int = 0

    def copy(self) -> UserSlot:
        """A shallow copy (as :meth:`ItemSlot.copy`)."""
        return UserSlot(self.state, self.last_us)


def _f32(buf: bytes) -> Vector:
    return np.frombuffer(buf, dtype=np.float32).copy()


S = TypeVar("S", ItemWarmState, UserWarmState)


def _stats(state: ItemWarmState | UserWarmState) -> tuple[bytes, bytes, float, int, int]:
    """The checkpointed statistics of a state: prior, weighted sum, evidence, positives, interactions."""
    return (
        state.prior.astype(np.float32).tobytes(),
        state.weighted_sum.astype(np.float32).tobytes(),
        float(state.evidence),
        int(state.positives),
        int(state.interactions),
    )


def _tail(state: ItemWarmState | UserWarmState, last_us: int) -> tuple[str, int]:
    """The seen event ids (JSON) and the last row's event time."""
    return json.dumps(list(state.seen_event_ids)), int(last_us)


def _restore(state: S, stats: list[Any], seen: str) -> S:
    """``state`` with the checkpointed statistics ``(prior, weighted_sum, evidence, positives,
    interactions)`` and seen event ids."""
    _, wsum, evidence, positives, interactions = stats
    return dataclasses.replace(
        state,
        weighted_sum=_f32(wsum),
        evidence=float(evidence),
        positives=int(positives),
        interactions=int(interactions),
        seen_event_ids=tuple(json.loads(seen)),
    )


class WarmupCheckpoint:
    """The stage's checkpoint: warm-up statistics and the Kafka offsets they cover, in one SQLite file.

    Every :meth:`commit` is one transaction, so statistics and offsets can never disagree.

    Parameters
    ----------
    path
        The SQLite file (created with its folder).
    durable
        ``synchronous=FULL`` (fsync per commit) instead of ``NORMAL``.
    """

    def __init__(self, path: Path, *, durable: bool = True) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        try:
            self._db = sqlite3.connect(str(self.path), isolation_level=None, check_same_thread=False)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute(f"PRAGMA synchronous={'FULL' if durable else 'NORMAL'}")
            self._db.executescript(
                """
                CREATE TABLE IF NOT EXISTS offsets(
                    topic TEXT NOT NULL, partition INTEGER NOT NULL, next_offset INTEGER NOT NULL,
                    PRIMARY KEY (topic, partition));
                CREATE TABLE IF NOT EXISTS topics(topic TEXT PRIMARY KEY, topic_id TEXT NOT NULL);
                CREATE TABLE IF NOT EXISTS items(
                    item_id TEXT PRIMARY KEY, prior BLOB NOT NULL, weighted_sum BLOB NOT NULL,
                    evidence REAL NOT NULL, positives INTEGER NOT NULL, interactions INTEGER NOT NULL,
                    impressions INTEGER NOT NULL, seen TEXT NOT NULL, last_us INTEGER NOT NULL);
                CREATE TABLE IF NOT EXISTS users(
                    user_id TEXT PRIMARY KEY, prior BLOB NOT NULL, weighted_sum BLOB NOT NULL,
                    evidence REAL NOT NULL, positives INTEGER NOT NULL, interactions INTEGER NOT NULL,
                    seen TEXT NOT NULL, last_us INTEGER NOT NULL);
                """
            )
        except sqlite3.Error as exc:
            raise StoreError(f"cannot open the warm-up checkpoint {self.path}: {exc}") from exc
        self._lock = threading.Lock()

    def offsets(self) -> dict[tuple[str, int], int]:
        """``(topic, partition) -> next offset not yet applied``."""
        with self._lock:
            rows = self._db.execute("SELECT topic, partition, next_offset FROM offsets").fetchall()
        return {(str(t), int(p)): int(o) for t, p, o in rows}

    def topic_id(self, topic: str) -> str | None:
        """The Kafka topic id the offsets of ``topic`` belong to (``None``: not recorded)."""
        with self._lock:
            row = self._db.execute("SELECT topic_id FROM topics WHERE topic = ?", (topic,)).fetchone()
        return None if row is None else str(row[0])

    def set_topic_id(self, topic: str, topic_id: str, *, forget_offsets: bool) -> None:
        """Record ``topic``'s id; ``forget_offsets`` drops its offsets (the topic was re-created)."""
        with self._lock:
            try:
                self._db.execute("BEGIN IMMEDIATE")
                if forget_offsets:
                    self._db.execute("DELETE FROM offsets WHERE topic = ?", (topic,))
                self._db.execute("INSERT OR REPLACE INTO topics VALUES (?, ?)", (topic, topic_id))
                self._db.execute("COMMIT")
            except sqlite3.Error as exc:
                self._db.execute("ROLLBACK")
                raise StoreError(f"cannot write the warm-up checkpoint {self.path}: {exc}") from exc

    def adopt_topic_id(self, topic: str, topic_id: str | None) -> bool:
        """Record that the offsets of ``topic`` belong to the log ``topic_id``; when the checkpoint
        had another id (the topic was re-created, e.g. an embedded broker restarted with memory
        storage) its offsets are dropped and ``True`` returned. ``None``: nothing to check."""
        if topic_id is None:
            return False
        old = self.topic_id(topic)
        if old == topic_id:
            return False
        stale = old is not None  # first sight: the offsets (if any) were taken without an id check
        self.set_topic_id(topic, topic_id, forget_offsets=stale)
        return stale

    def load_items(self, item_ids: Sequence[str]) -> dict[str, ItemSlot]:
        """The checkpointed states of ``item_ids`` (absent: never seen). ``delta`` is not stored:
        the stage recomputes it with its model."""
        out: dict[str, ItemSlot] = {}
        for item_id, row in self._load("items", "item_id", item_ids).items():
            *stats, impressions, seen, last_us = row
            state = _restore(ItemWarmState.new(item_id, _f32(stats[0])), stats, seen)
            out[item_id] = ItemSlot(state, int(impressions), int(last_us))
        return out

    def load_users(self, user_ids: Sequence[str]) -> dict[str, UserSlot]:
        """The checkpointed states of ``user_ids`` (absent: never seen); ``delta`` as for items."""
        out: dict[str, UserSlot] = {}
        for user_id, row in self._load("users", "user_id", user_ids).items():
            *stats, seen, last_us = row
            state = _restore(UserWarmState.new(user_id, _f32(stats[0])), stats, seen)
            out[user_id] = UserSlot(state, int(last_us))
        return out

    def _load(self, table: str, key: str, ids: Sequence[str]) -> dict[str, tuple[Any, ...]]:
        out: dict[str, tuple[Any, ...]] = {}
        ids = list(dict.fromkeys(ids))
        with self._lock:
            for start in range(0, len(ids), 500):
                chunk = ids[start : start + 500]
                marks = ",".join("?" * len(chunk))
                for row in self._db.execute(f"SELECT * FROM {table} WHERE {key} IN ({marks})", chunk):
                    out[str(row[0])] = tuple(row[1:])
        return out

    def commit(
        self,
        items: Iterable[ItemSlot],
        users: Iterable[UserSlot],
        offsets: Mapping[tuple[str, int], int],
    ) -> None:
        """Write statistics and offsets in one transaction."""
        item_rows = [
            (s.state.item_id, *_stats(s.state), int(s.impressions), *_tail(s.state, s.last_us)) for s in items
        ]
        user_rows = [(u.state.user_id, *_stats(u.state), *_tail(u.state, u.last_us)) for u in users]
        off_rows = [(t, p, o) for (t, p), o in offsets.items()]
        with self._lock:
            try:
                self._db.execute("BEGIN IMMEDIATE")
                self._db.executemany("INSERT OR REPLACE INTO items VALUES (?,?,?,?,?,?,?,?,?)", item_rows)
                self._db.executemany("INSERT OR REPLACE INTO users VALUES (?,?,?,?,?,?,?,?)", user_rows)
                self._db.executemany(
                    "INSERT INTO offsets VALUES (?,?,?) ON CONFLICT(topic, partition) DO UPDATE SET "
                    "next_offset = max(next_offset, excluded.next_offset)",
                    off_rows,
                )
                self._db.execute("COMMIT")
            except sqlite3.Error as exc:
                self._db.execute("ROLLBACK")
                raise StoreError(f"cannot write the warm-up checkpoint {self.path}: {exc}") from exc

    def close(self) -> None:
        """Close the file."""
        with self._lock:
            self._db.close()
