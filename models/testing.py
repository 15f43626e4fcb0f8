"""Test helpers other areas use: tiny random encoder artifacts and synthetic images.

The tiny artifacts exercise the real code paths (same tower classes, same ONNX export, same serving)
with random weights, in a few seconds, for mechanics tests only; never for quality.
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any, Literal

import numpy as np
from PIL import Image

from models.config import OfflineEncoderConfig, OpenClipEncoderConfig
from models.representation import Representation
from models.warmup.served import ServedWarmup

TINY_OFFLINE = OfflineEncoderConfig(
    architecture="tiny", image_size=64, shared_dim=32, projection_hidden=0, max_text_tokens=64
)
TINY_OPEN_CLIP = OpenClipEncoderConfig(
    model_name="tiny-vit",
    model_cfg={
        "embed_dim": 32,
        "vision_cfg": {"image_size": 32, "layers": 2, "width": 64, "patch_size": 8, "head_width": 32},
        "text_cfg": {"context_length": 32, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 2},
    },
)
TINY_CONFIGS: dict[str, OfflineEncoderConfig | OpenClipEncoderConfig] = {
    "offline": TINY_OFFLINE,
    "open_clip": TINY_OPEN_CLIP,
}
TINY_ITEM_DIM = 16


def tiny_item_tower(image_dim: int, text_dim: int, seed: int = 0) -> Any:
    """A small randomly initialised :class:`models.item_tower.ItemTower` (item_dim 16)."""
    # deferred import: torch
    import torch

    from models.item_tower import ItemTower, ItemTowerConfig

    cfg = ItemTowerConfig(item_dim=TINY_ITEM_DIM, fusion_dim=16, image_bottleneck=8, hidden=32, layers=2)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return ItemTower(image_dim, text_dim, cfg).eval()


def build_tiny_artifact(
    out_dir: Path,
    seed: int = 0,
    kind: Literal["offline", "open_clip"] = "offline",
    warmup: ServedWarmup | None = None,
    representation: Representation | None = None,
) -> Path:
    """Build a tiny random encoder artifact under ``out_dir`` in a few seconds.

    Parameters
    ----------
    out_dir
        Root of versioned artifacts (created); the artifact is ``out_dir/<version>``.
    seed
        Seeds every random weight: same seed, same vectors.
    kind
        ``offline``: the default encoder's classes shrunk (EfficientNet-Lite 64 px, 2-layer BERT,
        image_dim 1280, text_dim 32, shared_dim 32). ``open_clip``: a 2-layer ViT/text CLIP
        (shared_dim 32). Both have a random item tower with ``item_dim`` 16.
    warmup, representation
        A calibrated warm-up and served blocks to ship with it (as ``coldstart models train`` does).

    Returns
    -------
    Path
        The artifact directory (pass it, or ``out_dir``, to :func:`models.load_encoder`).
    """
    # deferred import: torch
    import torch

    from models.export import build_artifact
    from models.towers import ProjectionHead, build_towers

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        towers = build_towers(TINY_CONFIGS[kind], seed=seed)
        head = towers.image.head
        if isinstance(head, ProjectionHead):
            rng = torch.Generator().manual_seed(seed)
            head.set_center(torch.randn(towers.image_dim, generator=rng) * 0.01)
    item_tower = tiny_item_tower(towers.image_dim, towers.text_dim, seed)
    return build_artifact(
        towers,
        item_tower,
        Path(out_dir),
        seed=seed,
        notes="tiny random artifact for tests (no quality)",
        warmup=warmup,
        representation=representation,
    )


def make_image(seed: int = 0, size: tuple[int, int] = (48, 64), fmt: str = "PNG") -> bytes:
    """Encoded bytes of a deterministic random RGB image (``size`` = width, height)."""
    rng = np.random.default_rng(seed)
    arr = rng.integers(0, 256, size=(size[1], size[0], 3), dtype=np.uint8)
    buf = io.BytesIO()
    Image.fromarray(arr, "RGB").save(buf, format=fmt)
    return buf.getvalue()
