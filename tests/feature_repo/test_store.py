"""The Feast-backed feature store, on both profiles (embedded: SQLite + parquet; production: Redis + PG)."""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from coldstart.errors import InvalidInputError
from coldstart.settings import Settings
from feature_repo.base import FeatureStore
from feature_repo.feast_store import FeastFeatureStore
from feature_repo.records import StoredItem, StoredUser

T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
# Feast's file offline store runs dask, which warns about pandas downcasting in its own code
pytestmark = pytest.mark.filterwarnings("ignore::FutureWarning")


def rows(store: FeastFeatureStore, table: str, ids: list[str] | str) -> pd.DataFrame:
    """The offline rows of ``table`` that belong to ``ids`` (the store is shared by the session)."""
    df = store.offline.frame(table)  # type: ignore[arg-type]
    key = "user_id" if table == "user_vector" else "item_id"
    return df[df[key].isin([ids] if isinstance(ids, str) else ids)].reset_index(drop=True)


def make_item(i: int, rng: np.random.Generator, uid: str, ts: datetime = T0, **kw: object) -> StoredItem:
    c = rng.standard_normal(16).astype(np.float32)
    fields: dict[str, object] = {
        "item_id": f"item-{uid}-{i}",
        "content_vector": c / np.linalg.norm(c),
        "item_vector": rng.standard_normal(8).astype(np.float32),
        "image_ok": i % 2 == 0,
        "text_ok": True,
        "encoder_version": "enc-1",
        "listed_at": ts,
        "updated_at": ts,
        "category": f"cat-{i % 3}",
        "seller_id": f"seller-{i % 2}",
    }
    fields.update(kw)
    return StoredItem(**fields)  # type: ignore[arg-type]


def test_write_then_read_returns_the_same_items(store: FeastFeatureStore, uid: str) -> None:
    assert isinstance(store, FeatureStore)
    rng = np.random.default_rng(0)
    items = [make_item(i, rng, uid) for i in range(20)]
    store.write_items(items)
    got = store.get_items([it.item_id for it in items] + ["missing"])
    assert set(got) == {it.item_id for it in items}
    for it in items:
        g = got[it.item_id]
        assert g.content_vector.dtype == np.float32
        np.testing.assert_array_equal(g.content_vector, it.content_vector)
        np.testing.assert_array_equal(g.item_vector, it.item_vector)
        np.testing.assert_array_equal(g.content_item_vector, it.item_vector)
        assert (g.image_ok, g.text_ok, g.category, g.seller_id) == (
            it.image_ok,
            it.text_ok,
            it.category,
            it.seller_id,
        )
        assert g.encoder_version == "enc-1" and g.status == "cold" and g.impressions == 0
        assert g.listed_at == T0 and g.updated_at == T0
    listed = {i.item_id for i in store.iter_items()}
    assert {it.item_id for it in items} <= listed


def test_rewrite_is_idempotent_and_leaves_no_duplicate_history(store: FeastFeatureStore, uid: str) -> None:
    rng = np.random.default_rng(1)
    items = [make_item(i, rng, uid) for i in range(10)]
    store.write_items(items)
    store.write_items(items)  # re-delivery of the whole batch
    store.write_items(items[3:5] + items[3:5])  # and duplicates inside a batch
    ids = [it.item_id for it in items]
    assert len(rows(store, "item_content", ids)) == 10
    assert len(rows(store, "item_state", ids)) == 10
    np.testing.assert_array_equal(store.get_items([ids[3]])[ids[3]].content_vector, items[3].content_vector)


