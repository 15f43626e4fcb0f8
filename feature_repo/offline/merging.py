"""Size-tiered merging of the embedded offline store's parquet parts.

Every write to the parquet store adds one part: the learner adds a state part and a user part per
batch, the archive one per micro-batch, so a busy table gains parts every second, and every full read
(a report, a training set, Feast's point-in-time join over the directory) opens each of them. Parts
are grouped by size into tiers (tier ``t`` below ``base_bytes · fanout**t``); once a tier holds
``fanout`` parts, its oldest ``fanout`` are merged into one part, which lands a tier or so higher.
A table then keeps fewer than ``fanout`` parts per tier, O(fanout · log N) in all, and a row is
rewritten about once per tier.

A merge streams its inputs into a temporary file, then, in one transaction on the store's key ledger
(the lock every writing process takes), moves it into place and records its inputs as *retired*.
The store's own readers skip retired parts at once; the files stay ``grace_s`` longer for readers that
listed the directory before the merge (Feast, DuckDB globs: they see those rows twice meanwhile and
de-duplicate them), then a later pass deletes them. The merged part is named after its inputs: a
merge interrupted after its move and before its commit is redone under the same name, not doubled;
two processes racing for the same parts commit once (the second finds its inputs retired and drops
its file).
"""

from __future__ import annotations

import hashlib
import logging
import os
import sqlite3
import sys
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from feature_repo.config import PartMergeConfig
from feature_repo.offline.tables import TABLES

log = logging.getLogger(__name__)

RETIRED_DDL = (
    "CREATE TABLE IF NOT EXISTS retired (tbl TEXT NOT NULL, name TEXT NOT NULL, at REAL NOT NULL, "
    "PRIMARY KEY (tbl, name)) WITHOUT ROWID"
)


@dataclass(frozen=True)
class Part:
    """One parquet part of a table's directory."""

    name: str
    size: int
    mtime_ns: int


def tier(size: int, config: PartMergeConfig) -> int:
    """The size tier of a part: 0 below ``base_bytes``, ``t`` below ``base_bytes · fanout**t``."""
    t, bound = 0, config.base_bytes
    while size >= bound:  # integer steps: no rounding at a tier's edge
        t, bound = t + 1, bound * config.fanout
    return t


def plan_merges(parts: list[Part], config: PartMergeConfig) -> list[list[Part]]:
    """Groups of ``fanout`` parts to merge: the oldest of each tier that holds ``fanout`` or more,
    as many groups as it fills, and only groups whose total stays within ``max_merge_bytes``."""
    tiers: dict[int, list[Part]] = {}
    for p in parts:
        tiers.setdefault(tier(p.size, config), []).append(p)
    groups: list[list[Part]] = []
    for members in tiers.values():
        members.sort(key=lambda p: (p.mtime_ns, p.name))
        for start in range(0, len(members) - config.fanout + 1, config.fanout):
            group = members[start : start + config.fanout]
            if sum(p.size for p in group) <= config.max_merge_bytes:
                groups.append(group)
    return groups


def merged_name(group: list[Part]) -> str:
    """The merged part's name, fixed by its inputs (a redone merge overwrites, never doubles)."""
    digest = hashlib.sha1("\x1e".join(sorted(p.name for p in group)).encode()).hexdigest()[:24]
    return f"part-m-{digest}.parquet"


