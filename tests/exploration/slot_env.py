"""Shared helpers of the slot-service and API tests: a real embedded feature store with items/users."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np

from coldstart.settings import Settings, get_settings
from feature_repo.records import StoredItem, StoredUser

ITEM_DIM = 16
CONTENT_DIM = 32


def settings_for(tmp_path: Path, **overrides: object) -> Settings:
    """Embedded-profile settings rooted in ``tmp_path`` (no Kafka unless asked)."""
    base: dict[str, object] = {
        "data_dir": tmp_path,
        "feast": {"profile": "embedded"},
        "api": {"api_keys": ["test-key"], "kafka": False},
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
    rng = np.random.default_rng(seed)
    listed = datetime.now(UTC) - timedelta(hours=age_h)
    out = []
    for i in range(n):
        cv = rng.normal(size=CONTENT_DIM).astype(np.float32)
        out.append(
            StoredItem(
                item_id=f"item-{i:05d}",
                content_vector=cv / np.linalg.norm(cv),
                item_vector=rng.normal(size=ITEM_DIM).astype(np.float32),
                image_ok=True,
                text_ok=True,
                encoder_version="test",
                listed_at=listed,
                updated_at=listed,
                category=categories[i % len(categories)],
                seller_id=f"seller-{i % sellers}",
            )
        )
    return out


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