def test_warmup_update_writes_state_only_and_stale_rows_are_ignored(
    store: FeastFeatureStore, uid: str
) -> None:
    rng = np.random.default_rng(2)
    item = make_item(0, rng, uid)
    store.write_items([item])
    current = store.get_items([item.item_id])[item.item_id]
    blended = (current.item_vector + 0.5).astype(np.float32)
    t1 = T0 + timedelta(minutes=5)
    store.write_items(
        [
            dataclasses.replace(
                current, item_vector=blended, status="warming", impressions=4, clicks=1, updated_at=t1
            )
        ]
    )
    got = store.get_items([item.item_id])[item.item_id]
    np.testing.assert_array_equal(got.item_vector, blended)
    np.testing.assert_array_equal(got.content_item_vector, item.item_vector)  # frozen content part kept
    assert (got.status, got.impressions, got.clicks, got.updated_at) == ("warming", 4, 1, t1)
    assert len(rows(store, "item_content", item.item_id)) == 1  # content not re-written
    state = rows(store, "item_state", item.item_id)
    assert list(state["status"]) == ["cold", "warming"]
    # the encoder's re-delivered original row (older) must not reset the warm-up state
    store.write_items([item])
    assert store.get_items([item.item_id])[item.item_id].status == "warming"
    assert len(rows(store, "item_state", item.item_id)) == 2
    # nor does a newer re-encoding written by the encoder (mode="content")
    t2 = t1 + timedelta(minutes=5)
    store.write_items([dataclasses.replace(item, encoder_version="enc-2", updated_at=t2)], mode="content")
    got = store.get_items([item.item_id])[item.item_id]
    assert (got.status, got.impressions, got.encoder_version, got.updated_at) == ("warming", 4, "enc-2", t2)
    np.testing.assert_array_equal(got.item_vector, blended)
    assert (
        len(rows(store, "item_content", item.item_id)) == 2
        and len(rows(store, "item_state", item.item_id)) == 2
    )


def test_write_states_writes_the_learners_rows_in_one_call(store: FeastFeatureStore, uid: str) -> None:
    """The learner's batch write: state rows (content untouched) and user rows, online and offline."""
    rng = np.random.default_rng(4)
    item = make_item(0, rng, uid)
    store.write_items([item])
    t1 = T0 + timedelta(minutes=1)
    blended = (item.item_vector * 2).astype(np.float32)
    state = dataclasses.replace(
        item, item_vector=blended, status="warming", impressions=3, clicks=2, updated_at=t1
    )
    user = StoredUser(f"ws-{uid}", np.ones(8, dtype=np.float32), 2, "warmup-x", t1)
    store.write_states([state], [user])
    got = store.get_items([item.item_id])[item.item_id]
    np.testing.assert_array_equal(got.item_vector, blended)
    np.testing.assert_array_equal(got.content_item_vector, item.item_vector)
    assert (got.status, got.impressions, got.clicks, got.updated_at) == ("warming", 3, 2, t1)
    assert store.users().get_users([user.user_id])[user.user_id].interactions == 2
    assert len(rows(store, "item_content", item.item_id)) == 1
    assert list(rows(store, "item_state", item.item_id)["status"]) == ["cold", "warming"]
    assert len(rows(store, "user_vector", user.user_id)) == 1
    store.write_states([state], [user])  # a re-applied batch: no second history row
    assert (
        len(rows(store, "item_state", item.item_id)) == 2
        and len(rows(store, "user_vector", user.user_id)) == 1
    )
    with pytest.raises(InvalidInputError):
        store.write_states([dataclasses.replace(state, item_id="")], [])


def test_users_round_trip_and_skip_stale(store: FeastFeatureStore, uid: str) -> None:
    users = store.users()
    v1 = np.arange(8, dtype=np.float32)
    users.write_users([StoredUser(f"u1-{uid}", v1, 3, "warmup-1", T0)])
    users.write_users([StoredUser(f"u1-{uid}", v1 * 0, 1, "warmup-0", T0 - timedelta(hours=1))])  # stale
    got = users.get_users([f"u1-{uid}", f"nobody-{uid}"])
    assert list(got) == [f"u1-{uid}"]
    np.testing.assert_array_equal(got[f"u1-{uid}"].vector, v1)
    assert (got[f"u1-{uid}"].interactions, got[f"u1-{uid}"].model_version, got[f"u1-{uid}"].updated_at) == (
        3,
        "warmup-1",
        T0,
    )
    assert len(rows(store, "user_vector", f"u1-{uid}")) == 1


