"""The HTTP API against the real app: auth, validation, slots, items, health, metrics, search."""

from __future__ import annotations

import base64
import json
import subprocess
import sys
import time
from datetime import timedelta
from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient

from api.main import create_app
from tests.api.conftest import KEY, seeded_settings


def test_health_needs_no_key_everything_else_does(client: TestClient) -> None:
    assert client.get("/healthz").json() == {"status": "ok"}
    ready = client.get("/readyz")
    assert ready.status_code == 200 and ready.json()["ready"] and ready.json()["pool_size"] == 40
    assert ready.json()["checks"]["kafka"] is False
    for method, path in [
        ("post", "/v1/exploration/slots"),
        ("get", "/v1/items/item-00001"),
        ("post", "/v1/items"),
        ("post", "/v1/interactions"),
        ("get", "/v1/search?text=x"),
        ("get", "/metrics"),
    ]:
        r = client.request(method, path, json={})
        assert r.status_code == 401, (path, r.status_code)
        assert r.json()["error"] == "unauthorized"
    r = client.post("/v1/exploration/slots", json={"user_id": "u", "k": 1}, headers={"X-API-Key": "wrong"})
    assert r.status_code == 401


def test_slots(client: TestClient) -> None:
    body = {
        "user_id": "user-0",
        "k": 5,
        "context": {"device": "mobile", "hour": 21, "logged_in": True},
        "exclude_item_ids": ["item-00000", "item-00001"],
        "filters": {"category": ["shoes"]},
    }
    r = client.post("/v1/exploration/slots", json=body, headers=KEY)
    assert r.status_code == 200, r.text
    out = r.json()
    assert set(out) == {"decision_id", "model_version", "slots"}
    assert out["model_version"] == "v000000"
    slots = out["slots"]
    assert [s["position"] for s in slots] == list(range(5))
    ids = [s["item_id"] for s in slots]
    assert len(set(ids)) == 5 and not {"item-00000", "item-00001"} & set(ids)
    assert all(int(i[-5:]) % 2 == 0 for i in ids)  # category "shoes" = even ids in the fixture
    assert all(0 < s["propensity"] <= 1 for s in slots)
    # an unknown user still gets slots (context only)
    r = client.post("/v1/exploration/slots", json={"user_id": "stranger", "k": 3}, headers=KEY)
    assert r.status_code == 200 and len(r.json()["slots"]) == 3


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"user_id": "u", "k": 0}, "body.k"),
        ({"user_id": "u", "k": 51}, "body.k"),
        ({"user_id": "u", "k": "many"}, "body.k"),
        ({"k": 3}, "body.user_id"),
        ({"user_id": "", "k": 3}, "body.user_id"),
        ({"user_id": "u", "k": 3, "context": {"nested": {"a": 1}}}, "body.context.nested"),
        ({"user_id": "u", "k": 3, "filters": {"colour": ["red"]}}, "body.filters.colour"),
        ({"user_id": "u", "k": 3, "surprise": 1}, "body.surprise"),
    ],
)
def test_slot_validation_errors_name_the_field(client: TestClient, body: dict, param: str) -> None:
    r = client.post("/v1/exploration/slots", json=body, headers=KEY)
    assert r.status_code == 422, r.text
    err = r.json()
    assert err["error"] == "invalid_input"
    assert err["param"].startswith(param), err
    assert param in err["message"]


def test_get_item(client: TestClient) -> None:
    r = client.get("/v1/items/item-00003", headers=KEY)
    assert r.status_code == 200
    item = r.json()
    assert item["status"] == "cold" and item["in_cold_pool"] is True
    assert len(item["content_vector"]) == 32 and len(item["item_vector"]) == 16
    assert item["image_ok"] and item["text_ok"]
    r = client.get("/v1/items/item-00003?vectors=false", headers=KEY)
    assert r.json()["content_vector"] is None
    r = client.get("/v1/items/nope", headers=KEY)
    assert r.status_code == 404 and r.json()["error"] == "not_found"