class PartMerger:
    """Merges the parts of the tables its store writes, in one background thread (see the module).

    Parameters
    ----------
    root
        The store's root (one directory per table).
    ledger
        Opens a connection to the store's key ledger (its ``BEGIN IMMEDIATE`` serialises every
        writing process).
    list_parts
        The parquet parts of a directory, the reserved ones (the schema part) left out.
    config
        Tiers, limits and grace.
    """

    def __init__(
        self,
        root: Path,
        ledger: Callable[[], sqlite3.Connection],
        list_parts: Callable[[Path], list[Part]],
        config: PartMergeConfig,
    ) -> None:
        self.root = root
        self.config = config
        self._ledger = ledger
        self._list_parts = list_parts
        self._cv = threading.Condition()
        self._pending: set[str] = set()
        self._stopping = False
        self._thread: threading.Thread | None = None
        self._unreadable: set[tuple[str, str]] = set()  # (table, part) a merge could not read

    def note_write(self, table: str) -> None:
        """A part was added to ``table``: plan its merges in the background (thread started on first use)."""
        if not self.config.enabled:
            return
        with self._cv:
            if self._stopping:
                return
            self._pending.add(table)
            if self._thread is None or not self._thread.is_alive():
                # first write, or a forked child (which inherits the object but not the thread)
                self._thread = threading.Thread(target=self._run, name="offline-part-merge", daemon=True)
                self._thread.start()
            self._cv.notify()

    def close(self, timeout_s: float = 30.0) -> None:
        """Stop the thread after the merge in progress (an interrupted one is redone by the next run)."""
        with self._cv:
            self._stopping = True
            self._cv.notify()
            thread = self._thread
        if thread is not None:
            thread.join(timeout_s)

    def retired(self, table: str) -> set[str]:
        """Names of ``table``'s parts merged away and not yet deleted."""
        con = self._ledger()
        try:
            return {str(n) for (n,) in con.execute("SELECT name FROM retired WHERE tbl = ?", (table,))}
        finally:
            con.close()

    def run_once(self, table: str, *, until_closed: bool = False) -> int:
        """Merge ``table`` until no tier is full and delete retired parts past their grace; returns the
        number of merges committed. ``until_closed``: stop between merges once :meth:`close` is called."""
        merges = 0
        while not (until_closed and self._stopping):
            retired = self.retired(table)
            parts = [
                p
                for p in self._list_parts(self.root / table)
                if p.name not in retired and (table, p.name) not in self._unreadable
            ]
            groups = plan_merges(parts, self.config)
            if not groups:
                break
            progressed = False
            for group in groups:
                if until_closed and self._stopping:
                    return merges
                if self.merge(table, group) is not None:
                    merges += 1
                    progressed = True
            if not progressed:
                break
        self._purge(table)
        return merges

    def _run(self) -> None:
        self._lower_priority()
        while True:
            with self._cv:
                while not self._pending and not self._stopping:
                    # wake for the purge of parts whose grace ends, even with no new writes
                    if not self._cv.wait(timeout=max(self.config.grace_s, 1.0)):
                        self._pending.update(TABLES.keys())
                if self._stopping:
                    return
                table = self._pending.pop()
            try:
                self.run_once(table, until_closed=True)
            except (OSError, sqlite3.Error, pa.ArrowException) as exc:
                # a full disk, a locked ledger: the next write (or the grace timer) tries again
                log.warning("merging the parts of offline table %s failed: %s", table, exc)

    def _lower_priority(self) -> None:
        """Raise this thread's nice value by ``config.nice`` (Linux keeps one per thread), so merges take
        the CPU only when the process's other threads and the machine's other processes leave it."""
        if sys.platform != "linux" or not self.config.nice:
            return
        tid = threading.get_native_id()
        try:
            current = os.getpriority(os.PRIO_PROCESS, tid)
            os.setpriority(os.PRIO_PROCESS, tid, min(19, current + self.config.nice))
        except OSError as exc:  # a sandbox that refuses it: merges run at the process's priority
            log.info("offline part merges keep the process's CPU priority: %s", exc)

    def merge(self, table: str, group: list[Part]) -> str | None:
        """Merge ``group`` into one part and retire it; returns the merged part's name, or ``None``
        when another process merged some of it first or one of its parts cannot be read."""
        d = self.root / table
        name = merged_name(group)
        tmp = d / f".{name}.{uuid.uuid4().hex}.tmp"
        schema = TABLES[table].arrow_schema()
        try:
            with pq.ParquetWriter(tmp, schema) as writer:
                for part in group:
                    try:
                        writer.write_table(pq.read_table(d / part.name, schema=schema))
                    except FileNotFoundError:
                        return None  # merged and deleted by another process meanwhile
                    except (OSError, pa.ArrowException) as exc:
                        # a foreign or truncated file: left out of later plans (readers report it)
                        self._unreadable.add((table, part.name))
                        log.warning("offline part %s/%s cannot be merged: %s", table, part.name, exc)
                        return None
            # the merged part is as new as its newest input: readers that follow the parts written
            # since a time (the replicas' pool sync) do not read its older rows again
            newest = max(p.mtime_ns for p in group)
            os.utime(tmp, ns=(newest, newest))
            return name if self._commit(table, group, tmp, d / name) else None
        finally:
            tmp.unlink(missing_ok=True)

    def _commit(self, table: str, group: list[Part], tmp: Path, final: Path) -> bool:
        con = self._ledger()
        try:
            con.execute("BEGIN IMMEDIATE")
            marks = ",".join("?" * len(group))
            (taken,) = con.execute(
                f"SELECT count(*) FROM retired WHERE tbl = ? AND name IN ({marks})",
                (table, *(p.name for p in group)),
            ).fetchone()
            if taken or not all((final.parent / p.name).exists() for p in group):
                con.execute("ROLLBACK")  # another process merged (some of) them first
                return False
            os.replace(tmp, final)
            now = time.time()
            con.executemany(
                "INSERT OR REPLACE INTO retired (tbl, name, at) VALUES (?, ?, ?)",
                [(table, p.name, now) for p in group],
            )
            con.execute("COMMIT")
            return True
        except BaseException:
            if con.in_transaction:
                con.execute("ROLLBACK")
            raise
        finally:
            con.close()

    def _purge(self, table: str) -> None:
        """Delete retired parts past their grace, and temporary files left by a killed merge."""
        cutoff = time.time() - self.config.grace_s
        d = self.root / table
        con = self._ledger()
        try:
            expired = [
                str(n)
                for (n,) in con.execute("SELECT name FROM retired WHERE tbl = ? AND at <= ?", (table, cutoff))
            ]
            for name in expired:
                (d / name).unlink(missing_ok=True)
            con.executemany("DELETE FROM retired WHERE tbl = ? AND name = ?", [(table, n) for n in expired])
        finally:
            con.close()
        with os.scandir(d) as entries:
            stale = [
                e.path
                for e in entries
                if e.name.startswith(".part-m-") and e.name.endswith(".tmp") and e.stat().st_mtime < cutoff
            ]
        for path in stale:
            Path(path).unlink(missing_ok=True)