def test_point_in_time_training_frame(store: FeastFeatureStore, uid: str) -> None:
    """A vector that changed at time t is returned as it was at t (before: old, at/after: new)."""
    rng = np.random.default_rng(3)
    item = make_item(7, rng, uid)
    store.write_items([item])
    t1 = T0 + timedelta(hours=1)
    v2 = (item.item_vector * -1).astype(np.float32)
    cur = store.get_items([item.item_id])[item.item_id]
    store.write_items(
        [dataclasses.replace(cur, item_vector=v2, status="warming", impressions=9, updated_at=t1)]
    )
    # re-encoding with a new encoder at t2 changes the content vector
    t2 = T0 + timedelta(hours=2)
    c3 = np.roll(item.content_vector, 1)
    store.write_items(
        [dataclasses.replace(cur, content_vector=c3, encoder_version="enc-2", updated_at=t2)], mode="content"
    )
    eps = timedelta(seconds=1)
    when = [T0 - eps, T0, t1 - eps, t1, t1 + eps, t2 - eps, t2 + eps]
    entity_df = pd.DataFrame({"item_id": [item.item_id] * len(when), "event_timestamp": when})
    df = store.historical_features(
        entity_df,
        [
            "item_state:item_vector",
            "item_state:impressions",
            "item_content:content_vector",
            "item_content:encoder_version",
        ],
    )
    # one row per entity row, in order, on both profiles
    assert len(df) == len(when)
    assert list(pd.to_datetime(df["event_timestamp"], utc=True)) == [pd.Timestamp(w) for w in when]
    rows = [df.iloc[n] for n in range(len(when))]
    # before the first write: the row is there, with nulls
    assert rows[0]["item_id"] == item.item_id
    assert not isinstance(rows[0]["item_vector"], list | np.ndarray) and pd.isna(rows[0]["encoder_version"])
    np.testing.assert_allclose(np.asarray(rows[1]["item_vector"], np.float32), item.item_vector)
    np.testing.assert_allclose(np.asarray(rows[2]["item_vector"], np.float32), item.item_vector)
    np.testing.assert_allclose(np.asarray(rows[3]["item_vector"], np.float32), v2)
    np.testing.assert_allclose(np.asarray(rows[4]["item_vector"], np.float32), v2)
    assert [int(r["impressions"]) for r in rows[1:5]] == [0, 0, 9, 9]
    np.testing.assert_allclose(np.asarray(rows[5]["content_vector"], np.float32), item.content_vector)
    np.testing.assert_allclose(np.asarray(rows[6]["content_vector"], np.float32), c3)
    assert [r["encoder_version"] for r in rows[4:7]] == ["enc-1", "enc-1", "enc-2"]


def test_naive_timestamps_and_empty_ids_are_rejected(store: FeastFeatureStore, uid: str) -> None:
    rng = np.random.default_rng(4)
    with pytest.raises(InvalidInputError, match="updated_at"):
        store.write_items([make_item(0, rng, uid, ts=datetime(2026, 1, 1))])
    with pytest.raises(InvalidInputError, match="item_id"):
        store.write_items([make_item(0, rng, uid, item_id="")])
    assert store.get_items([f"item-{uid}-0"]) == {}


def test_settings_select_the_profile(settings: Settings, store: FeastFeatureStore) -> None:
    online = type(store.feast.config.online_store).__name__
    offline = type(store.offline).__name__
    if settings.feast.type == "embedded":
        assert (online, offline) == ("SqliteOnlineStoreConfig", "ParquetOfflineLog")
    else:
        assert (online, offline) == ("RedisOnlineStoreConfig", "PostgresOfflineLog")
        assert store.feast.config.registry.registry_type == "sql"


def test_pool_rebuilds_from_the_store(store: FeastFeatureStore, uid: str) -> None:
    from exploration.pool import ItemPools

    rng = np.random.default_rng(5)
    items = [make_item(i, rng, uid) for i in range(6)]
    items[5] = dataclasses.replace(items[5], status="graduated")
    store.write_items(items)
    pools = ItemPools()
    pools.rebuild_from_store(store)
    mine = {i for i in pools.item.ids() if f"-{uid}-" in i}  # type: ignore[attr-defined]
    assert mine == {it.item_id for it in items[:5]}
    hit = pools.content.search(items[2].content_vector, 1)[0]
    assert hit.item_id == items[2].item_id and hit.score == pytest.approx(1.0, abs=1e-5)
    entry = pools.item.get(items[3].item_id)  # type: ignore[attr-defined]
    np.testing.assert_array_equal(entry.vector, items[3].item_vector)
    assert (entry.category, entry.seller_id, entry.attrs["status"]) == (
        items[3].category,
        items[3].seller_id,
        "cold",
    )