def test_publishing_without_a_broker_is_503_and_bad_events_422(client: TestClient) -> None:
    item = {"item_id": "new-1", "title": "Red kettle", "seller_id": "s1"}
    r = client.post("/v1/items", json=item, headers=KEY)
    assert r.status_code == 503 and r.json()["error"] == "unavailable"
    r = client.post("/v1/items", json={**item, "image": {"url": "ftp://x"}}, headers=KEY)
    assert r.status_code == 422 and r.json()["param"].startswith("body.image")
    r = client.post("/v1/interactions", json={"user_id": "u", "item_id": "i", "kind": "rating"}, headers=KEY)
    assert r.status_code == 422 and "rating" in r.json()["message"]
    r = client.post("/v1/interactions", json={"user_id": "u", "item_id": "i", "kind": "like"}, headers=KEY)
    assert r.status_code == 422 and r.json()["param"] == "body.kind"


def test_metrics(client: TestClient) -> None:
    for _ in range(3):
        client.post("/v1/exploration/slots", json={"user_id": "user-1", "k": 4}, headers=KEY)
    text = client.get("/metrics", headers=KEY).text
    labels = 'method="POST",route="/v1/exploration/slots",status="200"'
    assert f"coldstart_http_request_duration_seconds_count{{{labels}}} 3.0" in text
    assert "coldstart_exploration_share " in text
    assert "coldstart_pool_size 40.0" in text
    assert 'coldstart_model_version_info{version="v000000"} 1.0' in text
    served = sum(
        float(line.split()[-1])
        for line in text.splitlines()
        if line.startswith("coldstart_exploration_slots_total{")
    )
    assert served == 12


def test_openapi_documents_the_endpoints(client: TestClient) -> None:
    spec = client.get("/openapi.json").json()
    for path in [
        "/v1/exploration/slots",
        "/v1/items",
        "/v1/items/{item_id}",
        "/v1/interactions",
        "/v1/search",
    ]:
        assert path in spec["paths"]
    assert "X-API-Key" in str(spec["components"]["securitySchemes"])


def test_search_by_text_and_image(tmp_path: Path, tiny_artifact: Path) -> None:
    """Items encoded by the (tiny) encoder are found by their own text and image."""
    import models
    from models.records import ItemContent
    from models.testing import make_image

    enc = models.load_encoder(tiny_artifact, providers=["CPUExecutionProvider"])
    settings = seeded_settings(tmp_path, n_items=0, models={"artifact": str(tiny_artifact)})
    contents = [
        ItemContent(f"enc-{i}", f"item number {i} {'boots' if i % 2 else 'kettle'}") for i in range(6)
    ]
    contents.append(ItemContent("enc-img", "", make_image(7)))
    embs = enc.encode(contents)
    from feature_repo import open_store
    from tests.exploration.slot_env import make_items

    base = make_items(len(embs))
    import dataclasses

    rows = [
        dataclasses.replace(
            b,
            item_id=e.item_id,
            content_vector=e.content_vector,
            item_vector=e.item_vector,
            encoder_version=e.encoder_version,
        )
        for b, e in zip(base, embs, strict=True)
    ]
    store = open_store(settings)
    store.write_items(rows)
    store.close()
    with TestClient(create_app(settings)) as c:
        r = c.get("/v1/search", params={"text": "item number 3 boots", "k": 3}, headers=KEY)
        assert r.status_code == 200, r.text
        hits = r.json()["hits"]
        assert hits[0]["item_id"] == "enc-3" and hits[0]["score"] == pytest.approx(1.0, abs=1e-3)
        img = base64.b64encode(make_image(7)).decode()
        r = c.post("/v1/search/image", json={"image_base64": img, "k": 2}, headers=KEY)
        assert r.status_code == 200, r.text
        assert r.json()["hits"][0]["item_id"] == "enc-img"
        assert r.json()["hits"][0]["score"] == pytest.approx(1.0, abs=1e-3)
        r = c.get("/v1/search", params={"text": "a", "image_url": "http://127.0.0.1:1/x.png"}, headers=KEY)
        assert r.status_code == 422 and r.json()["param"] == "query.text"
        r = c.post("/v1/search/image", json={"image_base64": "%%%"}, headers=KEY)
        assert r.status_code == 422 and r.json()["param"] == "body.image_base64"
    assert np.isfinite(embs[0].content_vector).all()


