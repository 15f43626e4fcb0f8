"""Shared fixtures of the models tests: tiny torch towers and their exported artifacts, per encoder kind."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

SHARED = Path(__file__).resolve().parents[2] / ".." / "shared" / "data" / "movielens"
POSTERS = SHARED / "ml1m_posters"


@pytest.fixture(scope="session", autouse=True)
def _one_torch_thread() -> None:
    """Tiny models run fastest single-threaded (and CI machines are shared)."""
    import torch

    torch.set_num_threads(1)


@dataclass
class TinyEncoderBundle:
    """Torch towers + item tower and the artifact exported from exactly them."""

    kind: str
    towers: Any
    item_tower: Any
    artifact: Path


@pytest.fixture(scope="session", params=["offline", "open_clip"])
def tiny_bundle(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> TinyEncoderBundle:
    import torch

    from models.export import build_artifact
    from models.testing import TINY_CONFIGS, tiny_item_tower
    from models.towers import build_towers

    kind = request.param
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        towers = build_towers(TINY_CONFIGS[kind], seed=0)
    item_tower = tiny_item_tower(towers.image_dim, towers.text_dim, seed=0)
    root = tmp_path_factory.mktemp(f"artifacts-{kind}")
    path = build_artifact(towers, item_tower, root, seed=0)
    return TinyEncoderBundle(kind, towers, item_tower, path)


def poster_bytes(n: int) -> list[bytes]:
    """Up to ``n`` real MovieLens posters (empty when the shared data is absent)."""
    if not POSTERS.is_dir():
        return []
    files = sorted(POSTERS.glob("*.jpg"))[:n]
    return [f.read_bytes() for f in files]
