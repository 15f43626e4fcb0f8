"""The warm-up evaluation protocol on a small synthetic catalog with a planted behavioural signal."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from models.baselines import Features
from models.catalog import Catalog
from models.item_tower import ItemTowerConfig
from models.warmup.evaluate import _observed_masks, evaluate_warmup
from models.warmup.report import write_results


def _synthetic_catalog(root: Path, seed: int = 0) -> tuple[Catalog, Features]:
    """120 items in 6 taste clusters; content features see the cluster only through heavy noise."""
    rng = np.random.default_rng(seed)
    n_items, n_users, n_clusters = 400, 150, 6
    cluster = rng.integers(0, n_clusters, size=n_items)
    likes = [set(rng.choice(n_clusters, size=2, replace=False).tolist()) for _ in range(n_users)]
    items = pd.DataFrame(
        {
            "item_id": [f"i{i}" for i in range(n_items)],
            "title": [f"item {i}" for i in range(n_items)],
            "text": [f"text {i}" for i in range(n_items)],
            "category": ["c"] * n_items,
            "image_path": [""] * n_items,
        }
    )
    rows = []
    for u in range(n_users):
        for i in rng.choice(n_items, size=40, replace=False):
            value = 5.0 if cluster[i] in likes[u] else 1.0
            rows.append((f"u{u}", f"i{i}", value, int(1_000_000 + rng.integers(0, 10_000_000))))
    root.mkdir(parents=True, exist_ok=True)
    items.to_csv(root / "items.csv", index=False)
    pd.DataFrame(rows, columns=["user_id", "item_id", "value", "ts"]).to_csv(
        root / "interactions.csv", index=False
    )
    onehot = np.eye(n_clusters, dtype=np.float32)[cluster]
    text = np.concatenate(
        [onehot + rng.normal(scale=1.5, size=onehot.shape), rng.normal(size=(n_items, 10))], 1
    )
    feats = Features(
        [f"i{i}" for i in range(n_items)],
        rng.normal(size=(n_items, 8)).astype(np.float32),
        text.astype(np.float32),
        np.ones(n_items, dtype=bool),
        np.ones(n_items, dtype=bool),
    )
    return Catalog.load(root), feats


def test_observed_window_is_up_to_the_kth_positive() -> None:
    ev = pd.DataFrame(
        {
            "item_id": ["a"] * 5,
            "user_id": list("vwxyz"),
            "ts": pd.to_datetime([1, 2, 3, 4, 5], unit="s", utc=True),
            "positive": [False, True, False, True, True],
        }
    )
    assert _observed_masks(ev, 0).tolist() == [False] * 5
    assert _observed_masks(ev, 1).tolist() == [True, True, False, False, False]
    assert _observed_masks(ev, 2).tolist() == [True, True, True, True, False]


@pytest.mark.timeout(240)
def test_blended_uses_behaviour_and_keeps_content_at_k0(tmp_path: Path) -> None:
    catalog, feats = _synthetic_catalog(tmp_path / "cat")
    config = ItemTowerConfig(
        item_dim=16, fusion_dim=16, hidden=32, image_bottleneck=4, max_epochs=15, batch_size=64
    )
    result = evaluate_warmup(catalog, seeds=1, ks=(0, 5), tower_config=config, features=feats, progress=False)
    rows = result["rows"]
    assert isinstance(rows, dict)
    assert rows["blended"]["k=0"] == rows["content_only"]["k=0"]
    # with 5 observed positives per item the planted cluster structure is visible to behaviour
    assert rows["blended"]["k=5"]["ndcg@10"] > rows["content_only"]["k=5"]["ndcg@10"]
    assert rows["behavior_only"]["k=5"]["ndcg@10"] > rows["behavior_only"]["k=0"]["ndcg@10"]
    # the choice was made on validation only, and behaviour is gated where it did not beat content
    (params,) = result["params"]  # type: ignore[misc]
    gate = params["min_positives"]
    for key, v in params["validation"].items():
        if int(key[2:]) >= gate > 0:
            assert v["blended_ndcg@10"] >= v["content_ndcg@10"]
    counts = result["counts"]
    assert isinstance(counts, dict) and counts["k=0"]["items"] >= 30 and counts["k=0"]["reported"]
    assert not counts["k=5"]["reported"]  # 23 qualifying items: too thin to report
    json_path, md_path = write_results(result, tmp_path / "out", stem="warmup_x")
    text = md_path.read_text()
    assert json_path.name == "warmup_x.json" and "blended" in text and "n/a" in text