def test_pool_follows_the_store_and_graduation_updates_it(tmp_path: Path) -> None:
    """New stored items join the pool on the cheap incremental sync; graduated ones leave it and get
    ``status="graduated"`` in the store."""
    import dataclasses

    from tests.exploration.slot_env import make_items

    settings = seeded_settings(
        tmp_path, n_items=10, exploration={"pacing": {"graduate_impressions": 3, "graduate_clicks": 0}}
    )
    with TestClient(create_app(settings)) as c:
        state = c.app.state.coldstart  # type: ignore[attr-defined]
        assert len(state.service) == 10
        extra = [dataclasses.replace(it, item_id=f"late-{n}") for n, it in enumerate(make_items(3, seed=5))]
        state.store.write_items(extra)
        state.sync_pool("new")  # the maintenance loop may have synced them first: either adds them
        assert len(state.service) == 13 and state.search_pool is not None and len(state.search_pool) == 13
        assert state.sync_pool("new") == (0, 0)
        for _ in range(10):
            assert (
                c.post("/v1/exploration/slots", json={"user_id": "user-0", "k": 5}, headers=KEY).status_code
                == 200
            )
        events = state.service.graduate()
        assert events
        gone = {e.item_id for e in events}
        stored = state.store.get_items(sorted(gone))
        assert {i.status for i in stored.values()} == {"graduated"}
        assert all(stored[e.item_id].impressions >= 3 for e in events)
        r = c.get(f"/v1/items/{sorted(gone)[0]}", headers=KEY).json()
        assert r["status"] == "graduated" and r["in_cold_pool"] is False
        state.sync_pool("full")
        assert not gone & {h.item_id for h in state.search_pool.search(np.ones(32, np.float32), 50)}
        assert len(state.service) == 13 - len(gone)
        metrics = c.get("/metrics", headers=KEY).text
        assert 'coldstart_graduations_total{reason="evidence"}' in metrics


def test_the_maintenance_loop_refreshes_the_pacing_strength_before_any_request(tmp_path: Path) -> None:
    """The adaptive strength is a pass over every open item: the replica's maintenance loop computes it
    off the request path, so a request reads it instead of computing it (none is made here)."""
    with TestClient(create_app(seeded_settings(tmp_path, n_items=10))) as c:
        pacer = c.app.state.coldstart.service.pacer  # type: ignore[attr-defined]
        deadline = time.monotonic() + 20.0
        while pacer._strength_cache is None and time.monotonic() < deadline:
            time.sleep(0.05)
        assert pacer._strength_cache is not None


def _no_scan(*_: object) -> list[str]:
    raise AssertionError("a periodic sync scanned every listed id")


