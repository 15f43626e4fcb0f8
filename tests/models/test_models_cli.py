"""`coldstart models train / export / info` end to end on a tiny catalog in the generic layout."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from models.testing import make_image


def _write_catalog(root: Path, n_items: int = 24, n_users: int = 10) -> None:
    (root / "images").mkdir(parents=True)
    words = ["red", "blue", "green", "boots", "hat", "scarf", "coat", "lamp", "chair", "mug"]
    with (root / "items.csv").open("w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["item_id", "title", "text", "category", "image_path"])
        for i in range(n_items):
            img = f"images/{i}.png"
            (root / img).write_bytes(make_image(i))
            if i == 3:
                (root / img).write_bytes(b"corrupt")  # degrades to text-only, must not break training
            title = f"{words[i % 10]} {words[(i * 3) % 10]}"
            w.writerow([f"it{i}", title, f"{title} described at length, number {i}", words[i % 3], img])
    rng = np.random.default_rng(0)
    with (root / "interactions.csv").open("w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["user_id", "item_id", "value", "ts"])
        for u in range(n_users):
            for i in rng.choice(n_items, size=6, replace=False):
                w.writerow([f"u{u}", f"it{i}", int(rng.integers(1, 6)), 1_600_000_000 + int(i)])


@pytest.mark.timeout(600)
def test_train_export_info_round_trip(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from models.cli import app
    from models.serving import load_encoder

    catalog = tmp_path / "catalog"
    _write_catalog(catalog)
    monkeypatch.setenv("COLDSTART_MODELS__FEATURE_CACHE_DIR", str(tmp_path / "cache"))
    runner = CliRunner()
    out = tmp_path / "artifacts"
    res = runner.invoke(
        app,
        [
            "train",
            "--catalog",
            str(catalog),
            "--out",
            str(out),
            "--tiny",
            "--epochs",
            "3",
            "--tower-epochs",
            "2",
            "--item-dim",
            "8",
            "--positive-threshold",
            "3",
            "--threads",
            "1",
        ],
    )
    assert res.exit_code == 0, res.output + repr(res.exception)
    report = json.loads(res.output[res.output.index("{") :])
    path = Path(report["artifact"])
    manifest = json.loads((path / "manifest.json").read_text())
    # the served vector is the blocks chosen on cold-validation; the tower block keeps --item-dim
    card = manifest["representation"]
    assert card["shipped"] in ("lexical", "content", "tower", "hybrid") and card["validation"]
    assert manifest["kind"] == "offline" and manifest["item_dim"] == sum(b["dim"] for b in card["blocks"])
    assert card["tower_dim"] == 8 and all(b["weight"] > 0 for b in card["blocks"])
    item_dim = manifest["item_dim"]
    # the learner's warm-up, calibrated on the same catalog (κ "inf" = content only is a valid choice)
    assert manifest["warmup"]["type"] == "posterior" and (path / "warmup.npz").is_file()
    assert manifest["warmup"]["min_positives"] >= 0
    assert manifest["training_data"]["n_items"] == 24 and len(manifest["training_data"]["fingerprint"]) == 64
    assert manifest["metrics"]["projection/trained"] == 1.0
    assert (path / "users.npz").is_file()

    enc = load_encoder(out)
    assert enc.version == path.name
    from models.records import ItemContent

    vec = enc.encode([ItemContent("new", "green boots", make_image(99))])[0]
    assert vec.item_vector.shape == (item_dim,) and vec.encoder_version == path.name
    from models.artifact import load_users

    assert load_users(path)[1].shape[1] == item_dim

    # re-export the checkpoint: a new version with identical vectors
    res = runner.invoke(app, ["export", "--artifact", str(path)])
    assert res.exit_code == 0, res.output + repr(res.exception)
    new_path = Path(json.loads(res.output)["artifact"])
    assert new_path != path and new_path.parent == out
    again = load_encoder(new_path).encode([ItemContent("new", "green boots", make_image(99))])[0]
    np.testing.assert_allclose(again.content_vector, vec.content_vector, atol=1e-6)
    np.testing.assert_allclose(again.item_vector, vec.item_vector, atol=1e-6)
    again_manifest = json.loads((new_path / "manifest.json").read_text())
    assert again_manifest["representation"] == card and again_manifest["warmup"] == manifest["warmup"]

    assert load_users(new_path)[0] == load_users(path)[0]

    res = runner.invoke(app, ["info", "--artifact", str(new_path)])
    assert res.exit_code == 0 and json.loads(res.output)["version"] == new_path.name
