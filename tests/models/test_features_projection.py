"""Feature extraction (+ cache), projection-head training, the open_clip tokenizer, config validation."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from pydantic import TypeAdapter, ValidationError

from coldstart.errors import InvalidInputError
from models.config import EncoderConfig, OfflineEncoderConfig, OpenClipEncoderConfig
from models.feature_table import FeatureTable
from models.features import extract_features
from models.records import ItemContent
from models.testing import TINY_OFFLINE, make_image


def test_extract_features_rows_flags_and_cache(tmp_path: Path) -> None:
    items = [
        ItemContent("a", "a red shoe", make_image(1)),
        ItemContent("b", "", make_image(2)),
        ItemContent("c", "a hat", b"broken"),
        ItemContent("d", "a scarf", None),
    ]
    table = extract_features(items, TINY_OFFLINE, cache_dir=tmp_path, batch_size=3, progress=False)
    assert table.item_ids == ["a", "b", "c", "d"]
    assert table.image.shape == (4, 1280) and table.text.shape == (4, 32)
    assert table.image.dtype == np.float32 and table.text.dtype == np.float32
    assert table.image_ok.tolist() == [True, True, False, False]
    assert table.text_ok.tolist() == [True, False, True, True]
    assert not table.image[2:].any() and not table.text[1].any()
    assert len(list(tmp_path.glob("features-image-*.npz"))) == 1
    assert len(list(tmp_path.glob("features-text-*.npz"))) == 1
    assert len(list(tmp_path.glob("towers-*/image_tower.onnx"))) == 1  # exported frozen towers, reused
    again = extract_features(items, TINY_OFFLINE, cache_dir=tmp_path, progress=False)
    np.testing.assert_array_equal(again.image, table.image)
    np.testing.assert_array_equal(again.text, table.text)
    # a changed text only recomputes the text features (the title-only variant reuses the images)
    changed = extract_features(
        [*items[:3], ItemContent("d", "a wool scarf", None)], TINY_OFFLINE, cache_dir=tmp_path, progress=False
    )
    assert len(list(tmp_path.glob("features-image-*.npz"))) == 1
    assert len(list(tmp_path.glob("features-text-*.npz"))) == 2
    np.testing.assert_array_equal(changed.image, table.image)
    assert np.abs(changed.text[3] - table.text[3]).max() > 1e-4
    # rows stay aligned with their items (texts are batched by length internally)
    solo = extract_features([items[2]], TINY_OFFLINE, cache_dir=tmp_path, progress=False)
    np.testing.assert_allclose(solo.text[0], table.text[2], atol=1e-5)
    # the torch runtime gives the same features as the exported ONNX towers
    by_torch = extract_features(items, TINY_OFFLINE, runtime="torch", progress=False)
    np.testing.assert_allclose(by_torch.image, table.image, atol=1e-4)
    np.testing.assert_allclose(by_torch.text, table.text, atol=1e-4)
    sub = table.select(["d", "a"])
    assert sub.item_ids == ["d", "a"] and sub.text_ok.tolist() == [True, True]
    with pytest.raises(InvalidInputError, match="item_ids"):
        table.select(["zz"])
    with pytest.raises(InvalidInputError, match="unique"):
        extract_features([items[0], items[0]], TINY_OFFLINE, progress=False)


def test_feature_table_save_load(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    t = FeatureTable(
        ["x", "y"],
        rng.standard_normal((2, 5)).astype(np.float32),
        rng.standard_normal((2, 3)).astype(np.float32),
        np.array([True, False]),
        np.array([True, True]),
    )
    t.save(tmp_path / "f.npz")
    u = FeatureTable.load(tmp_path / "f.npz")
    assert u.item_ids == t.item_ids
    np.testing.assert_array_equal(u.image, t.image)
    np.testing.assert_array_equal(u.text_ok, t.text_ok)
    with pytest.raises(InvalidInputError, match="image"):
        FeatureTable(["x"], t.image, t.text[:1], t.image_ok[:1], t.text_ok[:1])


def test_projection_training_aligns_paired_modalities() -> None:
    import torch

    from models.projection import ProjectionTrainConfig, train_projection
    from models.towers import build_towers

    # Synthetic pairs: text features are a noisy linear view of a latent the image features also see.
    rng = np.random.default_rng(0)
    n, latent = 400, 8
    z = rng.standard_normal((n, latent)).astype(np.float32)
    image = z @ rng.standard_normal((latent, 1280)).astype(np.float32) + 5.0
    text = z @ rng.standard_normal((latent, 32)).astype(np.float32) + 0.1 * rng.standard_normal(
        (n, 32)
    ).astype(np.float32)
    table = FeatureTable([str(i) for i in range(n)], image, text, np.ones(n, bool), np.ones(n, bool))
    torch.manual_seed(0)
    towers = build_towers(TINY_OFFLINE, seed=0)
    before = towers.image.head.state_dict()["net.0.weight"].clone()
    result = train_projection(
        towers, table, ProjectionTrainConfig(epochs=30, batch_size=64, lr=3e-3), seed=0, progress=False
    )
    m = result.metrics
    assert m["projection/trained"] == 1.0
    assert m["projection/val/image_to_text_recall@10"] > 3 * m["projection/val/chance_recall@10"]
    assert m["projection/val/text_to_image_recall@1"] > 0.2
    assert result.history[-1]["loss"] < result.history[0]["loss"]
    assert 0.0 < m["projection/temperature"] < 1.0
    # modality dropout keeps single-modality vectors close to the fused one
    assert m["projection/val/image_only_to_full_cos"] > 0.8
    assert not torch.equal(before, towers.image.head.state_dict()["net.0.weight"])
    # the centring buffer is the training mean
    np.testing.assert_allclose(towers.image.head.center.numpy(), image.mean(axis=0), rtol=1e-4, atol=1e-3)


def test_projection_needs_pairs() -> None:
    from models.projection import train_projection
    from models.towers import build_towers

    towers = build_towers(TINY_OFFLINE, seed=0)
    table = FeatureTable(
        ["a", "b"],
        np.zeros((2, 1280), np.float32),
        np.zeros((2, 32), np.float32),
        np.ones(2, bool),
        np.ones(2, bool),
    )
    with pytest.raises(InvalidInputError, match="both"):
        train_projection(towers, table, progress=False)


def test_clip_tokenizer_matches_open_clip() -> None:
    from models.openclip import clip_bpe_tokenizer, import_open_clip

    open_clip = import_open_clip()
    ref = open_clip.SimpleTokenizer(context_length=32)
    tok, pad = clip_bpe_tokenizer()
    tok.enable_truncation(32)
    texts = [
        "A photo of a cat!",
        "Hello   WORLD, it's 2024's best... don't",
        "Toy Story (1995) Animation|Children's|Comedy",
        "word " * 100,
    ]
    expected = ref(texts).numpy()
    for text, row in zip(texts, expected, strict=True):
        ids = tok.encode(text).ids
        assert ids == row[: len(ids)].tolist()
        assert not row[len(ids) :].any() and pad == 0


def test_encoder_config_validation() -> None:
    adapter: TypeAdapter[EncoderConfig] = TypeAdapter(EncoderConfig)
    assert isinstance(adapter.validate_python({"type": "offline"}), OfflineEncoderConfig)
    oc = adapter.validate_python({"type": "open_clip", "model_name": "ViT-B-32", "pretrained": "/x/ckpt.pt"})
    assert isinstance(oc, OpenClipEncoderConfig)
    with pytest.raises(ValidationError, match="extra"):
        adapter.validate_python({"type": "offline", "bogus": 1})
    with pytest.raises(ValidationError, match="max_text_tokens"):
        OfflineEncoderConfig(max_text_tokens=1)
    with pytest.raises(ValidationError, match="image_size"):
        OfflineEncoderConfig(image_size=64)
    with pytest.raises(ValidationError):
        adapter.validate_python({"type": "nope"})


def test_open_clip_errors_are_config_errors() -> None:
    from coldstart.errors import ConfigError
    from models.towers import build_towers

    with pytest.raises(ConfigError, match="model_name"):
        build_towers(OpenClipEncoderConfig(model_name="no-such-model"))
    with pytest.raises(ConfigError, match="pretrained"):
        build_towers(
            OpenClipEncoderConfig(
                model_name="tiny",
                model_cfg={
                    "embed_dim": 8,
                    "vision_cfg": {
                        "image_size": 16,
                        "layers": 1,
                        "width": 16,
                        "patch_size": 8,
                        "head_width": 8,
                    },
                    "text_cfg": {
                        "context_length": 8,
                        "vocab_size": 49408,
                        "width": 8,
                        "heads": 1,
                        "layers": 1,
                    },
                },
                pretrained="/nonexistent/checkpoint.pt",
            )
        )


def test_open_clip_local_checkpoint_round_trip(tmp_path: Path) -> None:
    import torch

    from models.testing import TINY_OPEN_CLIP
    from models.torch_encoder import TorchItemEncoder
    from models.towers import build_towers

    torch.manual_seed(7)
    random_towers = build_towers(TINY_OPEN_CLIP)
    ckpt = tmp_path / "tiny_clip.pt"
    torch.save({"state_dict": random_towers.image.backbone.model.state_dict()}, ckpt)
    torch.manual_seed(8)  # a different random init, overwritten by the checkpoint
    loaded = build_towers(TINY_OPEN_CLIP.model_copy(update={"pretrained": str(ckpt)}))
    assert loaded.backbone_is_reproducible
    texts = ["a red shoe", "a blue hat"]
    a = TorchItemEncoder(random_towers).encode_text_query(texts)
    b = TorchItemEncoder(loaded).encode_text_query(texts)
    np.testing.assert_allclose(a, b, atol=1e-6)
