"""`coldstart exploration ...` commands."""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime

import typer

from coldstart.settings import get_settings
from exploration.model_store import LocalModelStore
from exploration.pool import build_pool
from exploration.pool.base import CandidatePool
from exploration.pool.snapshot import PoolRows, snapshot_dir, write_snapshot
from feature_repo import open_store

app = typer.Typer(no_args_is_help=True)


@app.command("versions")
def versions_command() -> None:
    """List the policy checkpoints of the model store (newest last) and the one replicas serve."""

    settings = get_settings()
    store = LocalModelStore(settings.exploration.model_store_dir or settings.data_dir / "model_store")
    latest = store.latest()
    for version in store.versions():
        cp, data = store.read(version)
        row = {
            "version": cp.version,
            "created_at": cp.created_at.isoformat(),
            "policy": cp.config.get("type"),
            "n_learned": cp.n_learned,
            "bytes": len(data),
            "latest": latest is not None and latest.version == version,
        }
        typer.echo(json.dumps(row))


@app.command("pool-snapshot")
def pool_snapshot_command() -> None:
    """Write the feature store's cold pool, indexed as ``exploration.pool`` says, as the snapshot API
    replicas start from (``exploration.pool_snapshot_dir``); prints one JSON line."""

    settings = get_settings()
    started = time.monotonic()
    # the snapshot holds what was stored when its read began: a replica's changed-items sync starts there
    taken_at = datetime.now(UTC)
    store = open_store(settings)
    spaces = ["item", "content"] if settings.api.search_index else ["item"]
    rows = PoolRows.from_items(list(store.iter_items()), spaces)  # type: ignore[arg-type]
    read_s = time.monotonic() - started
    pools: dict[str, CandidatePool] = {space: build_pool(settings.exploration.pool) for space in spaces}
    for space, pool in pools.items():
        # no saved index to read: the pool indexes the rows in bulk (HNSW graphs built here, once)
        pool.load(settings.data_dir / ".no-snapshot", rows.entries(space), rows.vectors[space])  # type: ignore[arg-type]
    target = snapshot_dir(settings)
    write_snapshot(target, rows, pools, taken_at=taken_at)
    out = {
        "items": len(rows),
        "read_s": round(read_s, 1),
        "seconds": round(time.monotonic() - started, 1),
        "path": str(target),
    }
    typer.echo(json.dumps(out))
