"""Item tower: shapes, modality masking/dropout, losses, and learning a planted signal."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
import torch
from pydantic import ValidationError

from coldstart.errors import InvalidInputError, ModalityError
from models.baselines import Features
from models.eval_protocol import ranking_metrics
from models.item_tower import ItemTower, ItemTowerConfig
from models.tower_losses import alignment_loss, rating_ranking_loss
from models.tower_training import _modality_dropout, train_item_tower

DI, DT = 24, 16


def _batch(b: int = 6, seed: int = 0) -> tuple[torch.Tensor, ...]:
    g = torch.Generator().manual_seed(seed)
    return (
        torch.randn(b, DI, generator=g),
        torch.randn(b, DT, generator=g),
        torch.ones(b),
        torch.ones(b),
    )


def test_forward_shape_and_buffers() -> None:
    tower = ItemTower(DI, DT, ItemTowerConfig(item_dim=32, fusion_dim=16, hidden=20)).eval()
    img, txt, iok, tok = _batch()
    out = tower(img, txt, iok, tok)
    assert out.shape == (6, 32) and out.dtype == torch.float32
    state = tower.state_dict()
    assert state["image_mean"].shape == (DI,) and state["text_mean"].shape == (DT,)
    tower.fit_centering(
        np.full((3, DI), 2.0, np.float32), np.ones((3, DT), np.float32), np.ones(3, bool), np.ones(3, bool)
    )
    assert torch.allclose(tower.image_mean, torch.full((DI,), 2.0))


@pytest.mark.parametrize("layers", [1, 2])
@pytest.mark.parametrize("fusion", ["gated_concat", "gated_sum", "residual"])
def test_absent_modality_is_ignored(layers: int, fusion: str) -> None:
    tower = ItemTower(DI, DT, ItemTowerConfig(layers=layers, fusion=fusion)).eval()  # type: ignore[arg-type]
    if fusion == "residual":  # make the (zero-initialised) image correction non-trivial
        torch.nn.init.normal_(tower.image_residual.weight, generator=torch.Generator().manual_seed(0))
    img, txt, _, _ = _batch()
    iok = torch.tensor([1.0, 0.0, 1.0, 0.0, 1.0, 1.0])
    tok = torch.tensor([1.0, 1.0, 0.0, 1.0, 1.0, 0.0])
    out = tower(img, txt, iok, tok)
    # Changing features of an absent modality does not change the vector.
    out2 = tower(img + 5.0 * (1 - iok).unsqueeze(1), txt - 3.0 * (1 - tok).unsqueeze(1), iok, tok)
    assert torch.allclose(out, out2, atol=1e-6)
    # Gates: zero for absent modalities, rows sum to 1.
    z_i, z_t, i_on, t_on = tower.modality_embeddings(img, txt, iok, tok)
    g = tower.gates(z_i, z_t, i_on, t_on)
    assert torch.allclose(g.sum(dim=1), torch.ones(6))
    assert torch.all(g[iok == 0, 0] == 0) and torch.all(g[tok == 0, 1] == 0)


def test_text_only_config_ignores_images() -> None:
    tower = ItemTower(DI, DT, ItemTowerConfig(modalities="text")).eval()
    img, txt, iok, tok = _batch()
    assert torch.allclose(tower(img, txt, iok, tok), tower(img * 0 + 9, txt, iok, tok))


def test_config_forbids_unknown_fields() -> None:
    with pytest.raises(ValidationError):
        ItemTowerConfig(item_dimension=3)  # type: ignore[call-arg]


def test_modality_dropout_never_drops_both() -> None:
    gen = torch.Generator().manual_seed(1)
    iok = torch.tensor([1.0] * 5000 + [0.0] * 1000)
    tok = torch.tensor([1.0] * 5000 + [1.0] * 1000)
    new_i, new_t = _modality_dropout(iok, tok, 0.4, gen)
    assert torch.all(new_i + new_t >= 1)  # every item keeps a modality
    assert torch.all(new_t[5000:] == 1)  # text-only items are never touched
    dropped = float(((new_i[:5000] == 0) | (new_t[:5000] == 0)).float().mean())
    assert 0.36 < dropped < 0.44
    assert 0.4 < float((new_i[:5000] == 0).float().sum() / ((new_t[:5000] == 0).float().sum())) < 2.5


def test_losses_on_hand_made_vectors() -> None:
    eye = torch.eye(3) * 10.0
    # Perfectly separated pairs: loss ~ 0; swapping the items makes it large.
    assert float(rating_ranking_loss(eye, eye)) < 1e-3
    assert float(rating_ranking_loss(eye, eye[[1, 2, 0]])) > 10.0
    # Two-sided: logits u.v = 0 everywhere -> 2 * log(B).
    zeros = torch.zeros(4, 3)
    assert math.isclose(float(rating_ranking_loss(zeros, zeros)), 2 * math.log(4), rel_tol=1e-6)
    # Alignment: identical modality vectors score better than shuffled ones.
    z = torch.randn(8, 5, generator=torch.Generator().manual_seed(0))
    assert float(alignment_loss(z, z, 0.1)) < float(alignment_loss(z, z[torch.randperm(8)], 0.1))


def _planted(seed: int = 0, n_items: int = 240, n_users: int = 60, clusters: int = 6):
    """Items belong to clusters visible (noisily) in both modalities; each user likes 1-2 clusters."""
    rng = np.random.default_rng(seed)
    cluster = rng.integers(0, clusters, n_items)
    img_centres = rng.normal(size=(clusters, DI)) * 2
    txt_centres = rng.normal(size=(clusters, DT)) * 2
    image = (img_centres[cluster] + rng.normal(size=(n_items, DI))).astype(np.float32) + 3.0
    text = (txt_centres[cluster] + rng.normal(size=(n_items, DT))).astype(np.float32) - 1.0
    ids = [f"i{k}" for k in range(n_items)]
    feats = Features(ids, image, text, np.ones(n_items, bool), np.ones(n_items, bool))
    likes = {
        f"u{u}": set(rng.choice(clusters, size=rng.integers(1, 3), replace=False)) for u in range(n_users)
    }
    rows = [
        (u, ids[k])
        for u, cs in likes.items()
        for k in range(n_items)
        if cluster[k] in cs and rng.random() < 0.5
    ]
    return feats, pd.DataFrame(rows, columns=["user_id", "item_id"]), likes, cluster


@pytest.mark.parametrize(
    ("negatives", "fusion"),
    [
        ("full", "gated_concat"),
        ("sampled", "gated_concat"),
        ("in_batch", "gated_concat"),
        ("sampled", "residual"),
    ],
)
def test_learns_planted_signal_on_cold_items(negatives: str, fusion: str) -> None:
    torch.set_num_threads(1)
    feats, pos, likes, cluster = _planted()
    train_rows = np.arange(160)
    cold_rows = np.arange(160, 240)
    train = feats.take(train_rows)
    train_pos = pos[pos["item_id"].isin(train.item_ids)]
    cfg = ItemTowerConfig(
        item_dim=16,
        fusion_dim=16,
        hidden=32,
        image_bottleneck=8,
        batch_size=64,
        max_epochs=15,
        lr=1e-2,
        negatives=negatives,  # type: ignore[arg-type]
        fusion=fusion,  # type: ignore[arg-type]
    )
    trained = train_item_tower(train, train_pos, cfg, seed=0)
    assert trained.user_embeddings.shape == (len(trained.user_ids), 16)
    assert trained.metrics["final_loss"] < trained.metrics["first_loss"] * 0.9

    cold = feats.take(cold_rows)
    users = trained.user_ids
    rel = np.array([[cluster[r] in likes[u] for r in cold_rows] for u in users])
    uvec = trained.user_embeddings
    full = ranking_metrics(uvec @ trained.encode(cold).T, rel)["ndcg@10"]
    rnd = ranking_metrics(np.random.default_rng(0).random(rel.shape), rel)["ndcg@10"]
    assert full > rnd + 0.25, (full, rnd)
    # Degraded items stay in the same space: text-only and image-only vectors still rank well.
    text_only = Features(cold.item_ids, cold.image, cold.text, np.zeros(80, bool), cold.text_ok)
    image_only = Features(cold.item_ids, cold.image, cold.text, cold.image_ok, np.zeros(80, bool))
    for degraded in (text_only, image_only):
        assert ranking_metrics(uvec @ trained.encode(degraded).T, rel)["ndcg@10"] > rnd + 0.2


def test_same_seed_same_model_and_validation_early_stop() -> None:
    feats, pos, _, _ = _planted(n_items=80, n_users=20)
    cfg = ItemTowerConfig(
        item_dim=8,
        fusion_dim=8,
        hidden=16,
        image_bottleneck=4,
        batch_size=32,
        max_epochs=6,
        patience=2,
        fusion="gated_concat",  # one training stage (the residual fusion's two are tested below)
    )
    a = train_item_tower(feats, pos, cfg, seed=3)
    b = train_item_tower(feats, pos, cfg, seed=3)
    assert np.array_equal(a.user_embeddings, b.user_embeddings)
    assert np.array_equal(a.encode(feats), b.encode(feats))
    c = train_item_tower(feats, pos, cfg, seed=4)
    assert not np.array_equal(a.user_embeddings, c.user_embeddings)
    scores = iter([0.5, 0.4, 0.3, 0.2, 0.1, 0.0])
    stopped = train_item_tower(feats, pos, cfg, seed=3, validate=lambda _m: next(scores))
    assert stopped.metrics["epochs"] == 3 and stopped.metrics["best_val_score"] == 0.5
    # The best (first) epoch's state is restored.
    first = train_item_tower(feats, pos, cfg.model_copy(update={"max_epochs": 1}), seed=3)
    assert np.allclose(stopped.user_embeddings, first.user_embeddings)


def test_bad_inputs() -> None:
    feats, pos, _, _ = _planted(n_items=20, n_users=5)
    with pytest.raises(InvalidInputError, match="no positive pair"):
        train_item_tower(feats, pos.assign(item_id="nope"), ItemTowerConfig(max_epochs=1))
    with pytest.raises(InvalidInputError, match="user_id"):
        train_item_tower(feats, pos.drop(columns=["user_id"]), ItemTowerConfig(max_epochs=1))
    no_image = Features(feats.item_ids, feats.image, feats.text, np.zeros(20, bool), feats.text_ok)
    with pytest.raises(ModalityError):
        train_item_tower(no_image, pos, ItemTowerConfig(modalities="image", max_epochs=1))


@pytest.mark.parametrize(
    "extra",
    [{}, {"fusion": "residual", "image_pca": 6, "image_bottleneck": 0}],
    ids=["gated_concat", "residual_pca"],
)
def test_onnx_export_parity(tmp_path, extra: dict[str, object]) -> None:
    ort = pytest.importorskip("onnxruntime")
    cfg = ItemTowerConfig(item_dim=8, fusion_dim=8, hidden=16, image_bottleneck=4).model_copy(update=extra)
    tower = ItemTower(DI, DT, cfg).eval()
    if cfg.fusion == "residual":
        torch.nn.init.normal_(tower.image_residual.weight, generator=torch.Generator().manual_seed(0))
    rng = np.random.default_rng(0)
    tower.fit_centering(
        rng.random((5, DI), dtype=np.float32),
        rng.random((5, DT), dtype=np.float32),
        np.ones(5, bool),
        np.ones(5, bool),
    )
    names = ["image_feat", "text_feat", "image_ok", "text_ok"]
    path = tmp_path / "item_tower.onnx"
    torch.onnx.export(
        tower,
        _batch(3),
        str(path),
        input_names=names,
        output_names=["item_vector"],
        dynamic_axes={n: {0: "batch"} for n in [*names, "item_vector"]},
        opset_version=17,
        dynamo=False,
    )
    img, txt, _, _ = _batch(5, seed=1)
    iok = torch.tensor([1.0, 0.0, 1.0, 1.0, 0.0])
    tok = torch.tensor([1.0, 1.0, 0.0, 1.0, 1.0])
    got = ort.InferenceSession(str(path)).run(
        None, {n: t.numpy() for n, t in zip(names, (img, txt, iok, tok), strict=True)}
    )[0]
    assert np.abs(got - tower(img, txt, iok, tok).detach().numpy()).max() <= 1e-4


def _residual_cfg(**kw: object) -> ItemTowerConfig:
    base = ItemTowerConfig(
        item_dim=8,
        fusion_dim=8,
        hidden=16,
        image_bottleneck=4,
        batch_size=32,
        max_epochs=4,
        fusion="residual",
    )
    return base.model_copy(update=kw)


def test_residual_stage_one_is_the_text_model_and_unhelpful_image_is_left_out() -> None:
    torch.set_num_threads(1)
    feats, pos, _, _ = _planted(n_items=80, n_users=20)
    text = train_item_tower(feats, pos, _residual_cfg(modalities="text"), seed=5)
    both = train_item_tower(feats, pos, _residual_cfg(), seed=5)
    # Stage 1 of image+text trains exactly the text-only model (users and text path frozen afterwards).
    assert np.array_equal(text.user_embeddings, both.user_embeddings)
    for name, value in text.module.state_dict().items():
        if name.startswith(("text_proj", "mlp")):
            assert torch.equal(value, both.module.state_dict()[name]), name
    # Without validation stage 2 runs: the image changes the vectors of items that have both modalities.
    assert not np.allclose(text.encode(feats), both.encode(feats))
    # A validation score that never improves rejects stage 2: the image correction stays zero and the
    # vectors of items with text are the text model's.
    rejected = train_item_tower(feats, pos, _residual_cfg(), seed=5, validate=lambda _m: 0.0)
    text_v = train_item_tower(feats, pos, _residual_cfg(modalities="text"), seed=5, validate=lambda _m: 0.0)
    assert float(rejected.module.image_residual.weight.detach().abs().max()) == 0.0
    assert np.allclose(rejected.encode(feats), text_v.encode(feats), atol=1e-6)
    stages = [int(h["stage"]) for h in rejected.history]
    assert stages[0] == 1 and stages[-1] == 2


def test_image_pca_basis_is_orthogonal_and_scaled() -> None:
    feats, _, _, _ = _planted(n_items=60, n_users=5)
    tower = ItemTower(DI, DT, ItemTowerConfig(image_pca=5, image_bottleneck=0))
    tower.fit_centering(feats.image, feats.text, feats.image_ok, feats.text_ok)
    basis = tower.image_basis
    gram = basis.T @ basis
    assert torch.allclose(gram / gram[0, 0], torch.eye(5), atol=1e-4)
    x = tower._normalise(torch.from_numpy(feats.image), tower.image_mean, torch.ones(60), DI)
    assert math.isclose(float(((x @ basis) ** 2).sum(dim=1).mean()), 5.0, rel_tol=1e-3)
    with pytest.raises(InvalidInputError, match="image_pca"):
        ItemTower(DI, DT, ItemTowerConfig(image_pca=DI + 1))


def test_short_text_augmentation_needs_every_item() -> None:
    feats, pos, _, _ = _planted(n_items=40, n_users=10)
    short = Features(
        feats.item_ids[:-1], feats.image[:-1], feats.text[:-1] * 0.5, feats.image_ok[:-1], feats.text_ok[:-1]
    )
    with pytest.raises(InvalidInputError, match="short_text"):
        train_item_tower(feats, pos, _residual_cfg(short_text_rate=0.5), short_text=short)
    full_short = Features(feats.item_ids, feats.image, feats.text * 0.5, feats.image_ok, feats.text_ok)
    plain = train_item_tower(feats, pos, _residual_cfg(short_text_rate=0.5), seed=1)
    augmented = train_item_tower(
        feats, pos, _residual_cfg(short_text_rate=0.5), seed=1, short_text=full_short
    )
    # stage 1 is untouched (the text model never sees the short text) ...
    assert np.array_equal(plain.user_embeddings, augmented.user_embeddings)
    # ... stage 2 trains the image path on it
    assert not torch.equal(plain.module.image_residual.weight, augmented.module.image_residual.weight)
