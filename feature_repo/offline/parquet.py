"""Embedded offline store: one directory of parquet parts per table, deduplicated through a key ledger.

Layout under ``root`` (``<repo_path>/data/offline``)::

    item_content/part-*.parquet   item_state/...   user_vector/...
    decisions/...   decision_slots/...   interactions/...
    _keys.sqlite                   keys already written, per table (the dedupe ledger)

Analysts query it with DuckDB, e.g. (from the working directory, default data dir)::

    duckdb -c "select policy, count(*)
               from read_parquet('.coldstart/feast/data/offline/decisions/*.parquet') group by 1"

or through :meth:`ParquetOfflineLog.sql`, which exposes every table as a view. Feast's file offline
store reads the same directories (``FileSource``) for point-in-time joins.

Each write is one transaction on the ledger: keys not seen before are inserted and their rows written
to a new part whose name is a hash of those keys, so a retry after a crash overwrites the same part
instead of duplicating it. A writing process merges the parts in the background, in size tiers
(:mod:`feature_repo.offline.merging`); :meth:`ParquetOfflineLog.compact` merges a whole table at once.
Merged-away parts are *retired*: the readers here skip them at once, the files go after a grace period.
"""

from __future__ import annotations

import hashlib
import json
import os
import sqlite3
import threading
import uuid
from datetime import datetime
from pathlib import Path
from typing import Any

import duckdb
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from coldstart.errors import StoreError
from feature_repo.config import PartMergeConfig
from feature_repo.offline.base import OfflineLog, Row, utc
from feature_repo.offline.merging import RETIRED_DDL, Part, PartMerger
from feature_repo.offline.tables import TABLES, TableName, TableSpec

_EMPTY_PART = "part-00000000-schema.parquet"


_IN_CHUNK = 500  # keys per IN query (SQLite's parameter limit is 32,766 from 3.32)
_READ_ATTEMPTS = 3  # a part deleted between the listing and the read (its grace over): list again


def _key(spec: TableSpec, row: Row) -> str:
    parts = []
    for k in spec.key:
        v = row[k]
        parts.append(v.isoformat(timespec="microseconds") if isinstance(v, datetime) else str(v))
    return "\x1f".join(parts)


def _to_table(spec: TableSpec, rows: list[Row]) -> pa.Table:
    cols: dict[str, list[Any]] = {c.name: [] for c in spec.columns}
    json_cols = {c.name for c in spec.columns if c.kind == "json"}
    for r in rows:
        for name in cols:
            v = r.get(name)
            cols[name].append(json.dumps(v, sort_keys=True) if name in json_cols else v)
    return pa.table(cols, schema=spec.arrow_schema())


