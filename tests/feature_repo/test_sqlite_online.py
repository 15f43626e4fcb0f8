"""The batched SQLite online writer writes exactly the rows Feast's own SQLite store writes."""

from __future__ import annotations

import dataclasses
import sqlite3
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import SimpleNamespace
from typing import cast

import numpy as np
import pytest
from feast import RepoConfig

from coldstart.settings import get_settings
from feature_repo import open_store
from feature_repo.definitions import ITEM_CONTENT, ITEM_STATE, USER_VECTOR
from feature_repo.feast_store import FeastFeatureStore
from feature_repo.offline.base import content_row, state_row, user_row
from feature_repo.records import StoredUser
from feature_repo.sqlite_online import SqliteOnlineWriter
from feature_repo.testing import random_items

T0 = datetime(2026, 3, 1, 12, 0, 0, 250_000, tzinfo=UTC)
pytestmark = pytest.mark.filterwarnings("ignore::FutureWarning")


def _open(path: Path) -> FeastFeatureStore:
    store = open_store(get_settings(data_dir=path, feast={"type": "embedded"}))
    assert isinstance(store, FeastFeatureStore)
    return store


def _tables(store: FeastFeatureStore) -> dict[str, list[tuple[object, ...]]]:
    with sqlite3.connect(store.feast.config.online_store.path) as con:
        names = [r[0] for r in con.execute("SELECT name FROM sqlite_master WHERE type = 'table'")]
        return {
            n: con.execute(f'SELECT * FROM "{n}" ORDER BY entity_key, feature_name').fetchall() for n in names
        }


def _write(store: FeastFeatureStore, shift: timedelta) -> None:
    """Content, state and user rows (the second call changes every value and moves every time)."""
    items = random_items(30, seed=int(shift.total_seconds()), dim=8, content_dim=16, listed_at=T0)
    items = [
        dataclasses.replace(it, impressions=k, clicks=k // 2, status="warming", updated_at=T0 + shift)
        for k, it in enumerate(items)
    ]
    rng = np.random.default_rng(int(shift.total_seconds()))
    users = [
        StoredUser(f"u{k}", rng.standard_normal(8).astype(np.float32), k, "warmup-1", T0 + shift)
        for k in range(20)
    ]
    created = T0 + shift + timedelta(seconds=1)
    store._online_write(ITEM_CONTENT, "item_id", [content_row(i, created) for i in items])
    store._online_write(ITEM_STATE, "item_id", [state_row(i, created) for i in items[::2]])
    store._online_write(USER_VECTOR, "user_id", [user_row(u, created) for u in users])


def test_batched_writes_leave_the_same_online_tables_as_feasts_writes(tmp_path: Path) -> None:
    feast_side, batched = _open(tmp_path / "feast"), _open(tmp_path / "batched")
    assert batched._sqlite_writer is not None  # the embedded store takes the batched path
    feast_side._sqlite_writer = None  # Feast's own SqliteOnlineStore.online_write_batch
    try:
        for shift in (timedelta(0), timedelta(hours=1)):  # inserts, then upserts of every row
            _write(feast_side, shift)
            _write(batched, shift)
            expected, got = _tables(feast_side), _tables(batched)
            assert sum(len(rows) for rows in expected.values()) > 0
            assert got == expected
        # and Feast reads them back as it reads its own rows
        ids = [f"item-i{k}" for k in range(30)]
        a, b = feast_side.get_items(ids), batched.get_items(ids)
        assert a.keys() == b.keys() and len(a) == 30
        for k in ids:
            assert a[k].impressions == b[k].impressions and np.array_equal(a[k].item_vector, b[k].item_vector)
    finally:
        feast_side.close()
        batched.close()


def test_other_online_stores_keep_feasts_write(tmp_path: Path) -> None:
    store = _open(tmp_path)
    try:
        online = store._provider.online_store
        config = store.feast.config
        assert SqliteOnlineWriter.applies(online, config)
        assert not SqliteOnlineWriter.applies(object(), config)
        for flag in ("vector_enabled", "enable_openai_compatible_store"):  # rows of another layout
            other = SimpleNamespace(online_store=config.online_store.model_copy(update={flag: True}))
            assert not SqliteOnlineWriter.applies(online, cast(RepoConfig, other))
    finally:
        store.close()
