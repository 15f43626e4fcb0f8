"""The embedded offline store after a day's worth of small writes: part merging on against off.

Every write to the parquet offline store adds one part (the archive one per micro-batch, the learner
a state and a user part per batch). This writes ``--batches`` micro-batches of ``--batch`` decisions
(two tables each: ``decisions`` and ``decision_slots``) into two stores in turn, one with the
default background merging (``feast.part_merge``) and one with it off (the baseline, same run), then
times what analysts and reports do with the table: a full typed read (``read_decisions``) and a
DuckDB aggregate over the views (``sql``). Prints one JSON object with, per store, the write rate
(merges share the writer's CPU), the live part count of ``decisions``, the rows rewritten by merges
per row written, and the read times; ``ratio_*`` = off / on.

    flock /tmp/bench.lock .venv/bin/python benchmarks/offline_parts.py [--batches 5000] [--batch 20]
"""

from __future__ import annotations

import argparse
import json
import shutil
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq

from coldstart.decisions import Candidate, Decision, Slot
from feature_repo.config import PartMergeConfig
from feature_repo.offline.parquet import ParquetOfflineLog

T0 = datetime(2026, 1, 1, tzinfo=UTC)


def _decision(n: int) -> Decision:
    cands = [Candidate(item_id=f"it{(n + j) % 997}", probability=0.2, score=float(j)) for j in range(5)]
    return Decision(
        decision_id=f"d{n}",
        ts=T0 + timedelta(milliseconds=n),
        user_id=f"u{n % 1000}",
        context={"hour": float(n % 24)},
        policy="vw-squarecb",
        model_version="m-1",
        candidates=cands,
        slots=[
            Slot(item_id=c.item_id, position=k, propensity=0.2, score=c.score)
            for k, c in enumerate(cands[:2])
        ],
    )


def _timed(fn: Any, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return round(sorted(times)[len(times) // 2], 3)


def run(root: Path, merge: PartMergeConfig, batches: int, batch: int) -> dict[str, Any]:
    log = ParquetOfflineLog(root, merge)
    t = time.perf_counter()
    for b in range(batches):
        log.write_decisions([_decision(b * batch + k) for k in range(batch)])
    write_s = time.perf_counter() - t
    t = time.perf_counter()
    log.close()  # waits for the merge in progress; then the remaining ones, counted with the writes
    if merge.enabled:
        log.merge_parts()
    settle_s = time.perf_counter() - t
    d = log.table_dir("decisions")
    live = [n for n in log.live_parts("decisions") if "schema" not in n]
    rows_on_disk = sum(pq.ParquetFile(d / n).metadata.num_rows for n in live)
    merged_rows = sum(
        pq.ParquetFile(p).metadata.num_rows for p in d.glob("part-m-*.parquet")
    )  # every merged part still on disk (within the grace nothing is deleted)
    rows = batches * batch
    read_s = _timed(lambda: log.read_decisions(), 3)
    sql_s = _timed(lambda: log.sql("select policy, count(*) from decisions group by 1"), 3)
    assert rows_on_disk == rows, (rows_on_disk, rows)
    return {
        "writes_per_s": round(batches / (write_s + settle_s), 1),
        "write_s": round(write_s, 2),
        "settle_s": round(settle_s, 2),
        "parts": len(live),
        "rewritten_rows_per_row": round(merged_rows / rows, 2),
        "read_decisions_s": read_s,
        "sql_s": sql_s,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--batches", type=int, default=5000)
    ap.add_argument("--batch", type=int, default=20)
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="offline-parts-"))
    try:
        on = run(tmp / "on", PartMergeConfig(), args.batches, args.batch)
        off = run(tmp / "off", PartMergeConfig(enabled=False), args.batches, args.batch)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    out = {
        "batches": args.batches,
        "batch": args.batch,
        "merging": on,
        "no_merging": off,
        "ratio_read": round(off["read_decisions_s"] / on["read_decisions_s"], 2),
        "ratio_sql": round(off["sql_s"] / on["sql_s"], 2),
        "ratio_writes": round(on["writes_per_s"] / off["writes_per_s"], 2),
    }
    print(json.dumps(out))


if __name__ == "__main__":
    main()