class ParquetOfflineLog(OfflineLog):
    """Parquet-file offline store (embedded store).

    Parameters
    ----------
    root
        Directory holding one sub-directory per table (created if missing).
    part_merge
        How parts are merged in the background once this object has written (default: enabled,
        ``PartMergeConfig()``); a process that only reads starts nothing.
    """

    def __init__(self, root: Path, part_merge: PartMergeConfig | None = None) -> None:
        self.root = Path(root).resolve()
        self._lock = threading.Lock()
        # distinct_ids: the values of each part read so far, and the last answer with its parts
        self._ids_lock = threading.Lock()
        self._part_ids: dict[tuple[str, str], dict[tuple[str, int, int], frozenset[str]]] = {}
        self._ids: dict[tuple[str, str], tuple[set[tuple[str, int, int]], list[str]]] = {}
        try:
            self.root.mkdir(parents=True, exist_ok=True)
            for spec in TABLES.values():
                d = self.root / spec.name
                d.mkdir(exist_ok=True)
                empty = d / _EMPTY_PART
                if not empty.exists():
                    self._atomic_write(spec.arrow_schema().empty_table(), empty)
            with self._ledger() as con:
                con.execute(
                    "CREATE TABLE IF NOT EXISTS keys (tbl TEXT NOT NULL, key TEXT NOT NULL, "
                    "PRIMARY KEY (tbl, key)) WITHOUT ROWID"
                )
                con.execute(RETIRED_DDL)
        except (OSError, sqlite3.Error) as exc:
            raise StoreError(f"cannot initialise the parquet offline store at {self.root}: {exc}") from exc
        self._merger = PartMerger(self.root, self._ledger, self._data_parts, part_merge or PartMergeConfig())

    def table_dir(self, table: TableName) -> Path:
        """Directory of ``table``'s parquet parts."""
        return self.root / table

    def _ledger(self) -> sqlite3.Connection:
        con = sqlite3.connect(self.root / "_keys.sqlite", timeout=60.0, isolation_level=None)
        con.execute("PRAGMA journal_mode=WAL")
        return con

    @staticmethod
    def _atomic_write(table: pa.Table, path: Path) -> None:
        tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
        pq.write_table(table, tmp)
        os.replace(tmp, path)

    def _insert(self, spec: TableSpec, rows: list[Row]) -> int:
        if not rows:
            return 0
        with self._lock:
            con = self._ledger()
            try:
                con.execute("BEGIN IMMEDIATE")
                # the ledger's known keys in a few IN queries, then the new ones in one executemany
                # (inside the IMMEDIATE transaction: no other writer between the two)
                row_keys = [_key(spec, r) for r in rows]
                distinct = list(dict.fromkeys(row_keys))
                held: set[str] = set()
                for start in range(0, len(distinct), _IN_CHUNK):
                    chunk = distinct[start : start + _IN_CHUNK]
                    marks = ",".join("?" * len(chunk))
                    held.update(
                        str(k)
                        for (k,) in con.execute(
                            f"SELECT key FROM keys WHERE tbl = ? AND key IN ({marks})", (spec.name, *chunk)
                        )
                    )
                new: list[Row] = []
                keys: list[str] = []
                for r, k in zip(rows, row_keys, strict=True):
                    if k not in held:
                        held.add(k)  # a key repeated in one call is written once, its first row
                        new.append(r)
                        keys.append(k)
                con.executemany("INSERT INTO keys (tbl, key) VALUES (?, ?)", [(spec.name, k) for k in keys])
                if new:
                    digest = hashlib.sha1("\x1e".join(keys).encode()).hexdigest()[:24]
                    self._atomic_write(_to_table(spec, new), self.root / spec.name / f"part-{digest}.parquet")
                con.execute("COMMIT")
            except (OSError, sqlite3.Error, pa.ArrowException) as exc:
                if con.in_transaction:
                    con.execute("ROLLBACK")
                raise StoreError(
                    f"cannot write {len(rows)} rows to offline table {spec.name}: {exc}"
                ) from exc
            finally:
                con.close()
        if new:
            self._merger.note_write(spec.name)
        return len(new)

    def _read(self, spec: TableSpec, since: datetime | None, until: datetime | None) -> pd.DataFrame:
        d = self.root / spec.name
        for attempt in range(_READ_ATTEMPTS):
            try:
                paths = [str(d / name) for name in self.live_parts(spec.name)]
                table = pq.read_table(paths, schema=spec.arrow_schema())
                break
            except FileNotFoundError as exc:  # deleted after its grace between our listing and read
                if attempt == _READ_ATTEMPTS - 1:
                    raise StoreError(f"cannot read offline table {spec.name}: {exc}") from exc
            except (OSError, sqlite3.Error, pa.ArrowException) as exc:
                raise StoreError(f"cannot read offline table {spec.name}: {exc}") from exc
        # A writer killed between its part file and its ledger commit leaves that part behind; the
        # retry (re-delivered, identical rows, possibly batched differently) writes them again.
        df = table.to_pandas().drop_duplicates(subset=list(spec.key), keep="last").reset_index(drop=True)
        t = df[spec.time_column]
        mask = pd.Series(True, index=df.index)
        if since is not None:
            mask &= t >= pd.Timestamp(since)
        if until is not None:
            mask &= t < pd.Timestamp(until)
        return df.loc[mask].reset_index(drop=True)

    @staticmethod
    def _parts(directory: Path) -> list[tuple[str, os.stat_result]]:
        """The parquet parts of a table's directory (names and stats; temporary files left out).

        A part deleted between the listing and its stat is left out: only a retired part past its
        grace is ever deleted, and its rows are in the part that retired it."""
        found = []
        with os.scandir(directory) as entries:
            for e in entries:
                if not e.name.endswith(".parquet") or e.name.startswith("."):
                    continue
                try:
                    found.append((e.name, e.stat()))
                except FileNotFoundError:
                    continue
        return found

    @classmethod
    def _data_parts(cls, directory: Path) -> list[Part]:
        """The parts the merger may merge: all but the empty schema part."""
        return [
            Part(name, st.st_size, st.st_mtime_ns)
            for name, st in cls._parts(directory)
            if name != _EMPTY_PART
        ]

    def _live(self, table: str) -> list[tuple[str, os.stat_result]]:
        """``table``'s parts that hold its rows (names and stats): every part but the retired ones."""
        retired = self._merger.retired(table)
        return [(name, st) for name, st in self._parts(self.root / table) if name not in retired]

    def live_parts(self, table: str) -> list[str]:
        """Sorted names of ``table``'s parts that hold its rows: every part but the retired ones."""
        return sorted(name for name, _ in self._live(table))

    def distinct_ids(self, table: TableName, column: str) -> list[str]:
        """Sorted distinct values of an id column, reading only that column of parts not read before.

        Parts are immutable (a write adds one, a compaction replaces several by one), so the values of
        each part are kept by (name, size, mtime) and only new parts are read: every full read of the
        store asks for them (``iter_items``: a replica starting without a snapshot, ``pool-snapshot``),
        and a process that reads it again reads only what was written since.
        """
        d = self.root / table
        try:
            parts = {(name, st.st_size, st.st_mtime_ns) for name, st in self._live(table)}
            with self._ids_lock:
                cached = self._ids.get((table, column))
                if cached is not None and cached[0] == parts:
                    return list(cached[1])
                known = self._part_ids.setdefault((table, column), {})
                for part in parts - known.keys():
                    col = pq.read_table(d / part[0], columns=[column]).column(column)
                    known[part] = frozenset(str(v) for v in col.unique().to_pylist() if v is not None)
                for part in known.keys() - parts:  # compacted away
                    del known[part]
                ids = sorted(set().union(*known.values()))
                self._ids[(table, column)] = (parts, ids)
                return list(ids)
        except (OSError, sqlite3.Error, pa.ArrowException) as exc:
            raise StoreError(f"cannot read offline table {table}: {exc}") from exc

    def ids_written_since(self, table: TableName, column: str, since: datetime) -> list[str]:
        """Sorted distinct ids of the rows with ``created_ts >= since``, reading two columns of the live
        parts modified at or after ``since`` only: a part is written after every row in it was created,
        and a merged part carries the time of its newest input. In a merged part, the row groups of
        older inputs are skipped by their statistics."""
        cutoff = utc(since, "since")
        # file times come from the kernel's coarse clock (up to a tick behind the precise one that
        # stamped the rows): parts from the second before are read too, their rows filtered below
        cutoff_ns = (int(cutoff.timestamp()) - 1) * 1_000_000_000
        d = self.root / table
        ids: set[str] = set()
        try:
            recent = [name for name, st in self._live(table) if st.st_mtime_ns >= cutoff_ns]
            for name in recent:
                part = pq.read_table(
                    d / name, columns=[column, "created_ts"], filters=[("created_ts", ">=", cutoff)]
                )
                written = pc.greater_equal(
                    part["created_ts"], pa.scalar(cutoff, type=part["created_ts"].type)
                )
                ids.update(
                    str(v) for v in part.filter(written).column(column).unique().to_pylist() if v is not None
                )
        except (OSError, sqlite3.Error, pa.ArrowException) as exc:  # deleted meanwhile: the caller retries
            raise StoreError(f"cannot read offline table {table}: {exc}") from exc
        return sorted(ids)

    def sql(self, query: str) -> pd.DataFrame:
        """Run a DuckDB query in which every offline table is a view of the same name."""
        con = duckdb.connect()
        try:
            for spec in TABLES.values():
                d = self.root / spec.name
                files = ", ".join(
                    "'" + str(d / name).replace("'", "''") + "'" for name in self.live_parts(spec.name)
                )
                keys = ", ".join(spec.key)
                con.execute(
                    f"CREATE VIEW {spec.name} AS SELECT * FROM read_parquet([{files}]) "
                    f"QUALIFY row_number() OVER (PARTITION BY {keys}) = 1"
                )
            return con.execute(query).df()
        finally:
            con.close()

    def compact(self, table: TableName) -> int:
        """Merge ``table``'s live parts into one now (the merged-away parts retire, as in the background
        merges); returns the number of rows in its parts. Safe against writers and readers."""
        d = self.root / table
        try:
            parts = [
                Part(name, st.st_size, st.st_mtime_ns)
                for name, st in self._live(table)
                if name != _EMPTY_PART
            ]
            names = [p.name for p in parts]
            if len(parts) > 1:
                merged = self._merger.merge(table, parts)
                if merged is None:
                    raise StoreError(f"offline table {table} changed while it was compacted; try again")
                names = [merged]
            return sum(pq.ParquetFile(d / name).metadata.num_rows for name in names)
        except (OSError, sqlite3.Error, pa.ArrowException) as exc:
            raise StoreError(f"cannot compact offline table {table}: {exc}") from exc

    def merge_parts(self) -> int:
        """Merge every table until none has a full tier, in the caller's thread (what the background
        merges do over time; e.g. after a bulk load); returns the number of merges."""
        try:
            return sum(self._merger.run_once(table) for table in TABLES)
        except (OSError, sqlite3.Error, pa.ArrowException) as exc:
            raise StoreError(f"cannot merge the offline store's parts: {exc}") from exc

    def close(self) -> None:
        """Stop the background merges (one in progress finishes first); nothing else is held open."""
        self._merger.close()
