"""The warm-up stage of the learn consumer: interactions in, blended item and user vectors out.

For every polled batch of :class:`~stream.contracts.Interaction` events the learner hands to
:meth:`WarmupStage.apply_polled` (before it commits any offset), the stage

1. loads the touched items' and users' warm-up state (sufficient statistics ``Σ w x``, ``Σ|w|``,
   counts, recent event ids) from its **checkpoint** (a local SQLite file), and the items' content
   vector ``c`` from the feature store (``content_item_vector``; a user never seen before starts from
   its stored vector, or zeros);
2. applies :class:`models.warmup.ShrinkageWarmup` event by event: the item's evidence counterpart is
   the user's vector just before the event, the user's counterpart is the item's content vector
   (``user_counterpart="content"``, the default) or its served vector at the start of the batch;
3. writes the blended ``item_vector``, ``impressions``, ``clicks`` (= positive interactions) and
   ``status`` (cold / warming / warm; ``graduated`` is kept) to the feature store
   (``write_items(mode="state")``: online + offline history), user vectors through the
   :class:`~feature_repo.base.UserStore`, upserts the item-space pool of this process, and announces
   the rows on ``items.stored`` so other processes' pools (the API's bandit) see the new vectors;
4. commits, in ONE SQLite transaction, the new statistics together with the Kafka offsets they cover.

Delivery (design (a) of issue 5, see docs/warmup.md "Online"):

* the checkpoint holds, per ``(topic, partition)``, the next offset not yet applied; a record below it
  is a re-delivery and is skipped, however old (the learner commits Kafka offsets lazily and holds
  them back for open reward windows, so re-deliveries after a restart can span minutes);
* event-id de-duplication (the last ``max_tracked_events`` ids per item and per user) catches the
  same event published twice at different offsets (producer retries);
* the store write happens before the checkpoint commit, and the learner commits Kafka offsets only
  after the stage returned: a learner killed between the write and the checkpoint re-applies the
  batch from the old checkpoint (same statistics, the store row is simply rewritten), one killed
  before the write loses nothing either. The Kafka offsets the learner commits are therefore never
  ahead of the checkpoint, and on restart it "resumes from its checkpoint plus the uncommitted
  offsets".

Run one learner per consumer group (the policy is one model, and the checkpoint is per learner).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import sqlite3
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from coldstart.errors import InvalidInputError, NotFoundError, StoreError
from feature_repo.base import FeatureStore
from feature_repo.records import StoredItem, StoredUser
from models.artifact import read_manifest, resolve_artifact
from models.warmup import Evidence, ItemWarmState, UserWarmState, WarmupModel
from models.warmup.base import Vector
from models.warmup.served import ServedWarmup, load_served_warmup
from stream.config import MODEL_VERSION_PREFIX, WarmupStageConfig
from stream.contracts import Interaction, decode_event
from stream.topics import INTERACTIONS

if TYPE_CHECKING:
    from coldstart.settings import Settings
    from exploration.pool.base import CandidatePool
    from exploration.pool.pools import ItemPools
    from stream.producer import EventProducer

log = logging.getLogger(__name__)

_ONE_US = timedelta(microseconds=1)
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


@dataclass(frozen=True)
class Delivery:
    """One interaction with the Kafka coordinates it came from (``offset=None``: not from Kafka)."""

    interaction: Interaction
    topic: str = INTERACTIONS
    partition: int = 0
    offset: int | None = None


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
    write_items_s: float = 0.0
    publish_s: float = 0.0  # pool upserts + items.stored announcements
    write_users_s: float = 0.0
    checkpoint_s: float = 0.0

    def add(self, other: WarmupStats) -> None:
        """Accumulate ``other`` into this."""
        for f in dataclasses.fields(self):
            setattr(self, f.name, getattr(self, f.name) + getattr(other, f.name))


@dataclass
class _ItemSlot:
    state: ItemWarmState
    impressions: int = 0
    last_us: int = 0


@dataclass
class _UserSlot:
    state: UserWarmState
    last_us: int = 0


def _us(ts: datetime) -> int:
    delta = ts.astimezone(UTC) - _EPOCH
    return (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds


def _from_us(us: int) -> datetime:
    return _EPOCH + timedelta(microseconds=us)


def _f32(buf: bytes) -> Vector:
    return np.frombuffer(buf, dtype=np.float32).copy()


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

    def load_items(self, item_ids: Sequence[str]) -> dict[str, tuple[Any, ...]]:
        """Raw item rows by id (``prior, weighted_sum, evidence, positives, interactions, impressions,
        seen, last_us``)."""
        return self._load("items", "item_id", item_ids)

    def load_users(self, user_ids: Sequence[str]) -> dict[str, tuple[Any, ...]]:
        """Raw user rows by id (``prior, weighted_sum, evidence, positives, interactions, seen, last_us``)."""
        return self._load("users", "user_id", user_ids)

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
        items: Iterable[_ItemSlot],
        users: Iterable[_UserSlot],
        offsets: Mapping[tuple[str, int], int],
    ) -> None:
        """Write statistics and offsets in one transaction."""
        item_rows = [
            (
                s.state.item_id,
                s.state.prior.astype(np.float32).tobytes(),
                s.state.weighted_sum.astype(np.float32).tobytes(),
                float(s.state.evidence),
                int(s.state.positives),
                int(s.state.interactions),
                int(s.impressions),
                json.dumps(list(s.state.seen_event_ids)),
                int(s.last_us),
            )
            for s in items
        ]
        user_rows = [
            (
                u.state.user_id,
                u.state.prior.astype(np.float32).tobytes(),
                u.state.weighted_sum.astype(np.float32).tobytes(),
                float(u.state.evidence),
                int(u.state.positives),
                int(u.state.interactions),
                json.dumps(list(u.state.seen_event_ids)),
                int(u.last_us),
            )
            for u in users
        ]
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
        Called with every batch of written rows (e.g. ``stream.pool_feed.StoredAnnouncer``), or
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
        self.model: WarmupModel
        if served is not None:
            self.model = served.build(warm_after=self.config.shrinkage.warm_after)
            self.model_version = self.config.model_version(served.card(), served_version)
        else:
            self.model = self.config.shrinkage.build()
            self.model_version = self.config.model_version()
        self.model.max_tracked_events = self.config.max_tracked_events
        self.weights = dict(self.config.shrinkage.weights)
        self.positive_kinds = frozenset(self.config.positive_kinds)
        self.stats = WarmupStats()
        self._state_mode = _has_mode(store)
        self._offsets: dict[tuple[str, int], int] = checkpoint.offsets()
        self._items: OrderedDict[str, _ItemSlot] = OrderedDict()
        self._users: OrderedDict[str, _UserSlot] = OrderedDict()
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
        """The stage of a process: ``config``, else ``settings.warmup`` when the settings have that
        section, else defaults; checkpoint ``<data_dir>/warmup/<learner group>.sqlite3``;
        announcements through ``producer``."""
        cfg = config or getattr(settings, "warmup", None)
        config = cfg if isinstance(cfg, WarmupStageConfig) else WarmupStageConfig()
        group = settings.exploration.learner_group_id
        path = config.state_path or settings.data_dir / "warmup" / f"{group}.sqlite3"
        announce: Callable[[Sequence[StoredItem]], None] | None = None
        if producer is not None and config.announce:
            announce = Announcer(producer)
        served, version = _served_warmup(settings) if config.model == "artifact" else (None, "")
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

    def apply_polled(self, polled: Mapping[Any, Sequence[Any]]) -> WarmupStats:
        """Apply the interaction records of one ``KafkaConsumer.poll`` result (other topics ignored).

        Malformed records are counted and skipped (the learner sends them to the DLQ).
        """
        deliveries: list[Delivery] = []
        bad = WarmupStats()
        bad_offsets: dict[tuple[str, int], int] = {}
        for records in polled.values():
            for rec in records:
                if rec.topic != INTERACTIONS:
                    continue
                if rec.topic not in self._verified:
                    self.verify_topic(str(rec.topic))
                try:
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
        from kafka import KafkaAdminClient
        from kafka.errors import KafkaError

        try:
            admin = KafkaAdminClient(bootstrap_servers=self.bootstrap_servers, client_id="coldstart-warmup")
            try:
                described = admin.describe_topics([topic])
            finally:
                admin.close()
        except KafkaError as exc:
            log.warning("cannot check the topic id of %s (offsets kept): %s", topic, exc)
            return
        topic_id = str(described[0].get("topic_id") or "") if described else ""
        if not topic_id or topic_id == "00000000-0000-0000-0000-000000000000":
            return
        old = self.checkpoint.topic_id(topic)
        if old == topic_id:
            return
        stale = old is not None  # first sight: the offsets (if any) were taken without an id check
        if stale:
            log.warning(
                "topic %s is a new log (id %s, checkpoint has %s): its checkpointed offsets are dropped",
                topic,
                topic_id,
                old,
            )
        with self._lock:
            self.checkpoint.set_topic_id(topic, topic_id, forget_offsets=stale)
            if stale:
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
            slot = self._load_items([item_id]).get(item_id)
        return None if slot is None else slot.state

    def user_state(self, user_id: str) -> UserWarmState | None:
        """The current warm-up state of a user (from the checkpoint), or ``None``."""
        with self._lock:
            slot = self._load_users([user_id]).get(user_id)
        return None if slot is None else slot.state

    def close(self) -> None:
        """Flush announcements, close the checkpoint."""
        flush = getattr(self.announce, "flush", None)
        if callable(flush):
            flush()
        self.checkpoint.close()

    # ------------------------------------------------------------------ internals
    def _classify(self, it: Interaction) -> tuple[float, bool]:
        """Evidence weight and positiveness of an interaction."""
        if it.kind == "rating":
            good = it.value is not None and it.value >= self.config.rating_threshold
            return self.weights.get("rating_positive" if good else "rating_negative", 0.0), good
        return self.weights.get(it.kind, 0.0), it.kind in self.positive_kinds

    def _load_items(self, ids: Sequence[str]) -> dict[str, _ItemSlot]:
        out: dict[str, _ItemSlot] = {}
        missing = []
        for i in ids:
            slot = self._items.get(i)
            if slot is None:
                missing.append(i)
            else:
                out[i] = slot
        for item_id, row in self.checkpoint.load_items(missing).items():
            prior, wsum, evidence, positives, interactions, impressions, seen, last_us = row
            p = _f32(prior)
            state = dataclasses.replace(
                ItemWarmState.new(item_id, p),
                weighted_sum=_f32(wsum),
                evidence=float(evidence),
                positives=int(positives),
                interactions=int(interactions),
                seen_event_ids=tuple(json.loads(seen)),
            )
            out[item_id] = _ItemSlot(self.model.update_item(state, []), int(impressions), int(last_us))
        return out

    def _load_users(self, ids: Sequence[str]) -> dict[str, _UserSlot]:
        out: dict[str, _UserSlot] = {}
        missing = []
        for i in ids:
            slot = self._users.get(i)
            if slot is None:
                missing.append(i)
            else:
                out[i] = slot
        for user_id, row in self.checkpoint.load_users(missing).items():
            prior, wsum, evidence, positives, interactions, seen, last_us = row
            state = dataclasses.replace(
                UserWarmState.new(user_id, _f32(prior)),
                weighted_sum=_f32(wsum),
                evidence=float(evidence),
                positives=int(positives),
                interactions=int(interactions),
                seen_event_ids=tuple(json.loads(seen)),
            )
            out[user_id] = _UserSlot(self.model.update_user(state, []), int(last_us))
        return out

    def _remember(self, items: Iterable[_ItemSlot], users: Iterable[_UserSlot]) -> None:
        for s in items:
            self._items[s.state.item_id] = s
            self._items.move_to_end(s.state.item_id)
        for u in users:
            self._users[u.state.user_id] = u
            self._users.move_to_end(u.state.user_id)
        while len(self._items) > self.config.cache_size:
            self._items.popitem(last=False)
        while len(self._users) > self.config.cache_size:
            self._users.popitem(last=False)

    def _process(self, deliveries: Sequence[Delivery], offsets: dict[tuple[str, int], int]) -> WarmupStats:
        st = WarmupStats()
        fresh: list[Delivery] = []
        for d in deliveries:
            if d.offset is not None:
                key = (d.topic, d.partition)
                if d.offset < max(self._offsets.get(key, 0), offsets.get(key, 0)):
                    st.redelivered += 1
                    continue
                offsets[key] = max(offsets.get(key, 0), d.offset + 1)
            fresh.append(d)
        if not fresh:
            self._checkpoint_offsets(offsets)
            return st
        t0 = time.perf_counter()
        item_ids = list(dict.fromkeys(d.interaction.item_id for d in fresh))
        user_ids = list(dict.fromkeys(d.interaction.user_id for d in fresh))
        stored = self.store.get_items(item_ids)
        items = {k: dataclasses.replace(v) for k, v in self._load_items(item_ids).items()}
        users = {k: dataclasses.replace(v) for k, v in self._load_users(user_ids).items()}
        # the content prior: the stored content_item_vector (a re-encoded item gets its new c)
        for item_id, row in stored.items():
            c = self._content(row, items.get(item_id))
            slot = items.get(item_id)
            if slot is None:
                items[item_id] = _ItemSlot(ItemWarmState.new(item_id, c), 0, _us(row.updated_at))
            elif not np.array_equal(slot.state.prior, c):
                slot.state = self.model.update_item(dataclasses.replace(slot.state, prior=c), [])
        dim = next((s.state.prior.shape[0] for s in items.values()), None)
        unseen = [u for u in user_ids if u not in users]
        if unseen and dim is not None:
            known = self.store.users().get_users(unseen)
            for user_id in unseen:
                row_u = known.get(user_id)
                prior = np.zeros(dim, dtype=np.float32)
                last = 0
                if row_u is not None:
                    vec = np.asarray(row_u.vector, dtype=np.float32)
                    last = _us(row_u.updated_at)
                    if vec.shape == (dim,) and bool(np.isfinite(vec).all()):
                        prior = vec
                        if row_u.model_version.startswith(MODEL_VERSION_PREFIX):
                            # written by a warm-up whose checkpoint this one is not (deleted, or
                            # another learner group): its vector is the best prior there is
                            log.debug("user %s: stored warm-up vector taken as the prior", user_id)
                    else:
                        log.warning(
                            "user %s: stored vector of shape %s ignored (item_dim %d)",
                            user_id,
                            vec.shape,
                            dim,
                        )
                users[user_id] = _UserSlot(UserWarmState.new(user_id, prior), last)
        served_at_start = {k: s.state.vector for k, s in items.items()}
        users_at_start = {k: u.state.vector for k, u in users.items()}
        evidence: dict[str, list[Evidence]] = {}
        seen_batch: dict[str, set[str]] = {}
        touched_users: set[str] = set()
        max_ts: dict[str, int] = {}
        user_ts: dict[str, int] = {}
        unknown: list[str] = []
        for d in fresh:
            it = d.interaction
            slot = items.get(it.item_id)
            if it.item_id not in stored or slot is None:
                st.unknown_items += 1
                unknown.append(it.item_id)
                continue
            seen = seen_batch.setdefault(it.item_id, set(slot.state.seen_event_ids))
            # the same event sent twice, or ten clicks on one slot: counted (and learned) once
            count_key = it.count_key()
            if it.event_id in seen or count_key in seen:
                st.duplicates += 1
                continue
            seen.add(count_key)
            weight, positive = self._classify(it)
            user = users[it.user_id]
            if user.state.prior.shape != slot.state.prior.shape:  # item_dim changed since the user's state
                log.warning(
                    "user %s: state of shape %s, items have %s: restarted from zeros",
                    it.user_id,
                    user.state.prior.shape,
                    slot.state.prior.shape,
                )
                user.state = UserWarmState.new(it.user_id, np.zeros_like(slot.state.prior))
            x_user = user.state.vector
            # an uninformative (all-zero) user vector carries no evidence about the item's location
            w_item = weight if bool(np.any(x_user)) else 0.0
            evidence.setdefault(it.item_id, []).append(Evidence(count_key, x_user, w_item, positive))
            if it.kind == "impression":
                slot.impressions += 1
            x_item = (
                slot.state.prior if self.config.user_counterpart == "content" else served_at_start[it.item_id]
            )
            user.state = self.model.update_user(user.state, [Evidence(count_key, x_item, weight, positive)])
            touched_users.add(it.user_id)
            ts = _us(it.ts)
            max_ts[it.item_id] = max(max_ts.get(it.item_id, 0), ts)
            user_ts[it.user_id] = max(user_ts.get(it.user_id, 0), ts)
            st.applied += 1
        if unknown:
            log.warning(
                "%d interactions with items not in the feature store skipped (e.g. %s)",
                len(unknown),
                sorted(set(unknown))[:5],
            )
        # ----- new states and rows
        new_items: list[_ItemSlot] = []
        rows: list[StoredItem] = []
        for item_id, evs in evidence.items():
            slot = items[item_id]
            slot.state = self.model.update_item(slot.state, evs)
            row = stored[item_id]
            last = max(max_ts[item_id], _us(row.updated_at) + 1, slot.last_us + 1)
            slot.last_us = last
            status = "graduated" if row.status == "graduated" else slot.state.status
            rows.append(
                dataclasses.replace(
                    row,
                    item_vector=slot.state.vector,
                    status=status,
                    impressions=slot.impressions,
                    clicks=slot.state.positives,
                    model_version=self.model_version,
                    updated_at=_from_us(last),
                )
            )
            new_items.append(slot)
        new_users: list[_UserSlot] = []
        user_rows: list[StoredUser] = []
        for user_id in touched_users:
            u = users[user_id]
            new_users.append(u)
            if not self.config.write_unchanged_users and np.array_equal(
                u.state.vector, users_at_start[user_id]
            ):
                continue  # only weight-0 evidence (impressions): the checkpoint counts it, the row waits
            u.last_us = max(user_ts[user_id], u.last_us + 1)
            user_rows.append(
                StoredUser(
                    user_id, u.state.vector, u.state.interactions, self.model_version, _from_us(u.last_us)
                )
            )
        # ----- write (store first, then the checkpoint: see the module docstring); the item rows
        # (the freshness path) go first, the pools and announcements next, the users last
        t1 = time.perf_counter()
        st.compute_s = t1 - t0
        if self._state_mode:
            writer: Any = self.store
            writer.write_items(rows, mode="state")  # only the state rows: content rows are the encoder's
        else:
            self.store.write_items(rows)
        t2 = time.perf_counter()
        self._feed_pools(rows)
        if self.announce is not None and rows:
            self.announce(rows)
        t3 = time.perf_counter()
        self.store.users().write_users(user_rows)
        t4 = time.perf_counter()
        self.checkpoint.commit(new_items, new_users, offsets)
        st.write_items_s, st.publish_s = t2 - t1, t3 - t2
        st.write_users_s, st.checkpoint_s = t4 - t3, time.perf_counter() - t4
        for key, off in offsets.items():
            self._offsets[key] = max(self._offsets.get(key, 0), off)
        self._remember(new_items, new_users)
        st.items_written = len(rows)
        st.users_written = len(user_rows)
        return st

    def _checkpoint_offsets(self, offsets: Mapping[tuple[str, int], int]) -> None:
        moved = {k: v for k, v in offsets.items() if v > self._offsets.get(k, 0)}
        if moved:
            self.checkpoint.commit([], [], moved)
            self._offsets.update(moved)

    def _content(self, row: StoredItem, slot: _ItemSlot | None) -> Vector:
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

    def _feed_pools(self, rows: Sequence[StoredItem]) -> None:
        if self.pools is None or not rows:
            return
        from exploration.pool.base import POOL_STATUSES, entry_from_item
        from exploration.pool.pools import ItemPools

        if isinstance(self.pools, ItemPools):
            self.pools.upsert_items(rows)
            return
        self.pools.upsert([entry_from_item(r, "item") for r in rows if r.status in POOL_STATUSES])
        gone = [r.item_id for r in rows if r.status not in POOL_STATUSES]
        if gone:
            self.pools.remove(gone)


def _served_warmup(settings: Settings) -> tuple[ServedWarmup | None, str]:
    """The warm-up of the encoder artifact the settings serve, and that artifact's version; ``None``
    (the shrinkage warm-up runs) when there is no artifact or it carries no warm-up."""
    try:
        path = resolve_artifact(settings.models.artifact, settings.models.artifacts_dir)
        manifest = read_manifest(path)
        served = load_served_warmup(path, manifest.warmup)
    except NotFoundError as exc:
        log.warning("warm-up: no encoder artifact (%s); running the shrinkage warm-up", exc)
        return None, ""
    if served is None:
        log.warning("warm-up: artifact %s has no calibrated warm-up; running shrinkage", manifest.version)
        return None, ""
    log.info(
        "warm-up: posterior from %s (prior strength %s, gate %d positives)",
        manifest.version,
        served.card()["prior_strength"],
        served.min_positives,
    )
    return served, manifest.version


class Announcer:
    """Publishes written rows on ``items.stored`` without waiting for the broker (``flush`` does).

    Announcements are notifications for other processes' pools, not the record (the feature store
    is): the learner does not wait for their acknowledgement on its freshness path. One lost in a
    crash is healed by the pools' periodic sync from the store.
    """

    def __init__(self, producer: EventProducer) -> None:
        self.producer = producer

    def __call__(self, rows: Sequence[StoredItem]) -> None:
        from stream.pool_feed import stored_event
        from stream.topics import ITEMS_STORED

        for row in rows:
            self.producer.publish(ITEMS_STORED, row.item_id, stored_event(row))

    def flush(self) -> None:
        """Wait until every announcement is acknowledged."""
        self.producer.flush()


def _has_mode(store: FeatureStore) -> bool:
    """Whether ``store.write_items`` takes ``mode`` (the Feast store does: ``state`` keeps content rows)."""
    import inspect

    try:
        return "mode" in inspect.signature(store.write_items).parameters
    except (TypeError, ValueError):
        return False


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
    cfg = config or getattr(settings, "warmup", None)
    if isinstance(cfg, WarmupStageConfig) and not cfg.enabled:
        return None
    if store is None:
        from feature_repo import open_store

        store = open_store(settings)
    return WarmupStage.from_settings(settings, store, producer=producer, pools=pools, config=config)
