"""Pool snapshots: the cold items a replica serves and its indexes, on disk, for a fast start.

A replica that rebuilds its pool from the store reads every stored item one online read at a time and
builds every HNSW graph again: at a million items that is minutes. A snapshot is the bulk form:

* ``rows.npz``: the cold items as arrays (ids, the ``item`` and ``content`` vectors, category,
  seller, listing time, status, encoder version, impressions, clicks), and the ids of every item the
  store held (graduated ones too, so a replica does not read them again);
* one folder per pool space with what the index keeps beyond those rows
  (:meth:`~exploration.pool.base.CandidatePool.save`: the HNSW graphs in FAISS's format; nothing for
  an exact pool);
* ``snapshot.json``: format version, when it was taken, the row count and each space's index type.

``coldstart pool snapshot`` writes one from the feature store; an API replica that finds one at start
loads it (:func:`read_snapshot`) instead of the full store sync, then reads only the items listed
since (the incremental sync) and catches up on changed states at its next full sync or at their next
``items.stored`` announcement. A snapshot is written beside the old one and renamed into place, so a
reader sees the old one, the new one, or (for the instant between two renames) none, and then
falls back to the store.
"""

from __future__ import annotations

import json
import logging
import shutil
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from numpy.typing import NDArray

from coldstart.errors import StoreError
from exploration.pool.base import POOL_STATUSES, CandidatePool, PoolEntry, PoolSpace
from feature_repo.records import StoredItem

if TYPE_CHECKING:
    from coldstart.settings import Settings

log = logging.getLogger(__name__)

VERSION = 2
_META = "snapshot.json"
_ROWS = "rows.npz"


def snapshot_dir(settings: Settings) -> Path:
    """Where the pool snapshot lives: ``exploration.pool_snapshot_dir``, default
    ``<data_dir>/pool_snapshot``."""
    return settings.exploration.pool_snapshot_dir or settings.data_dir / "pool_snapshot"


@dataclass(frozen=True)
class PoolRows:
    """The cold items of a pool snapshot, column by column (row ``i`` is one item)."""

    item_ids: list[str]
    vectors: dict[str, NDArray[np.float32]]  # space -> (n, dim)
    categories: list[str]
    sellers: list[str]
    listed_at_s: NDArray[np.float64]
    statuses: list[str]
    encoder_versions: list[str]
    impressions: NDArray[np.int64]
    clicks: NDArray[np.int64]
    known_ids: list[str]  # every item the store held, cold or not: a replica need not read them again

    def __len__(self) -> int:
        return len(self.item_ids)

    @classmethod
    def from_items(cls, items: Sequence[StoredItem], spaces: Sequence[PoolSpace] = ("item",)) -> PoolRows:
        """The cold items (status in ``POOL_STATUSES``) among ``items``; the newest row per id wins."""
        latest: dict[str, StoredItem] = {}
        for it in items:
            if it.status in POOL_STATUSES:
                old = latest.get(it.item_id)
                if old is None or it.updated_at >= old.updated_at:
                    latest[it.item_id] = it
        cold = list(latest.values())
        dims = {it.item_vector.shape for it in cold}
        if len(dims) > 1:  # rows of an older encoder: keep the most common width, as replace_all does
            common = max(dims, key=lambda d: sum(1 for it in cold if it.item_vector.shape == d))
            cold = [it for it in cold if it.item_vector.shape == common]
        vectors: dict[str, NDArray[np.float32]] = {
            str(space): np.stack(
                [it.item_vector if space == "item" else it.content_vector for it in cold]
            ).astype(np.float32)
            if cold
            else np.zeros((0, 1), dtype=np.float32)
            for space in spaces
        }
        return cls(
            item_ids=[it.item_id for it in cold],
            vectors=vectors,
            categories=[it.category for it in cold],
            sellers=[it.seller_id for it in cold],
            listed_at_s=np.array([it.listed_at.timestamp() for it in cold], dtype=np.float64),
            statuses=[it.status for it in cold],
            encoder_versions=[it.encoder_version for it in cold],
            impressions=np.array([it.impressions for it in cold], dtype=np.int64),
            clicks=np.array([it.clicks for it in cold], dtype=np.int64),
            known_ids=sorted({it.item_id for it in items}),
        )

    def entries(self, space: PoolSpace) -> list[PoolEntry]:
        """The pool entries of ``space`` (as :func:`~exploration.pool.base.entry_from_item` makes them)."""
        vectors = self.vectors[space]
        return [
            PoolEntry(i, vectors[k], c, s, float(t), {"status": st, "encoder_version": ev})
            for k, (i, c, s, t, st, ev) in enumerate(
                zip(
                    self.item_ids,
                    self.categories,
                    self.sellers,
                    self.listed_at_s.tolist(),
                    self.statuses,
                    self.encoder_versions,
                    strict=True,
                )
            )
        ]

    def counts(self) -> dict[str, tuple[int, int]]:
        """``item_id -> (impressions, clicks)``."""
        return dict(
            zip(self.item_ids, zip(self.impressions.tolist(), self.clicks.tolist(), strict=True), strict=True)
        )


