"""Feature-store latency on the serving path, for the embedded and the production store.

Prints one JSON object: per store, p50/p99 (ms) of one ``get_online_features`` for one user
(``users().get_users([u])``), of ``get_items`` for 1 and 100 items, and of ``write_items`` for a
32-item batch (offline + online). The production store runs against the configured Redis and
PostgreSQL (``COLDSTART_FEAST__REDIS_URL`` / ``__POSTGRES_URL``) in a throw-away project and schema,
dropped afterwards.

    .venv/bin/python benchmarks/feature_store.py [--stores embedded,production] [--reads 300]
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np

from coldstart.settings import get_settings
from feature_repo import open_store
from feature_repo.config import ProductionStoreConfig
from feature_repo.offline.postgres import PostgresOfflineLog
from feature_repo.records import StoredItem, StoredUser


def _ms(xs: list[float]) -> dict[str, float]:
    a = np.asarray(xs) * 1e3
    return {"p50_ms": round(float(np.percentile(a, 50)), 3), "p99_ms": round(float(np.percentile(a, 99)), 3)}


def run(store_type: str, reads: int, tmp: Path) -> dict[str, Any]:

    tag = uuid.uuid4().hex[:8]
    feast: dict[str, Any] = {"type": store_type, "project": f"bench_{tag}"}
    if store_type == "production":
        # the production defaults, or the COLDSTART_FEAST__* URLs when the environment names them
        urls = get_settings(feast={"type": "production"}).feast
        assert isinstance(urls, ProductionStoreConfig)
        sep = "&" if "?" in urls.postgres_url else "?"
        feast["pg_schema"] = f"bench_{tag}"
        feast["registry_url"] = f"{urls.postgres_url}{sep}options=-csearch_path%3Dbench_{tag}"
    settings = get_settings(data_dir=tmp / store_type, feast=feast)
    t0 = time.perf_counter()
    store = open_store(settings)
    open_s = time.perf_counter() - t0
    rng = np.random.default_rng(0)
    now = datetime(2026, 1, 1, tzinfo=UTC)
    try:
        users = [
            StoredUser(f"u{i}", rng.standard_normal(64).astype(np.float32), 1, "m", now) for i in range(100)
        ]
        store.users().write_users(users)
        writes = []
        for b in range(20):
            batch = [
                StoredItem(
                    item_id=f"i{b}-{j}",
                    content_vector=rng.standard_normal(512).astype(np.float32),
                    item_vector=rng.standard_normal(64).astype(np.float32),
                    image_ok=True,
                    text_ok=True,
                    encoder_version="e",
                    listed_at=now,
                    updated_at=now + timedelta(seconds=b),
                    category="c",
                )
                for j in range(32)
            ]
            t = time.perf_counter()
            store.write_items(batch)
            writes.append(time.perf_counter() - t)
        one_user, one_item, hundred = [], [], []
        ids = [f"i{b}-{j}" for b in range(20) for j in range(32)]
        for r in range(reads):
            t = time.perf_counter()
            got = store.users().get_users([f"u{r % 100}"])
            one_user.append(time.perf_counter() - t)
            assert len(got) == 1
            t = time.perf_counter()
            store.get_items([ids[r % len(ids)]])
            one_item.append(time.perf_counter() - t)
            if r % 3 == 0:
                t = time.perf_counter()
                store.get_items(ids[(r % 6) * 100 : (r % 6) * 100 + 100])
                hundred.append(time.perf_counter() - t)
        return {
            "open_s": round(open_s, 2),
            "get_user_1": _ms(one_user),
            "get_items_1": _ms(one_item),
            "get_items_100": _ms(hundred),
            "write_items_32": _ms(writes),
        }
    finally:
        store.close()
        if isinstance(settings.feast, ProductionStoreConfig):
            # deferred import: redis
            import redis

            r = redis.Redis.from_url(settings.feast.redis_url)
            for key in r.scan_iter(match=f"*bench_{tag}".encode(), count=1000):
                r.delete(key)
            PostgresOfflineLog(settings.feast.postgres_url, f"bench_{tag}").drop_schema()


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--stores", default="embedded,production")
    ap.add_argument("--reads", type=int, default=300)
    args = ap.parse_args()
    out: dict[str, Any] = {}
    with tempfile.TemporaryDirectory() as d:
        for p in args.stores.split(","):
            out[p] = run(p, args.reads, Path(d))
    print(json.dumps(out))


if __name__ == "__main__":
    main()
