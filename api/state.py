"""The app's runtime state, built once per process in the FastAPI lifespan (never at import).

It owns the feature store, the cold pool(s), the slot service, the hot-reloaded policy, the Kafka
producer (optional) and the background maintenance loop (policy reload, pool sync, graduation).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import functools
import logging
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Literal

from api.metrics import ApiMetrics
from coldstart.decisions import Decision
from coldstart.errors import ArtifactError, BrokerError, ColdstartError, NotFoundError
from coldstart.settings import Settings
from coldstart.topics import DECISIONS
from exploration.model_store import LocalModelStore, ModelStore, PolicyHolder
from exploration.pacing import ExposurePacer, GraduationEvent
from exploration.policies import build_policy
from exploration.pool import build_pool
from exploration.pool.base import POOL_STATUSES, CandidatePool, entry_from_item
from exploration.pool.snapshot import read_snapshot, snapshot_dir
from exploration.service import SlotService
from exploration.sinks import (
    DecisionSink,
    KafkaDecisionSink,
    OfflineDecisionSink,
    ProcessKafkaDecisionSink,
)
from feature_repo import open_store
from feature_repo.base import FeatureStore
from feature_repo.config import ProductionStoreConfig
from feature_repo.records import StoredItem
from models.base import ItemEncoder
from models.serving import load_encoder
from stream.broker import embedded_address
from stream.link import BrokerLink
from stream.pool_feed import PoolFeed
from stream.producer import EventProducer

log = logging.getLogger(__name__)

SyncMode = Literal["full", "changed", "new"]  # see AppState.sync_pool

PoolFactory = Callable[[], CandidatePool]


def model_store_dir(settings: Settings) -> Path:
    """Directory of the local model store."""
    return settings.exploration.model_store_dir or settings.data_dir / "model_store"


@dataclass
class AppState:
    """Everything a request handler may need (reached through ``api.deps``)."""

    settings: Settings
    metrics: ApiMetrics
    service: SlotService
    holder: PolicyHolder
    store: FeatureStore | None = None
    search_pool: CandidatePool | None = None
    broker: BrokerLink | None = None
    model_store: ModelStore | None = None
    pool_synced: bool = False
    pool_feed: PoolFeed | None = None
    _encoder: ItemEncoder | None = None
    _encoder_lock: threading.Lock = field(default_factory=threading.Lock)
    _tasks: list[asyncio.Task[None]] = field(default_factory=list)
    _seen: set[str] = field(default_factory=set)
    _pending: set[str] = field(default_factory=set)  # listed offline, not yet read online
    # rows written from these times on: what the next changed / new sync reads (before the overlap)
    _changed_mark: datetime | None = None
    _listed_mark: datetime | None = None
    _sync_lock: threading.Lock = field(default_factory=threading.Lock)
    _store_ok: bool = True
    _store_checked: float = 0.0

    # ------------------------------------------------------------------ encoder (lazy)
    def encoder(self) -> ItemEncoder:
        """The item encoder for search queries (loaded on first use: onnxruntime and the artifact
        cost seconds and memory a replica without search never needs)."""
        if self._encoder is None:
            with self._encoder_lock:
                if self._encoder is None:
                    try:
                        self._encoder = load_encoder(self.settings.models.artifact)
                    except NotFoundError as exc:
                        raise ArtifactError(f"search needs an encoder artifact: {exc}") from exc
        return self._encoder

    def store_healthy(self) -> bool:
        """The online store answered a read within the last half second (and slots read users)."""
        if self.store is None:
            return False
        now = time.monotonic()
        if now - self._store_checked > 0.5:
            try:
                self.store.users().get_users(["__readyz__"])
                ok = True
            except ColdstartError:
                ok = False
            self._store_ok, self._store_checked = ok, now
        return self._store_ok and self.service.users_available

    def publish(self, send: Callable[[EventProducer], Any]) -> Any:
        """``send(producer)`` and its acknowledgement, or a 503-mapped :class:`BrokerError` within
        ``api.publish_timeout_ms`` (at once while the broker probe says it is away)."""
        if self.broker is None:
            raise BrokerError("no Kafka producer: disabled (api.connect_kafka=false)")
        return self.broker.publish(send, self.settings.api.publish_timeout_ms / 1000.0)

    def follow_stored(self) -> None:
        """(Re)start following ``items.stored`` (at start, and after the broker came back)."""
        if self.broker is None or not self.settings.api.follow_stored:
            return
        old, self.pool_feed = self.pool_feed, None
        if old is not None:
            old.stop()
        try:
            self.pool_feed = PoolFeed(
                self.broker.bootstrap_servers,
                self.apply_stored,
                fetch_max_wait_ms=self.settings.kafka.follow_fetch_wait_ms,
            ).start()
        except Exception as exc:  # the periodic store sync still keeps the pool up to date
            log.warning("API pool does not follow items.stored: %s", exc)

    # ------------------------------------------------------------------ maintenance
    def load_snapshot(self) -> bool:
        """Fill the pools from the pool snapshot, if there is one (bulk: no per-item store read, no
        graph build); ``False``: none usable, the caller syncs from the store."""
        pools: dict[str, CandidatePool] = {"item": self.service.pool}
        if self.search_pool is not None:
            pools["content"] = self.search_pool
        snap = read_snapshot(snapshot_dir(self.settings), pools)
        if snap is None:
            return False
        self.service.track(snap.entries["item"], snap.rows.counts())
        self._seen = set(snap.rows.known_ids)
        self._changed_mark = self._listed_mark = snap.taken_at
        self.metrics.pool_size.set(len(self.service))
        log.info("pool: %d items from the snapshot taken at %s", len(snap.rows), snap.taken_at.isoformat())
        return True

    def sync_pool(self, mode: SyncMode = "full") -> tuple[int, int]:
        """Sync the slot pool and the search pool with the store's cold items.

        ``full``: re-read every stored item (start-up without a snapshot). ``changed``: re-read the
        items whose content or state rows were written since the previous full or changed sync (or
        the snapshot), less ``pool_sync_overlap_s``: statuses and vectors whose ``items.stored``
        announcement this replica missed (at a million items a full re-read costs the serving process
        ~100 s). ``new``: read the items listed since the previous sync (content rows written since,
        less the overlap) that the replica has never seen (scanning every listed id instead costs
        ~20 ms of GIL each time at a million items). Ids come from the offline history, which every writer
        writes before the online row; one whose online row is not there yet is asked for again at
        every sync until it is.
        """
        if self.store is None:
            self.pool_synced = True
            return 0, 0
        with self._sync_lock:  # the maintenance loop's syncs and an explicit one never interleave
            return self._sync_pool(mode)

    def _sync_pool(self, mode: SyncMode) -> tuple[int, int]:
        assert self.store is not None
        items: list[StoredItem]
        offline = getattr(self.store, "offline", None)
        started = datetime.now(UTC)
        overlap = timedelta(seconds=self.settings.exploration.pool_sync_overlap_s)
        if mode == "full" or offline is None or self._changed_mark is None or self._listed_mark is None:
            items = list(self.store.iter_items())
            self._seen = {i.item_id for i in items}
            self._changed_mark = self._listed_mark = started
        elif mode == "changed":
            ids = set(offline.ids_written_since("item_state", "item_id", self._changed_mark - overlap))
            ids.update(offline.ids_written_since("item_content", "item_id", self._changed_mark - overlap))
            items = list(self.store.get_items(sorted(ids)).values()) if ids else []
            self._changed_mark = started
        else:
            listed = offline.ids_written_since("item_content", "item_id", self._listed_mark - overlap)
            self._pending.update(i for i in listed if i not in self._seen)
            self._listed_mark = started
            # ids listed offline whose online row is not there yet (written offline first) stay
            # pending and are asked for again at the next sync
            items = list(self.store.get_items(sorted(self._pending)).values()) if self._pending else []
        self._seen.update(i.item_id for i in items)
        self._pending.difference_update(i.item_id for i in items)
        added, removed = self.service.sync_from_store(items)
        self._sync_search_pool(items)
        self.pool_synced = True
        self.metrics.pool_size.set(len(self.service))
        return added, removed

    def on_graduation(self, events: list[GraduationEvent]) -> None:
        """Graduated items leave the search pool and get ``status="graduated"`` in the store."""
        for e in events:
            self.metrics.graduations.labels(reason=e.reason).inc()
        ids = [e.item_id for e in events]
        if self.search_pool is not None:
            self.search_pool.remove(ids)
        if self.store is None:
            return
        stored = self.store.get_items(ids)
        now = datetime.now(UTC)
        rows = [
            dataclasses.replace(
                stored[e.item_id],
                status="graduated",
                impressions=max(stored[e.item_id].impressions, e.impressions),
                clicks=max(stored[e.item_id].clicks, e.clicks),
                updated_at=max(now, stored[e.item_id].updated_at),
            )
            for e in events
            if e.item_id in stored
        ]
        if rows:
            self.store.write_items(rows)

    async def maintenance_loop(self) -> None:
        """Policy reload, pool sync and graduation, each on its own period."""
        cfg = self.settings.exploration
        next_reload = next_sync = next_grad = 0.0
        next_changed = time.monotonic() + cfg.pool_changed_sync_interval_s  # build_state did a first sync
        while True:
            now = time.monotonic()
            try:
                if now >= next_reload:
                    next_reload = now + cfg.reload_interval_s
                    if await asyncio.to_thread(self.holder.maybe_reload):
                        self.metrics.reloads.inc()
                    self.metrics.set_model_version(self.holder.current.version)
                if now >= next_sync:
                    next_sync = now + cfg.pool_refresh_interval_s
                    mode: SyncMode = "changed" if now >= next_changed else "new"
                    if mode == "changed":
                        next_changed = now + cfg.pool_changed_sync_interval_s
                    await asyncio.to_thread(self.sync_pool, mode)
                if now >= next_grad:
                    next_grad = now + cfg.graduation_interval_s
                    await asyncio.to_thread(self.service.graduate)
                    self.metrics.pool_size.set(len(self.service))
                    # off the event loop: passes over every tracked item (~5 ms each at a million);
                    # the strength refreshed here is what requests read, so none recomputes it
                    pacer = self.service.pacer
                    self.metrics.on_schedule.set(await asyncio.to_thread(pacer.on_schedule_share))
                    await asyncio.to_thread(pacer.refresh_strength)
            except ColdstartError as exc:
                log.warning("maintenance: %s", exc)
            except Exception:
                log.exception("maintenance failed")
            await asyncio.sleep(0.2)

    def apply_stored(self, rows: Sequence[StoredItem]) -> None:
        """Rows announced on ``items.stored`` (new encodings, warmed-up vectors): update the pools now,
        so the bandit sees a new or warmed vector within the freshness target, not at the next sync."""
        self.service.sync_from_store(rows)
        self._seen.update(r.item_id for r in rows)
        self._sync_search_pool(rows)
        self.metrics.pool_size.set(len(self.service))

    def _sync_search_pool(self, items: Sequence[StoredItem]) -> None:
        if self.search_pool is None or not items:
            return
        cold = [i for i in items if i.status in POOL_STATUSES]
        self.search_pool.upsert([entry_from_item(i, "content") for i in cold])
        self.search_pool.remove([i.item_id for i in items if i.status not in POOL_STATUSES])

    def start_background(self) -> None:
        """Start the maintenance loop on the running event loop."""
        self._tasks.append(asyncio.get_running_loop().create_task(self.maintenance_loop()))

    async def aclose(self) -> None:
        """Stop background work, flush sinks, close the producer and the store."""
        for task in self._tasks:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        if self.pool_feed is not None:
            await asyncio.to_thread(self.pool_feed.stop)
        await asyncio.to_thread(self.service.close)
        if self.broker is not None:
            with contextlib.suppress(Exception):
                self.broker.close(timeout_s=5.0)
        close = getattr(self.store, "close", None)
        if close is not None:
            with contextlib.suppress(Exception):
                close()


def build_state(
    settings: Settings,
    *,
    store: FeatureStore | None = None,
    pool_factory: PoolFactory | None = None,
    producer: EventProducer | None = None,
) -> AppState:
    """Build the runtime state from settings (opening the store and, if enabled, a Kafka producer).

    Parameters
    ----------
    store, producer
        Use these instead of opening them from settings (embedding the API in another process).
    pool_factory
        Builds an empty :class:`CandidatePool` (default: the project's implementation).
    """
    factory = pool_factory or (lambda: build_pool(settings.exploration.pool))
    metrics = ApiMetrics()
    if store is None:
        feast = settings.feast
        if isinstance(feast, ProductionStoreConfig):
            # no request may wait for a lost online store: bounded Redis calls without retries
            feast = feast.model_copy(update={"online_timeout_ms": settings.api.store_timeout_ms})
        store = open_store(settings.model_copy(update={"feast": feast}))
    cfg = settings.exploration
    mstore = LocalModelStore(model_store_dir(settings))
    holder = PolicyHolder(build_policy(cfg.policy, seed=settings.seed), mstore)
    holder.maybe_reload()
    metrics.set_model_version(holder.current.version)

    broker: BrokerLink | None = None
    sinks: list[DecisionSink] = []
    if settings.api.connect_kafka:
        bootstrap = settings.kafka.bootstrap_servers or embedded_address(settings.kafka)
        # a write waits at most publish_timeout_ms for the broker, a send never blocks longer
        api_kafka = settings.kafka.model_copy(
            update={"producer_max_block_ms": settings.api.publish_timeout_ms}
        )
        broker = BrokerLink(
            bootstrap,
            api_kafka,
            make_producer=None if producer is None else (lambda: producer),
            owns_producers=producer is None,  # an injected producer is its owner's to close
        )
        if not broker.healthy:
            log.warning("Kafka at %s does not answer yet: writes answer 503 until it does", bootstrap)
        if producer is None and settings.api.decision_log_process:
            # the decisions topic gets its own producer in a child process (off the serving GIL)
            sinks.append(
                ProcessKafkaDecisionSink(
                    functools.partial(EventProducer, bootstrap, api_kafka),
                    DECISIONS,
                    max_batch=settings.api.decision_log_max_batch,
                    linger_s=settings.api.decision_log_linger_ms / 1000.0,
                    idle_class=settings.api.decision_log_idle_class,
                )
            )
        else:
            sinks.append(KafkaDecisionSink(_LinkProducer(broker)))
    offline = getattr(store, "offline", None)
    # with Kafka the archive consumer writes the offline decision log from the decisions topic
    # (committed after its write, so a crash of this process loses nothing the topic has)
    if settings.api.offline_decisions and offline is not None and broker is None:
        sinks.append(OfflineDecisionSink(offline))

    service = SlotService(
        pool=factory(),
        users=store.users(),
        holder=holder,
        pacer=ExposurePacer(cfg.pacing),
        sinks=sinks,
        candidates_m=cfg.candidates_m,
        starving_candidates=cfg.starving_candidates,
        per_seller_cap=cfg.pacing.per_seller_cap,
    )
    state = AppState(
        settings=settings,
        metrics=metrics,
        service=service,
        holder=holder,
        store=store,
        search_pool=factory() if settings.api.search_index else None,
        broker=broker,
        model_store=mstore,
    )
    service.graduation_hooks.append(state.on_graduation)
    state.follow_stored()
    if broker is not None:
        broker.on_recover.append(state.follow_stored)  # a restarted broker: follow its new topic
    # a snapshot replaces the full store read at start; the items listed since it are read now, the
    # states changed since it come with their announcements and the next changed sync
    state.sync_pool("new" if state.load_snapshot() else "full")
    return state


class _LinkProducer:
    """The broker link's current producer, as the in-process decision sink needs it."""

    def __init__(self, link: BrokerLink) -> None:
        self.link = link

    def publish_decision(self, decision: Decision) -> Any:
        return self.link.producer().publish_decision(decision)

    def flush(self, timeout_s: float | None = None) -> None:
        if self.link.healthy:
            self.link.producer().flush(timeout_s)