def test_sub_second_timestamps_survive_and_stay_idempotent(store: FeastFeatureStore, uid: str) -> None:
    rng = np.random.default_rng(6)
    ts = T0 + timedelta(microseconds=123_457)
    item = make_item(0, rng, uid, ts=ts)
    store.write_items([item])
    store.write_items([item])
    got = store.get_items([item.item_id])[item.item_id]
    assert got.updated_at == ts  # the online event timestamp keeps microseconds
    assert len(rows(store, "item_content", item.item_id)) == 1
    assert rows(store, "item_state", item.item_id)["event_ts"].iloc[0] == pd.Timestamp(ts)
    t1 = ts + timedelta(microseconds=10)  # a state change 10 µs later is newer, not a duplicate
    store.write_items([dataclasses.replace(got, impressions=1, updated_at=t1)], mode="state")
    assert store.get_items([item.item_id])[item.item_id].impressions == 1
    assert len(rows(store, "item_state", item.item_id)) == 2


def test_concurrent_readers_and_writers(store: FeastFeatureStore, uid: str) -> None:
    import threading

    rng = np.random.default_rng(7)
    items = [make_item(i, rng, uid) for i in range(40)]
    store.write_items(items[:20])
    errors: list[BaseException] = []

    def read() -> None:
        try:
            for _ in range(30):
                got = store.get_items([it.item_id for it in items[:20]])
                assert len(got) == 20
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    def write() -> None:
        try:
            for j in range(20, 40, 4):
                store.write_items(items[j : j + 4])
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=read) for _ in range(3)] + [threading.Thread(target=write)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert not errors, errors[0]
    assert len(store.get_items([it.item_id for it in items])) == 40


@pytest.mark.parametrize("profile", ["embedded", pytest.param("production", marks=pytest.mark.integration)])
def test_processes_opening_a_new_store_together(
    profile: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    """Workers of one group start at once: every open succeeds and the registry ends up complete."""
    from concurrent.futures import ThreadPoolExecutor

    from feature_repo import open_store
    from tests.feature_repo.conftest import drop_redis_project, embedded_settings, production_settings

    if profile == "embedded":
        settings = embedded_settings(tmp_path)
    else:
        settings = production_settings(tmp_path, request.getfixturevalue("pg_database_url"))
    with ThreadPoolExecutor(3) as ex:
        stores = list(ex.map(lambda _: open_store(settings), range(3)))
    try:
        names = sorted(v.name for v in stores[0].feast.list_feature_views(allow_cache=False))
        assert names == ["item_content", "item_state", "user_vector"]
        rng = np.random.default_rng(8)
        item = make_item(0, rng, "multi")
        stores[1].write_items([item])
        assert list(stores[2].get_items([item.item_id])) == [item.item_id]
    finally:
        for st in stores:
            st.close()
        if profile == "production":
            drop_redis_project(settings.feast.project)


def test_embedded_online_store_readers_do_not_block_its_writers(tmp_path: Path) -> None:
    """The SQLite online file is in WAL mode: an API replica in the middle of a read does not stop
    the learner's write (with the default rollback journal the write waits for the reader, then fails
    with ``database is locked``)."""
    import sqlite3

    from feature_repo import open_store
    from feature_repo.testing import random_items

    store = open_store(Settings(data_dir=tmp_path))
    items = random_items(4, prefix="wal")
    store.write_items(items[:2])
    db = next(tmp_path.rglob("online_store.db"))
    reader = sqlite3.connect(db)
    try:
        assert reader.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        reader.execute("BEGIN")
        assert reader.execute("SELECT count(*) FROM sqlite_master").fetchone()[0] > 0  # snapshot held
        store.write_items(items[2:])
        assert set(store.get_items([i.item_id for i in items])) == {i.item_id for i in items}
    finally:
        reader.close()
        store.close()