@dataclass(frozen=True)
class PoolSnapshot:
    """A loaded snapshot: its rows, when it was taken, and the entries it put in each space's pool."""

    rows: PoolRows
    taken_at: datetime
    entries: dict[str, list[PoolEntry]]


def write_snapshot(
    directory: Path, rows: PoolRows, pools: Mapping[str, CandidatePool], taken_at: datetime | None = None
) -> None:
    """Write ``rows`` and each space's index to ``directory`` (replaced as a whole)."""
    taken = taken_at or datetime.now(UTC)
    directory = Path(directory)
    directory.parent.mkdir(parents=True, exist_ok=True)
    tmp = directory.parent / f".{directory.name}.{uuid.uuid4().hex}.tmp"
    try:
        tmp.mkdir()
        arrays: dict[str, NDArray[np.generic]] = {
            "item_ids": np.asarray(rows.item_ids, dtype=str),
            "categories": np.asarray(rows.categories, dtype=str),
            "sellers": np.asarray(rows.sellers, dtype=str),
            "statuses": np.asarray(rows.statuses, dtype=str),
            "encoder_versions": np.asarray(rows.encoder_versions, dtype=str),
            "listed_at_s": rows.listed_at_s,
            "impressions": rows.impressions,
            "clicks": rows.clicks,
            "known_ids": np.asarray(rows.known_ids, dtype=str),
        }
        arrays.update({f"vectors_{space}": v for space, v in rows.vectors.items()})
        np.savez(tmp / _ROWS, **arrays)  # type: ignore[arg-type]
        spaces = {}
        for space, pool in pools.items():
            pool.save(tmp / space)
            spaces[space] = {"index": type(pool).__name__, "dim": int(rows.vectors[space].shape[1])}
        meta = {"version": VERSION, "taken_at": taken.isoformat(), "items": len(rows), "spaces": spaces}
        (tmp / _META).write_text(json.dumps(meta, indent=1))
        old = directory.parent / f".{directory.name}.{uuid.uuid4().hex}.old"
        if directory.exists():
            directory.rename(old)
        tmp.rename(directory)
        shutil.rmtree(old, ignore_errors=True)
    except OSError as exc:
        shutil.rmtree(tmp, ignore_errors=True)
        raise StoreError(f"cannot write the pool snapshot {directory}: {exc}") from exc


def read_snapshot(directory: Path, pools: Mapping[str, CandidatePool]) -> PoolSnapshot | None:
    """Fill ``pools`` (space -> empty pool) from the snapshot in ``directory``.

    Returns ``None``, leaving the pools alone, when there is no snapshot, it has another format
    version, lacks a space asked for, or cannot be read (logged): the caller then syncs from the store.
    """
    directory = Path(directory)
    if not (directory / _META).exists():
        return None
    try:
        meta = json.loads((directory / _META).read_text())
        if meta.get("version") != VERSION or not set(pools) <= set(meta.get("spaces", {})):
            log.warning("pool snapshot %s: version or spaces differ (%s), not used", directory, meta)
            return None
        with np.load(directory / _ROWS, allow_pickle=False) as z:
            rows = PoolRows(
                item_ids=z["item_ids"].tolist(),
                vectors={space: z[f"vectors_{space}"] for space in pools},
                categories=z["categories"].tolist(),
                sellers=z["sellers"].tolist(),
                listed_at_s=z["listed_at_s"],
                statuses=z["statuses"].tolist(),
                encoder_versions=z["encoder_versions"].tolist(),
                impressions=z["impressions"],
                clicks=z["clicks"],
                known_ids=z["known_ids"].tolist(),
            )
        entries = {space: rows.entries(space) for space in pools}  # type: ignore[arg-type]
        for space, pool in pools.items():
            pool.load(directory / space, entries[space], rows.vectors[space])
        taken = datetime.fromisoformat(meta["taken_at"])
    except (OSError, KeyError, ValueError) as exc:
        log.warning("pool snapshot %s unreadable (%s): syncing from the store", directory, exc)
        return None
    log.info("pool snapshot %s: %d items taken at %s", directory, len(rows), taken.isoformat())
    return PoolSnapshot(rows, taken, entries)
