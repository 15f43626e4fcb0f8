"""Encoder conformance suite: every encoder kind, on a tiny random configuration, must pass these.

Shapes, unit norm, ONNX <-> torch parity (<= 1e-4 on normalised embeddings), determinism, the
degradation paths (broken image, missing image, empty text, both missing) and the artifact round-trip.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from coldstart.errors import ArtifactError, InvalidInputError, ModalityError, NotFoundError
from models.records import ItemContent, ItemEmbedding
from models.testing import make_image
from tests.models.conftest import TinyEncoderBundle, poster_bytes

ATOL = 1e-4


def _items() -> list[ItemContent]:
    posters = poster_bytes(2)
    imgs = [*posters, make_image(1), make_image(2, size=(300, 120), fmt="JPEG"), make_image(3, fmt="WEBP")]
    texts = [
        "Toy Story (1995) Animation|Children's|Comedy. A cowboy doll is threatened by a new spaceman figure.",
        "Jumanji",
        "red leather boots, size 42, barely worn",
        "un vestido azul — très élégant — 青いドレス",
        "x " * 400,  # longer than every token cap
    ]
    return [ItemContent(f"i{k}", texts[k % len(texts)], img) for k, img in enumerate(imgs)]


def _onnx(bundle: TinyEncoderBundle, batch_size: int = 32):
    from models.serving import OnnxItemEncoder

    return OnnxItemEncoder(bundle.artifact, providers=["CPUExecutionProvider"], batch_size=batch_size)


def _torch(bundle: TinyEncoderBundle):
    from models.torch_encoder import TorchItemEncoder

    return TorchItemEncoder(bundle.towers, bundle.item_tower, version="torch")


def test_shapes_dtypes_and_version(tiny_bundle: TinyEncoderBundle) -> None:
    enc = _onnx(tiny_bundle)
    manifest = json.loads((tiny_bundle.artifact / "manifest.json").read_text())
    items = _items()
    out = enc.encode(items)
    assert [e.item_id for e in out] == [it.item_id for it in items]
    assert enc.version == manifest["version"] == tiny_bundle.artifact.name
    assert enc.shared_dim == manifest["shared_dim"] and enc.item_dim == manifest["item_dim"] == 16
    for e in out:
        assert isinstance(e, ItemEmbedding)
        assert e.content_vector.shape == (enc.shared_dim,) and e.content_vector.dtype == np.float32
        assert e.item_vector.shape == (enc.item_dim,) and e.item_vector.dtype == np.float32
        assert e.image_ok and e.text_ok
        assert e.encoder_version == enc.version
    assert enc.encode_text_query(["boots", "a film"]).shape == (2, enc.shared_dim)
    assert enc.encode_image_query([make_image(5)]).shape == (1, enc.shared_dim)
    assert enc.encode([]) == []
    assert enc.encode_text_query([]).shape == (0, enc.shared_dim)


def test_unit_norm(tiny_bundle: TinyEncoderBundle) -> None:
    enc = _onnx(tiny_bundle)
    out = enc.encode(_items())
    norms = np.array([np.linalg.norm(e.content_vector) for e in out])
    np.testing.assert_allclose(norms, 1.0, atol=1e-5)
    np.testing.assert_allclose(np.linalg.norm(enc.encode_text_query(["a", "b c d"]), axis=1), 1.0, atol=1e-5)
    np.testing.assert_allclose(
        np.linalg.norm(enc.encode_image_query([make_image(7), make_image(8)]), axis=1), 1.0, atol=1e-5
    )


def test_onnx_torch_parity(tiny_bundle: TinyEncoderBundle) -> None:
    onnx_enc, torch_enc = _onnx(tiny_bundle), _torch(tiny_bundle)
    items = [*_items(), ItemContent("t", "only text", None), ItemContent("m", "", make_image(9))]
    a, b = onnx_enc.encode(items), torch_enc.encode(items)
    for x, y in zip(a, b, strict=True):
        assert (x.image_ok, x.text_ok) == (y.image_ok, y.text_ok)
        assert np.abs(x.content_vector - y.content_vector).max() <= ATOL
        assert np.abs(x.item_vector - y.item_vector).max() <= ATOL
    texts = ["hello", "a much longer description of a vintage camera with a leather strap"]
    assert np.abs(onnx_enc.encode_text_query(texts) - torch_enc.encode_text_query(texts)).max() <= ATOL
    imgs = [make_image(11), *poster_bytes(1)]
    assert np.abs(onnx_enc.encode_image_query(imgs) - torch_enc.encode_image_query(imgs)).max() <= ATOL
    manifest = json.loads((tiny_bundle.artifact / "manifest.json").read_text())
    assert all(v <= ATOL for k, v in manifest["metrics"].items() if k.startswith("parity/"))


def test_determinism_and_batch_invariance(tiny_bundle: TinyEncoderBundle) -> None:
    items = _items()
    first = _onnx(tiny_bundle).encode(items)
    again = _onnx(tiny_bundle).encode(items)
    one_by_one = _onnx(tiny_bundle, batch_size=1).encode(items)
    for x, y, z in zip(first, again, one_by_one, strict=True):
        np.testing.assert_array_equal(x.content_vector, y.content_vector)
        np.testing.assert_array_equal(x.item_vector, y.item_vector)
        np.testing.assert_allclose(x.content_vector, z.content_vector, atol=1e-5)
        np.testing.assert_allclose(x.item_vector, z.item_vector, atol=1e-5)
    # different items get different vectors (the encoder is not constant)
    assert np.abs(first[0].content_vector - first[1].content_vector).max() > 1e-3


def test_same_seed_same_artifact_vectors(tmp_path: Path) -> None:
    import torch

    from models.serving import OnnxItemEncoder
    from models.testing import TINY_OFFLINE, build_tiny_artifact, tiny_item_tower
    from models.torch_encoder import TorchItemEncoder
    from models.towers import build_towers

    a = build_tiny_artifact(tmp_path / "a", seed=3)
    b = build_tiny_artifact(tmp_path / "b", seed=3)
    items = _items()[:3]
    va, vb = (OnnxItemEncoder(p).encode(items) for p in (a, b))
    torch.manual_seed(4)
    towers = build_towers(TINY_OFFLINE, seed=4)
    vc = TorchItemEncoder(towers, tiny_item_tower(towers.image_dim, towers.text_dim, seed=4)).encode(items)
    for x, y in zip(va, vb, strict=True):
        np.testing.assert_allclose(x.content_vector, y.content_vector, atol=1e-6)
        np.testing.assert_allclose(x.item_vector, y.item_vector, atol=1e-6)
    assert np.abs(va[0].content_vector - vc[0].content_vector).max() > 1e-3


def test_degradation_paths(tiny_bundle: TinyEncoderBundle) -> None:
    enc = _onnx(tiny_bundle)
    img, text = make_image(21), "a green wool scarf"
    full, broken, missing, no_text, spaces, truncated = enc.encode(
        [
            ItemContent("full", text, img),
            ItemContent("broken", text, b"\x89PNG\r\n\x1a\n not really a png"),
            ItemContent("missing", text, None),
            ItemContent("no_text", "", img),
            ItemContent("spaces", " \n\t ", img),
            ItemContent("truncated", text, img[: len(img) // 3]),
        ]
    )
    assert (full.image_ok, full.text_ok) == (True, True)
    for e in (broken, missing, truncated):
        assert (e.image_ok, e.text_ok) == (False, True)
        np.testing.assert_allclose(e.content_vector, enc.encode_text_query([text])[0], atol=1e-6)
    np.testing.assert_allclose(broken.item_vector, missing.item_vector, atol=1e-6)
    for e in (no_text, spaces):
        assert (e.image_ok, e.text_ok) == (True, False)
        np.testing.assert_allclose(e.content_vector, enc.encode_image_query([img])[0], atol=1e-6)
    # the fused vector sits between its single-modality vectors
    assert float(full.content_vector @ missing.content_vector) > 0
    assert float(full.content_vector @ no_text.content_vector) > 0
    for e in (broken, no_text):
        assert np.linalg.norm(e.item_vector) > 0


def test_both_missing_is_rejected_naming_the_field(tiny_bundle: TinyEncoderBundle) -> None:
    enc = _onnx(tiny_bundle)
    good = ItemContent("ok", "fine text", None)
    for bad in (ItemContent("nothing", "", None), ItemContent("junk", "   ", b"not an image")):
        with pytest.raises(ModalityError) as info:
            enc.encode([good, bad])
        assert info.value.param == "items[1].image,text"
        assert info.value.value == bad.item_id
        assert "image" in str(info.value) and "text" in str(info.value)
    lenient = enc.encode_lenient([good, ItemContent("nothing", "", None), good])
    assert isinstance(lenient[0], ItemEmbedding) and isinstance(lenient[2], ItemEmbedding)
    assert isinstance(lenient[1], ModalityError)
    np.testing.assert_allclose(lenient[0].content_vector, lenient[2].content_vector)
    with pytest.raises(InvalidInputError, match=r"texts\[1\]"):
        enc.encode_text_query(["ok", "  "])
    with pytest.raises(InvalidInputError, match=r"images\[0\]"):
        enc.encode_image_query([b"nope"])


def test_artifact_round_trip(tiny_bundle: TinyEncoderBundle, tmp_path: Path) -> None:
    from models.artifact import read_manifest, resolve_artifact
    from models.serving import load_encoder

    items = _items()[:3]
    ref = _onnx(tiny_bundle).encode(items)
    copy = tmp_path / "root" / tiny_bundle.artifact.name
    shutil.copytree(tiny_bundle.artifact, copy)
    # a root of versioned artifacts resolves to its newest; a manifest-less dir is ignored
    (tmp_path / "root" / "junk").mkdir()
    assert resolve_artifact(tmp_path / "root", tmp_path) == copy
    enc = load_encoder(tmp_path / "root", providers=["CPUExecutionProvider"])
    assert enc.version == tiny_bundle.artifact.name
    for x, y in zip(ref, enc.encode(items), strict=True):
        np.testing.assert_array_equal(x.content_vector, y.content_vector)
        np.testing.assert_array_equal(x.item_vector, y.item_vector)
        assert y.encoder_version == enc.version
    manifest = read_manifest(copy, verify=True)
    assert manifest.kind == tiny_bundle.kind
    assert set(manifest.files) >= {"image_tower.onnx", "text_tower.onnx", "item_tower.onnx", "tokenizer.json"}
    assert manifest.version.endswith(manifest.content_hash[:10])
    # tampering is detected
    with (copy / "tokenizer.json").open("a") as fh:
        fh.write(" ")
    with pytest.raises(ArtifactError, match=r"tokenizer\.json"):
        load_encoder(copy)
    with pytest.raises(NotFoundError):
        load_encoder(tmp_path / "nowhere")


def test_reexport_from_checkpoint_gives_same_vectors(tiny_bundle: TinyEncoderBundle, tmp_path: Path) -> None:
    from models.export import CHECKPOINT, build_artifact, load_checkpoint
    from models.serving import OnnxItemEncoder

    towers, item_tower, seed = load_checkpoint(tiny_bundle.artifact / CHECKPOINT)
    path = build_artifact(towers, item_tower, tmp_path, seed=seed)
    items = _items()[:3]
    for x, y in zip(_onnx(tiny_bundle).encode(items), OnnxItemEncoder(path).encode(items), strict=True):
        np.testing.assert_allclose(x.content_vector, y.content_vector, atol=1e-6)
        np.testing.assert_allclose(x.item_vector, y.item_vector, atol=1e-6)


def test_token_cap_is_a_knob(tiny_bundle: TinyEncoderBundle) -> None:
    enc = _onnx(tiny_bundle)
    long_text = "word " * 300
    ids, _ = enc.spec.tokenizer([long_text])
    assert np.count_nonzero(ids[0]) <= enc.spec.tokenizer.max_tokens
    enc.with_max_tokens(8)
    ids, mask = enc.spec.tokenizer([long_text, "a"])
    assert int(mask.sum(axis=1).max()) == 8
    assert enc.encode_text_query([long_text]).shape == (1, enc.shared_dim)
    with pytest.raises(InvalidInputError, match="max_tokens"):
        enc.with_max_tokens(100_000)


def test_serving_imports_no_torch(tiny_bundle: TinyEncoderBundle) -> None:
    code = (
        "import sys\n"
        "from pathlib import Path\n"
        "from models import load_encoder, ItemContent\n"
        f"enc = load_encoder(Path({str(tiny_bundle.artifact)!r}))\n"
        "e = enc.encode([ItemContent('a', 'text', None)])[0]\n"
        "assert e.text_ok and not e.image_ok\n"
        "bad = [m for m in ('torch', 'torchvision', 'open_clip', 'transformers') if m in sys.modules]\n"
        "assert not bad, bad\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]


def test_providers_fall_back_to_cpu() -> None:
    import onnxruntime as ort

    from models.serving import available_providers

    chosen = available_providers(["CUDAExecutionProvider", "CPUExecutionProvider"])
    assert chosen[-1] == "CPUExecutionProvider"
    assert ("CUDAExecutionProvider" in chosen) == ("CUDAExecutionProvider" in ort.get_available_providers())
    assert available_providers(["NoSuchProvider"]) == ["CPUExecutionProvider"]
