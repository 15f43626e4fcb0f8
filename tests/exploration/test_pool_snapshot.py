"""Pool snapshots: what a replica loads is what was saved (same hits, graphs read, not rebuilt), a
broken or foreign snapshot is refused, and the API starts from one and reads only the newer items."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient

from api.main import create_app
from coldstart.settings import Settings
from exploration.pool import ExactPool, HnswPool, PoolFilter
from exploration.pool.base import CandidatePool
from exploration.pool.hnsw import _Part
from exploration.pool.snapshot import PoolRows, read_snapshot, snapshot_dir, write_snapshot
from feature_repo import open_store
from feature_repo.feast_store import FeastFeatureStore
from feature_repo.records import StoredItem
from feature_repo.testing import random_items
from tests.api.conftest import seeded_settings
from tests.exploration.slot_env import make_items

DIM = 16


def _items(n: int, seed: int = 0, prefix: str = "s") -> list:  # type: ignore[type-arg]
    return random_items(n, seed=seed, prefix=prefix, dim=DIM, content_dim=8, categories=3, sellers=40)


def _pools(rows: PoolRows) -> dict[str, CandidatePool]:
    out: dict[str, CandidatePool] = {"item": HnswPool(graph_min=300), "content": ExactPool()}
    for space, pool in out.items():
        pool.load(Path("/nonexistent"), rows.entries(space), rows.vectors[space])  # type: ignore[arg-type]
    return out


def test_a_loaded_snapshot_answers_like_the_saved_pools(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    items = _items(1500)
    items[3] = dataclasses.replace(items[3], status="graduated")  # not a cold item: not in the snapshot
    rows = PoolRows.from_items(items, ("item", "content"))
    saved = _pools(rows)
    hnsw = saved["item"]
    assert isinstance(hnsw, HnswPool) and hnsw._all.graph is not None  # graphs to save
    assert len(rows) == 1499 and items[3].item_id not in rows.item_ids
    assert items[3].item_id in rows.known_ids and len(rows.known_ids) == 1500
    write_snapshot(tmp_path / "snap", rows, saved)

    def no_build(self: _Part) -> None:
        raise AssertionError("a graph was rebuilt instead of read")

    fresh: dict[str, CandidatePool] = {"item": HnswPool(graph_min=300), "content": ExactPool()}
    with monkeypatch.context() as m:
        m.setattr(_Part, "_build", no_build)
        snap = read_snapshot(tmp_path / "snap", fresh)
    assert snap is not None and len(snap.entries["item"]) == 1499
    assert snap.rows.counts()[rows.item_ids[0]] == (items[0].impressions, items[0].clicks)
    rng = np.random.default_rng(1)
    for space, filt in (("item", None), ("item", PoolFilter(categories=("c1",))), ("content", None)):
        dim = rows.vectors[space].shape[1]
        for q in rng.standard_normal((5, dim)).astype(np.float32):
            want = saved[space].search_ids(q, 20, filt)
            got = fresh[space].search_ids(q, 20, filt)
            assert got[0] == want[0]
            np.testing.assert_allclose(got[1], want[1])
    # the loaded graph takes streamed upserts and removals
    new = dataclasses.replace(snap.entries["item"][0], item_id="late", vector=np.ones(DIM, dtype=np.float32))
    fresh["item"].upsert([new])
    assert fresh["item"].search_ids(np.ones(DIM, dtype=np.float32), 1)[0] == ["late"]
    fresh["item"].remove(["late"])
    assert "late" not in fresh["item"].search_ids(np.ones(DIM, dtype=np.float32), 5)[0]


def test_graphs_saved_with_another_storage_are_rebuilt_with_the_configured_one(tmp_path: Path) -> None:
    rows = PoolRows.from_items(_items(900), ("item", "content"))
    saved: dict[str, CandidatePool] = {
        "item": HnswPool(graph_min=300, storage="flat"),
        "content": ExactPool(),
    }
    for space, pool in saved.items():
        pool.load(Path("/nonexistent"), rows.entries(space), rows.vectors[space])  # type: ignore[arg-type]
    write_snapshot(tmp_path / "snap", rows, saved)
    fresh: dict[str, CandidatePool] = {"item": HnswPool(graph_min=300, storage="sq8"), "content": ExactPool()}
    assert read_snapshot(tmp_path / "snap", fresh) is not None
    loaded = fresh["item"]
    assert isinstance(loaded, HnswPool) and loaded._all.graph is not None
    assert loaded._all.graph.storage == "sq8"
    q = rows.vectors["item"][7] * 3
    assert loaded.search_ids(q, 10)[0][:3] == saved["item"].search_ids(q, 10)[0][:3]


def test_missing_foreign_or_broken_snapshots_are_not_used(tmp_path: Path) -> None:
    assert read_snapshot(tmp_path / "none", {"item": ExactPool()}) is None
    rows = PoolRows.from_items(_items(50), ("item",))
    write_snapshot(tmp_path / "snap", rows, {"item": ExactPool()})
    assert read_snapshot(tmp_path / "snap", {"content": ExactPool()}) is None  # a space it lacks
    meta = json.loads((tmp_path / "snap" / "snapshot.json").read_text())
    (tmp_path / "snap" / "snapshot.json").write_text(json.dumps({**meta, "version": 99}))
    assert read_snapshot(tmp_path / "snap", {"item": ExactPool()}) is None
    write_snapshot(tmp_path / "snap", rows, {"item": ExactPool()})  # replaced as a whole
    (tmp_path / "snap" / "rows.npz").write_bytes(b"not a zip")
    pool = ExactPool()
    assert read_snapshot(tmp_path / "snap", {"item": pool}) is None and len(pool) == 0


def test_the_api_starts_from_the_snapshot_and_reads_only_newer_items(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings: Settings = seeded_settings(tmp_path, n_items=40)
    store = open_store(settings)
    first = next(iter(store.iter_items()))
    # an item that graduated before the snapshot: known to it, not in the pool
    store.write_items([dataclasses.replace(first, item_id="graduated-before", status="graduated")])
    rows = PoolRows.from_items(list(store.iter_items()), ("item", "content"))  # search index: on by default
    assert "graduated-before" in rows.known_ids and "graduated-before" not in rows.item_ids
    # the snapshot's vector of one item differs from the store's: the replica serves the snapshot's
    marked = rows.item_ids.index("item-00001")
    rows.vectors["item"][marked] = 0.5
    write_snapshot(snapshot_dir(settings), rows, {"item": ExactPool(), "content": ExactPool()})
    later = dataclasses.replace(make_items(41, seed=9)[40], item_id="listed-later")
    store.write_items([later])
    store.close()
    asked: list[str] = []
    read = FeastFeatureStore.get_items

    def spy(self: FeastFeatureStore, item_ids: Sequence[str]) -> dict[str, StoredItem]:
        asked.extend(item_ids)
        return read(self, item_ids)

    monkeypatch.setattr(FeastFeatureStore, "get_items", spy)
    with TestClient(create_app(settings)) as client:
        state = client.app.state.coldstart  # type: ignore[attr-defined]
        assert len(state.service) == 41
        assert asked == ["listed-later"]  # neither the snapshot's items nor the graduated one
        assert np.allclose(state.service.entry("item-00001").vector, 0.5)  # from the snapshot
        assert state.service.entry("listed-later") is not None  # the incremental sync after it
        ready = client.get("/readyz").json()
        assert ready["pool_size"] == 41
        # the next full sync brings the store's state
        state.sync_pool("full")
        assert not np.allclose(state.service.entry("item-00001").vector, 0.5)


def test_the_cli_writes_the_stores_cold_pool(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from typer.testing import CliRunner

    from cli.main import app

    settings = seeded_settings(tmp_path, n_items=30)
    monkeypatch.setenv("COLDSTART_DATA_DIR", str(tmp_path))
    monkeypatch.setenv("COLDSTART_EXPLORATION__POOL", json.dumps({"type": "hnsw", "graph_min": 10}))
    read_at: list[datetime] = []
    iter_items = FeastFeatureStore.iter_items

    def timed_read(self: FeastFeatureStore) -> Iterator[StoredItem]:
        read_at.append(datetime.now(UTC))
        return iter_items(self)

    monkeypatch.setattr(FeastFeatureStore, "iter_items", timed_read)
    result = CliRunner().invoke(app, ["exploration", "pool-snapshot"])
    assert result.exit_code == 0, result.output
    out = json.loads(result.output.strip().splitlines()[-1])
    assert out["items"] == 30 and Path(out["path"]) == snapshot_dir(settings)
    pool = HnswPool(graph_min=10)
    snap = read_snapshot(snapshot_dir(settings), {"item": pool, "content": ExactPool()})
    assert snap is not None and len(pool) == 30 and pool._all.graph is not None
    # stamped when its read began: a replica's changed-items sync starts there (rows written while the
    # snapshot read and indexed the store are after the stamp)
    assert len(read_at) == 1 and snap.taken_at <= read_at[0]
