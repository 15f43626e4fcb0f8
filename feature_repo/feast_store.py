"""The Feast-backed :class:`~feature_repo.base.FeatureStore` (embedded and production).

Online rows are written through the Feast provider of the repo config into the feature views (the
call ``FeatureStore.push`` on their PushSources ends in, minus its per-call registry reads); offline
history is written by the store's :class:`~feature_repo.offline.base.OfflineLog` *before* the
online write, so a crash in between is healed by the re-delivery (offline rows are deduplicated on
their key).

``write_items`` is idempotent and never regresses: per item it writes the content row only when the
content changed and is newer than the stored one, and the state row only when the warm-up state
changed and is newer. The encoder worker and the warm-up learner can therefore both call it with
full :class:`StoredItem` rows (the learner: ``dataclasses.replace(item, item_vector=..., status=...,
impressions=..., clicks=..., updated_at=event_ts)``) without overwriting each other's part.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime
from typing import Any

import numpy as np
import pandas as pd
from feast import FeatureStore as _FeastStore
from feast import FeatureView
from feast.protos.feast.types.EntityKey_pb2 import EntityKey as EntityKeyProto
from feast.protos.feast.types.Value_pb2 import Value as ValueProto

from coldstart.errors import InvalidInputError, StoreError
from feature_repo.base import FeatureStore, UserStore, WriteMode
from feature_repo.definitions import (
    ITEM_CONTENT,
    ITEM_STATE,
    USER_VECTOR,
    Definitions,
)
from feature_repo.offline.base import OfflineLog, content_row, state_row, user_row, utc
from feature_repo.online_values import (
    EPOCH,
    FEATURES,
    KINDS,
    as_utc,
    checked_latest,
    f32,
    from_proto,
    precise_ts,
    same_second,
    same_vec,
    to_proto,
)
from feature_repo.records import StoredItem, StoredUser
from feature_repo.sqlite_online import SqliteOnlineWriter

_READ_CHUNK = 500


_ROW = "__coldstart_row"


class FeastFeatureStore(FeatureStore):
    """Feature store over Feast (online) and an :class:`OfflineLog` (history).

    Online rows are written and read through the Feast provider of the repo config (the same calls
    ``FeatureStore.push`` / ``get_online_features`` end in), with the feature views resolved once at
    open: Feast's generic path re-reads the registry and converts through pandas on every call
    (≈50 ms per push), too slow for the encoder and the serving path.

    Parameters
    ----------
    store
        A Feast store whose registry holds ``definitions`` (``open_store`` applies them).
    offline
        Where history rows go (parquet or PostgreSQL).
    definitions
        The Feast objects of this store.
    """

    def __init__(self, store: _FeastStore, offline: OfflineLog, definitions: Definitions) -> None:
        self.feast = store
        self.offline = offline
        self.definitions = definitions
        self._write_lock = threading.Lock()
        self._provider = store._get_provider()
        # Feast's SQLite online store shares one sqlite3 connection between threads: serialise it
        # (Redis clients are thread-safe and pooled, so production reads run in parallel)
        sqlite = type(store.config.online_store).__name__.startswith("Sqlite")
        self._online_lock: contextlib.AbstractContextManager[Any] = (
            threading.Lock() if sqlite else contextlib.nullcontext()
        )
        online = self._provider.online_store
        # the stock SQLite store writes one statement per feature: the same rows in one statement
        self._sqlite_writer = (
            SqliteOnlineWriter(online, store.config)
            if SqliteOnlineWriter.applies(online, store.config)
            else None
        )
        self._views: dict[str, FeatureView] = {
            # not from the registry cache: another process may have applied the views after this
            # FeatureStore cached an empty registry (processes opening a new store together)
            name: store.get_feature_view(name, allow_registry_cache=False)
            for name in (ITEM_CONTENT, ITEM_STATE, USER_VECTOR)
        }
        self._users = FeastUserStore(self)

    # -- low-level online access ------------------------------------------------------------------
    def _online_write(self, view: str, key: str, rows: list[dict[str, Any]]) -> None:
        if not rows:
            return
        kinds = KINDS[view]
        data = [
            (
                EntityKeyProto(join_keys=[key], entity_values=[ValueProto(string_val=r[key])]),
                {f: to_proto(kinds[f], r[f]) for f in FEATURES[view]},
                r["event_ts"],
                r["created_ts"],
            )
            for r in rows
        ]
        try:
            with self._online_lock:
                if self._sqlite_writer is not None:
                    self._sqlite_writer.write(self._views[view], data)
                else:
                    self._provider.online_write_batch(self.feast.config, self._views[view], data, None)
        except Exception as exc:  # Feast raises many unrelated types (redis, sqlite, proto)
            raise StoreError(f"cannot write {len(rows)} rows to online view {view}: {exc}") from exc

    def _online_read(
        self, view: str, key: str, ids: Sequence[str]
    ) -> list[tuple[datetime | None, dict[str, Any] | None]]:
        keys = [EntityKeyProto(join_keys=[key], entity_values=[ValueProto(string_val=i)]) for i in ids]
        try:
            with self._online_lock:
                res = self._provider.online_read(
                    self.feast.config, self._views[view], keys, list(FEATURES[view])
                )
        except Exception as exc:
            raise StoreError(f"cannot read {len(ids)} rows from online view {view}: {exc}") from exc
        out: list[tuple[datetime | None, dict[str, Any] | None]] = []
        for ts, values in res:
            if values is None:
                out.append((None, None))
            else:
                out.append((as_utc(ts), {k: from_proto(v) for k, v in values.items()}))
        return out

    # -- writes ---------------------------------------------------------------------------------
    def write_items(self, items: Sequence[StoredItem], mode: WriteMode = "full") -> None:
        """Write content and state rows online and to the offline history (idempotent, see module doc).

        Parameters
        ----------
        items
            Full rows; within one call the newest row per ``item_id`` wins.
        mode
            ``full``: content and warm-up state as given. ``content`` (the encoder's choice): the content,
            plus the initial state only for items that have none yet, so re-encoding or re-listing an
            item never resets its warm-up. ``state`` (the learner's choice): the state only.
        """
        if not items:
            return
        if mode not in ("full", "content", "state"):
            raise InvalidInputError("mode", mode, "must be 'full', 'content' or 'state'")
        batch: list[StoredItem] = checked_latest(items, "item_id")
        now = datetime.now(UTC)
        with self._write_lock:
            existing = self._read_items([i.item_id for i in batch])
            content_new: list[StoredItem] = []
            state_new: list[StoredItem] = []
            for it in batch:
                old = existing.get(it.item_id)
                ts = utc(it.updated_at, f"items[{it.item_id}].updated_at")
                if mode != "state" and (old is None or (ts > old.content_ts and not old.same_content(it))):
                    content_new.append(it)
                initial = old is None or not old.has_state
                changed = old is not None and ts > old.state_ts and not old.same_state(it)
                if initial or (mode != "content" and changed):
                    state_new.append(it)
            # offline first: a crash before the online write is healed by the re-delivery
            self.offline.write_item_content(content_new)
            self._put_states(state_new, now)
            self._online_write(ITEM_CONTENT, "item_id", [content_row(i, now) for i in content_new])

    def write_states(self, items: Sequence[StoredItem], users: Sequence[StoredUser]) -> None:
        """The learner's batch: state and user rows as given (the newest per key), offline first,
        with no read-and-compare (see :meth:`FeatureStore.write_states`)."""
        item_rows: list[StoredItem] = checked_latest(items, "item_id")
        user_rows: list[StoredUser] = checked_latest(users, "user_id")
        now = datetime.now(UTC)
        with self._write_lock:
            self._put_states(item_rows, now)
            self._put_users(user_rows, now)

    def _put_states(self, items: Sequence[StoredItem], now: datetime) -> None:
        """State rows to the offline history, then online (write lock held); built once for both."""
        rows = [state_row(i, now) for i in items]
        self.offline.write_state_rows(rows)
        self._online_write(ITEM_STATE, "item_id", rows)

    def _put_users(self, users: Sequence[StoredUser], now: datetime) -> None:
        """User rows to the offline history, then online (write lock held); built once for both."""
        rows = [user_row(u, now) for u in users]
        self.offline.write_user_rows(rows)
        self._online_write(USER_VECTOR, "user_id", rows)

    # -- reads ----------------------------------------------------------------------------------
    def _read_items(self, item_ids: Sequence[str]) -> dict[str, _OnlineItem]:
        out: dict[str, _OnlineItem] = {}
        ids = list(dict.fromkeys(item_ids))
        for start in range(0, len(ids), _READ_CHUNK):
            chunk = ids[start : start + _READ_CHUNK]
            contents = self._online_read(ITEM_CONTENT, "item_id", chunk)
            states = self._online_read(ITEM_STATE, "item_id", chunk)
            for item_id, (c_ts, c), (s_ts, st) in zip(chunk, contents, states, strict=True):
                if c is None or c.get("content_vector") is None:
                    continue
                content_ts = precise_ts(c.get("content_updated_us"), c_ts)
                civ = c.get("content_item_vector")
                civ = c["content_vector"] if civ is None else civ
                st = st or {}
                ivec = st.get("item_vector")
                has_state = ivec is not None
                state_ts = precise_ts(st.get("state_updated_us"), s_ts) if has_state else EPOCH
                item = StoredItem(
                    item_id=item_id,
                    content_vector=c["content_vector"],
                    item_vector=ivec if ivec is not None else civ,
                    image_ok=bool(c.get("image_ok")),
                    text_ok=bool(c.get("text_ok")),
                    encoder_version=str(c.get("encoder_version") or ""),
                    listed_at=c.get("listed_at") or content_ts,
                    updated_at=max(content_ts, state_ts),
                    category=str(c.get("category") or ""),
                    seller_id=str(c.get("seller_id") or ""),
                    status=st.get("status") or "cold",
                    impressions=int(st.get("impressions") or 0),
                    clicks=int(st.get("clicks") or 0),
                    content_item_vector=civ,
                    model_version=str(st.get("model_version") or ""),
                )
                out[item_id] = _OnlineItem(item, content_ts, state_ts, has_state)
        return out

    def get_items(self, item_ids: Sequence[str]) -> dict[str, StoredItem]:
        """Online read of items (content + current state); unknown ids are absent.

        ``updated_at`` is the newest event timestamp of the two rows (microseconds kept);
        ``listed_at`` has whole-second precision (a Feast UnixTimestamp feature).
        """
        return {k: v.item for k, v in self._read_items(item_ids).items()}

    def iter_items(self) -> Iterator[StoredItem]:
        """Every stored item, read online in chunks (ids come from the offline content history)."""
        ids = self.offline.distinct_ids("item_content", "item_id")
        for start in range(0, len(ids), _READ_CHUNK):
            yield from self.get_items(ids[start : start + _READ_CHUNK]).values()

    def users(self) -> FeastUserStore:
        """The user side of the store."""
        return self._users

    # -- training / analysts --------------------------------------------------------------------
    def historical_features(self, entity_df: pd.DataFrame, features: Sequence[str]) -> pd.DataFrame:
        """Point-in-time-correct training frame.

        Parameters
        ----------
        entity_df
            Columns ``item_id`` and/or ``user_id`` and ``event_timestamp`` (tz-aware): each row gets the
            feature values as they were at its timestamp (latest row with ``event_ts <= event_timestamp``).
        features
            Feature references such as ``"item_content:content_vector"``, ``"item_state:item_vector"``.
        """
        if "event_timestamp" not in entity_df.columns:
            raise InvalidInputError("entity_df.columns", list(entity_df.columns), "needs 'event_timestamp'")
        if _ROW in entity_df.columns:
            raise InvalidInputError("entity_df.columns", list(entity_df.columns), f"{_ROW!r} is reserved")
        tagged = entity_df.reset_index(drop=True).assign(**{_ROW: np.arange(len(entity_df), dtype=np.int64)})
        try:
            job = self.feast.get_historical_features(entity_df=tagged, features=list(features))
            found = job.to_df()
        except Exception as exc:
            raise StoreError(f"cannot build the historical feature frame: {exc}") from exc
        # one row per entity row, in the entity frame's order: a row with no earlier feature row gets
        # nulls (the file offline store drops it, PostgreSQL keeps it)
        values = found.drop(columns=[c for c in entity_df.columns if c in found.columns])
        values = values.drop_duplicates(_ROW, keep="last")
        out = tagged.merge(values, on=_ROW, how="left").sort_values(_ROW, kind="stable")
        return out.drop(columns=[_ROW]).reset_index(drop=True)

    def close(self) -> None:
        """Release connections (offline pool; Feast's online clients are per-process)."""
        self.offline.close()


class _OnlineItem:
    __slots__ = ("content_ts", "has_state", "item", "state_ts")

    def __init__(self, item: StoredItem, content_ts: datetime, state_ts: datetime, has_state: bool) -> None:
        self.item = item
        self.content_ts = content_ts
        self.state_ts = state_ts
        self.has_state = has_state

    def same_content(self, new: StoredItem) -> bool:
        old = self.item
        # a row without content_item_vector (e.g. a warm-up update built from the encoder's row) says
        # nothing about it: the stored one is kept
        civ = new.content_item_vector
        return (
            same_vec(old.content_vector, f32(new.content_vector))
            and (civ is None or same_vec(old.content_item_vector, f32(civ)))
            and old.image_ok == new.image_ok
            and old.text_ok == new.text_ok
            and old.encoder_version == new.encoder_version
            and old.category == new.category
            and old.seller_id == new.seller_id
            and same_second(old.listed_at, utc(new.listed_at, "listed_at"))
        )

    def same_state(self, new: StoredItem) -> bool:
        old = self.item
        return (
            self.has_state
            and same_vec(old.item_vector, f32(new.item_vector))
            and old.status == new.status
            and old.impressions == new.impressions
            and old.clicks == new.clicks
            and old.model_version == new.model_version
        )


class FeastUserStore(UserStore):
    """User vectors in the ``user_vector`` feature view."""

    def __init__(self, parent: FeastFeatureStore) -> None:
        self._p = parent

    def write_users(self, users: Sequence[StoredUser]) -> None:
        """Write user rows offline, then online; stale rows (not newer than the stored one) are skipped."""
        if not users:
            return
        batch: list[StoredUser] = checked_latest(users, "user_id")
        now = datetime.now(UTC)
        with self._p._write_lock:
            current = self.get_users([u.user_id for u in batch])
            fresh = [
                u
                for u in batch
                if u.user_id not in current
                or utc(u.updated_at, f"users[{u.user_id}].updated_at") > current[u.user_id].updated_at
            ]
            self._p._put_users(fresh, now)

    def get_users(self, user_ids: Sequence[str]) -> dict[str, StoredUser]:
        """Online read; unknown users are absent. ``updated_at`` keeps microseconds."""
        out: dict[str, StoredUser] = {}
        ids = list(dict.fromkeys(user_ids))
        for start in range(0, len(ids), _READ_CHUNK):
            chunk = ids[start : start + _READ_CHUNK]
            rows = self._p._online_read(USER_VECTOR, "user_id", chunk)
            for user_id, (ts, row) in zip(chunk, rows, strict=True):
                if row is None or row.get("user_vector") is None:
                    continue
                out[user_id] = StoredUser(
                    user_id=user_id,
                    vector=row["user_vector"],
                    interactions=int(row.get("interactions") or 0),
                    model_version=str(row.get("model_version") or ""),
                    updated_at=precise_ts(row.get("user_updated_us"), ts),
                )
        return out