def test_the_changed_sync_reads_only_the_items_written_since_the_last_one(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A state the replica missed the announcement of (here: none is sent) reaches its pool at the
    next changed sync, which reads that item and nothing else."""
    import dataclasses
    from collections.abc import Sequence

    from feature_repo.feast_store import FeastFeatureStore
    from feature_repo.offline.parquet import ParquetOfflineLog
    from feature_repo.records import StoredItem

    settings = seeded_settings(tmp_path, n_items=10, exploration={"pool_sync_overlap_s": 0.0})
    asked: list[str] = []
    read = FeastFeatureStore.get_items

    def spy(self: FeastFeatureStore, item_ids: Sequence[str]) -> dict[str, StoredItem]:
        asked.extend(item_ids)
        return read(self, item_ids)

    with TestClient(create_app(settings)) as c:
        state = c.app.state.coldstart  # type: ignore[attr-defined]
        assert len(state.service) == 10
        monkeypatch.setattr(FeastFeatureStore, "get_items", spy)
        assert state.sync_pool("changed") == (0, 0) and asked == []  # nothing written since start-up
        item = read(state.store, ["item-00003"])["item-00003"]
        moved = np.full_like(item.item_vector, 0.25)
        later = item.updated_at + timedelta(seconds=1)
        state.store.write_items(
            [dataclasses.replace(item, item_vector=moved, updated_at=later)], mode="state"
        )
        assert not np.allclose(state.service.entry("item-00003").vector, moved)
        assert state.sync_pool("changed") == (1, 0)
        assert asked == ["item-00003"]
        assert np.allclose(state.service.entry("item-00003").vector, moved)
        gone = read(state.store, ["item-00005"])["item-00005"]
        state.store.write_items(
            [dataclasses.replace(gone, status="graduated", updated_at=later)], mode="state"
        )
        asked.clear()
        assert state.sync_pool("changed") == (0, 1) and asked == ["item-00005"]
        assert state.service.entry("item-00005") is None
        # the frequent sync reads only the items listed since the previous one, without scanning every
        # listed id (at a million items that scan costs ~20 ms of GIL each time)
        monkeypatch.setattr(ParquetOfflineLog, "distinct_ids", _no_scan)
        asked.clear()
        assert state.sync_pool("new") == (0, 0) and asked == []
        state.store.write_items([dataclasses.replace(item, item_id="listed-now", updated_at=later)])
        state.sync_pool("new")  # the maintenance loop may have synced it first: either adds it
        assert set(asked) == {"listed-now"} and state.service.entry("listed-now") is not None


def _blas_threads() -> dict[str, int]:
    from threadpoolctl import threadpool_info

    return {
        str(p["filepath"]): int(p["num_threads"]) for p in threadpool_info() if p.get("user_api") == "blas"
    }


def test_blas_is_single_threaded_while_serving_and_restored_after(tmp_path: Path) -> None:
    before = _blas_threads()
    app = create_app(seeded_settings(tmp_path))
    with TestClient(app) as c:
        # read in the app's own thread: an OpenMP build of OpenBLAS (FAISS bundles one) keeps its
        # thread count per thread, and the lifespan set it in the thread that serves
        assert c.portal is not None
        assert set(c.portal.call(_blas_threads).values()) == {1}
        r = c.post("/v1/exploration/slots", json={"user_id": "user-0", "k": 3}, headers=KEY)
        assert r.status_code == 200, r.text
        assert len(r.json()["slots"]) == 3
        assert app.state.coldstart.service.pool._gemv  # the pool scored with BLAS gemv
    after = _blas_threads()
    assert {path: after[path] for path in before} == before  # the limits found at start-up are restored


_FRESH_PROCESS_APP = """
import json, sys
from fastapi.testclient import TestClient
from threadpoolctl import threadpool_info
from api.main import create_app
from coldstart.settings import get_settings
settings = get_settings(data_dir=sys.argv[1], feast={"type": "embedded"},
                        api={"api_keys": ["test-key"], "connect_kafka": False})
app = create_app(settings)
with TestClient(app) as c:
    r = c.post("/v1/exploration/slots", json={"user_id": "user-0", "k": 3}, headers={"X-API-Key": "test-key"})
    print(json.dumps({
        "status": r.status_code,
        "gemv": app.state.coldstart.service.pool._gemv,
        "blas_threads": [p["num_threads"] for p in threadpool_info() if p.get("user_api") == "blas"],
    }))
"""


def test_a_fresh_serving_process_scores_with_gemv(tmp_path: Path) -> None:
    """In a new process the store (Feast, scipy's own OpenBLAS) loads while the lifespan builds the
    state, after the first limit: every BLAS library must still end up on one thread, and the pool
    must score with gemv (in this test process those libraries were already loaded)."""
    settings = seeded_settings(tmp_path)
    out = subprocess.run(
        [sys.executable, "-c", _FRESH_PROCESS_APP, str(settings.data_dir)],
        capture_output=True,
        text=True,
        timeout=240,
        check=False,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    got = json.loads(out.stdout.strip().splitlines()[-1])
    assert got["status"] == 200
    assert len(got["blas_threads"]) >= 1 and set(got["blas_threads"]) == {1}, got
    assert got["gemv"] is True, got
