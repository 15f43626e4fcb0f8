"""Shared helpers of the slot-service and API tests: a real embedded feature store with items/users."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np

from coldstart.settings import Settings, get_settings
from feature_repo.records import StoredItem, StoredUser
from feature_repo.testing import random_items

ITEM_DIM = 16
CONTENT_DIM = 32


def settings_for(tmp_path: Path, **overrides: object) -> Settings:
    """Embedded-profile settings rooted in ``tmp_path`` (no Kafka unless asked)."""
    base: dict[str, object] = {
        "data_dir": tmp_path,
        "feast": {"type": "embedded"},
        "api": {"api_keys": ["test-key"], "connect_kafka": False},
    }
    base.update(overrides)
    return get_settings(**base)


def make_items(
    n: int,
    *,
    seed: int = 0,
    sellers: int = 4,
    categories: tuple[str, ...] = ("shoes", "bags"),
    age_h: float = 1.0,
) -> list[StoredItem]:
    """``n`` cold items ``item-00000``... listed ``age_h`` hours ago, categories and sellers cycled."""
    return random_items(
        n,
        seed=seed,
        ids=lambda k: f"item-{k:05d}",
        dim=ITEM_DIM,
        content_dim=CONTENT_DIM,
        listed_at=datetime.now(UTC) - timedelta(hours=age_h),
        categories=categories,
        sellers=sellers,
        encoder_version="test",
    )


def make_users(n: int, *, seed: int = 1) -> list[StoredUser]:
    rng = np.random.default_rng(seed)
    now = datetime.now(UTC)
    return [
        StoredUser(
            user_id=f"user-{u}",
            vector=rng.normal(size=ITEM_DIM).astype(np.float32),
            interactions=10,
            model_version="test",
            updated_at=now,
        )
        for u in range(n)
    ]
