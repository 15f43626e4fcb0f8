"""Size-tiered merging of the embedded offline store's parts: the plan, the bound on parts, readers
and writers during merges, interrupted and racing merges, retirement and its grace, Feast's reads."""

from __future__ import annotations

import os
import shutil
import sys
import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from coldstart.settings import get_settings
from feature_repo import open_store
from feature_repo.config import PartMergeConfig
from feature_repo.feast_store import FeastFeatureStore
from feature_repo.offline.merging import Part, merged_name, plan_merges, tier
from feature_repo.offline.parquet import ParquetOfflineLog
from feature_repo.records import InteractionRecord
from feature_repo.testing import random_items

T0 = datetime(2026, 2, 1, 9, 0, tzinfo=UTC)
SMALL = PartMergeConfig(fanout=4, base_bytes=1024, grace_s=3600)


def clicks(start: int, n: int) -> list[InteractionRecord]:
    return [
        InteractionRecord(f"e{k}", f"u{k % 5}", f"it{k % 7}", "click", T0 + timedelta(milliseconds=k))
        for k in range(start, start + n)
    ]


def data_parts(log: ParquetOfflineLog, table: str) -> list[str]:
    return [n for n in log.live_parts(table) if "schema" not in n]


def merged_once(root: Path) -> tuple[ParquetOfflineLog, set[str]]:
    """A store (background merging off) with four small interaction parts merged once by hand; returns
    it and the parts that merge retired."""
    log = ParquetOfflineLog(root, SMALL.model_copy(update={"enabled": False}))
    for b in range(4):
        log.write_interactions(clicks(10 * b, 10))
    retired = set(data_parts(log, "interactions"))
    assert log._merger.run_once("interactions") == 1
    return log, retired


def settled(log: ParquetOfflineLog, table: str, cfg: PartMergeConfig, timeout_s: float = 30.0) -> bool:
    """Whether ``table`` reaches fewer than ``fanout`` live parts in every tier within the timeout."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        d = log.table_dir(table)  # type: ignore[arg-type]
        try:
            tiers = [tier((d / n).stat().st_size, cfg) for n in data_parts(log, table)]
        except FileNotFoundError:  # merged and deleted since the listing
            continue
        if all(tiers.count(t) < cfg.fanout for t in set(tiers)):
            return True
        time.sleep(0.05)
    return False


def test_the_plan_merges_the_oldest_fanout_parts_of_each_full_tier_within_the_size_limit() -> None:
    cfg = PartMergeConfig(fanout=3, base_bytes=2000, max_merge_bytes=2**20)
    assert [tier(s, cfg) for s in (0, 1999, 2000, 5999, 6000, 17999, 18000)] == [0, 0, 1, 1, 2, 2, 3]
    rng = np.random.default_rng(0)
    parts = [Part(f"p{i}", int(rng.integers(0, 40_000)), int(rng.integers(0, 10**9))) for i in range(60)]
    parts.append(Part("huge", 2**20, 0))  # alone in its tier
    parts += [Part(f"big{i}", 2**19, i) for i in range(3)]  # a full tier whose merge exceeds the limit
    groups = plan_merges(parts, cfg)
    # reference: per tier, sorted by (mtime, name), consecutive whole groups of `fanout`
    want = []
    for t in sorted({tier(p.size, cfg) for p in parts}):
        members = sorted((p for p in parts if tier(p.size, cfg) == t), key=lambda p: (p.mtime_ns, p.name))
        for k in range(len(members) // 3):
            group = members[3 * k : 3 * k + 3]
            if sum(p.size for p in group) <= cfg.max_merge_bytes:
                want.append(group)
    assert sorted(map(merged_name, groups)) == sorted(map(merged_name, want))
    assert all(len(g) == 3 for g in groups) and len(groups) >= 15
    assert not any(p.name.startswith("big") or p.name == "huge" for g in groups for p in g)
    assert merged_name(parts[:3]) == merged_name(parts[2::-1])  # fixed by the inputs, not their order


def test_writes_keep_a_logarithmic_number_of_parts_and_every_row_once(tmp_path: Path) -> None:
    log = ParquetOfflineLog(tmp_path / "offline", SMALL)
    off = ParquetOfflineLog(tmp_path / "plain", SMALL.model_copy(update={"enabled": False}))
    for b in range(120):
        batch = clicks(10 * b, 10)
        log.write_interactions(batch)
        off.write_interactions(batch)
    assert len(data_parts(off, "interactions")) == 120
    assert settled(log, "interactions", SMALL)  # merged by the writer's background thread
    log.close()
    assert len(data_parts(log, "interactions")) <= 8
    back = log.read_interactions()
    assert sorted(r.event_id for r in back) == sorted(f"e{k}" for k in range(1200))
    assert log.sql("select count(*) as n from interactions")["n"].tolist() == [1200]
    assert log.write_interactions(clicks(0, 50)) == 0  # the ledger still knows every key


def test_readers_see_every_row_once_while_writers_and_merges_run(tmp_path: Path) -> None:
    """No grace: merged-away parts are deleted as soon as a pass purges them, so a reader's listing can
    go stale under it; every read still succeeds with each committed row exactly once."""
    cfg = PartMergeConfig(fanout=3, base_bytes=1024, grace_s=0)
    root = tmp_path / "offline"
    writers = [ParquetOfflineLog(root, cfg), ParquetOfflineLog(root, cfg)]  # two writing processes
    reader = ParquetOfflineLog(root, cfg)
    committed = [0, 0]
    failures: list[BaseException] = []

    def write(w: int) -> None:
        try:
            for b in range(60):
                writers[w].write_interactions(clicks(100_000 * w + 5 * b, 5))
                committed[w] += 5
        except BaseException as exc:
            failures.append(exc)

    threads = [threading.Thread(target=write, args=(w,)) for w in (0, 1)]
    for t in threads:
        t.start()
    reads = 0
    while any(t.is_alive() for t in threads) or reads < 5:
        before = sum(committed)
        ids = [r.event_id for r in reader.read_interactions()]
        assert len(ids) == len(set(ids))
        assert len(ids) >= before
        reads += 1
    for t in threads:
        t.join()
    assert not failures
    assert settled(reader, "interactions", cfg)
    for w in writers:
        w.close()
    assert len(data_parts(reader, "interactions")) < 60  # 120 parts written
    assert len(reader.read_interactions()) == 600
    assert reads >= 5


def test_merged_parts_retire_for_the_grace_then_go(tmp_path: Path) -> None:
    log, before = merged_once(tmp_path / "offline")
    d = log.table_dir("interactions")
    after = set(data_parts(log, "interactions"))
    assert len(after) == 1 and not after & before
    assert before <= {p.name for p in d.glob("*.parquet")}  # still on disk for earlier listings
    # a plain glob sees the retired rows twice meanwhile; the store's readers do not
    assert len(pd.read_parquet(d)) == 80
    assert len(log.read_interactions()) == 40
    short = ParquetOfflineLog(tmp_path / "offline", SMALL.model_copy(update={"grace_s": 0.0}))
    short._merger.run_once("interactions")
    assert {p.name for p in d.glob("part-*.parquet") if "schema" not in p.name} == after
    assert len(pd.read_parquet(d)) == 40
    assert short._merger.retired("interactions") == set()


def test_an_interrupted_merge_is_redone_under_its_name_and_racing_merges_commit_once(
    tmp_path: Path,
) -> None:
    cfg = SMALL.model_copy(update={"enabled": False})
    log = ParquetOfflineLog(tmp_path / "offline", cfg)
    for b in range(4):
        log.write_interactions(clicks(10 * b, 10))
    d = log.table_dir("interactions")
    group = plan_merges(log._data_parts(d), cfg)[0]
    # killed after the merged part moved into place, before the commit: the inputs are not retired
    first = d / group[0].name
    shutil.copy(first, d / merged_name(group))
    (d / f".{merged_name(group)}.dead.tmp").write_bytes(b"half a merge")
    assert len(log.read_interactions()) == 40  # the stray part's rows are read once
    # two processes now merge the same parts at once
    other = ParquetOfflineLog(tmp_path / "offline", cfg)
    results: list[str | None] = []
    threads = [
        threading.Thread(target=lambda m=m: results.append(m._merger.merge("interactions", group)))
        for m in (log, other)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert results.count(merged_name(group)) == 1 and results.count(None) == 1
    assert data_parts(log, "interactions") == [merged_name(group)]
    assert sorted(r.event_id for r in log.read_interactions()) == sorted(f"e{k}" for k in range(40))
    old = time.time() - 7200
    os.utime(d / f".{merged_name(group)}.dead.tmp", (old, old))
    log._merger.run_once("interactions")
    assert not list(d.glob(".*.tmp"))  # the killed merge's temporary file is cleaned up


def test_a_part_that_cannot_be_read_is_left_out_of_merges(tmp_path: Path) -> None:
    cfg = SMALL.model_copy(update={"enabled": False})
    log = ParquetOfflineLog(tmp_path / "offline", cfg)
    d = log.table_dir("interactions")
    (d / "part-0-broken.parquet").write_bytes(b"PAR1\x00 not parquet")
    for b in range(7):
        log.write_interactions(clicks(10 * b, 10))
    merges = log._merger.run_once("interactions")
    assert merges >= 1
    assert "part-0-broken.parquet" in data_parts(log, "interactions")
    assert list(d.glob("part-m-*.parquet"))  # the good parts were merged around it
    (d / "part-0-broken.parquet").unlink()
    assert sorted(r.event_id for r in log.read_interactions()) == sorted(f"e{k}" for k in range(70))


@pytest.mark.filterwarnings("ignore::FutureWarning")
def test_feast_training_frames_are_unchanged_by_merges_inside_the_grace(tmp_path: Path) -> None:
    """Feast reads the table directories itself (merged and retired parts alike during the grace):
    its point-in-time frame is the same before and after a compaction."""
    settings = get_settings(data_dir=tmp_path, feast={"type": "embedded", "part_merge": {"enabled": False}})
    store = open_store(settings)
    assert isinstance(store, FeastFeatureStore)
    items = random_items(12, seed=5, listed_at=T0)
    for k in range(0, 12, 3):
        store.write_items(items[k : k + 3])
    when = [T0 + timedelta(minutes=1)] * 12
    entity_df = pd.DataFrame({"item_id": [i.item_id for i in items], "event_timestamp": when})
    features = ["item_content:content_vector", "item_state:item_vector"]
    before = store.historical_features(entity_df, features)
    assert isinstance(store.offline, ParquetOfflineLog)
    assert store.offline.compact("item_content") == 12
    assert store.offline.compact("item_state") == 12
    after = store.historical_features(entity_df, features)
    assert len(after) == 12
    for col in ("content_vector", "item_vector"):
        np.testing.assert_allclose(np.stack(after[col]), np.stack(before[col]))
    store.close()


def test_a_merged_part_is_as_new_as_its_newest_input_for_the_replicas_sync(tmp_path: Path) -> None:
    """The replicas' pool sync reads the parts modified since its last run: a merge of old parts must
    not make their rows look new (at 1M items a merge would make every replica re-read them)."""
    cfg = SMALL.model_copy(update={"enabled": False})
    log = ParquetOfflineLog(tmp_path / "offline", cfg)
    items = random_items(40, seed=6, listed_at=T0)
    for k in range(0, 30, 10):
        log.write_item_content(items[k : k + 10])
    d = log.table_dir("item_content")
    hour_ago = time.time() - 3600
    for part in d.glob("part-*.parquet"):
        os.utime(part, (hour_ago, hour_ago))
    mark = datetime.now(UTC)
    log.write_item_content(items[30:])  # the fourth part, new
    assert log._merger.run_once("item_content") == 1
    (merged,) = data_parts(log, "item_content")
    assert abs((d / merged).stat().st_mtime - time.time()) < 30  # the new input's time
    assert log.ids_written_since("item_content", "item_id", mark) == sorted(i.item_id for i in items[30:])
    # four parts written an hour ago (their file times say so; their rows' times say now) merge into a
    # part as old as they are: the sync does not read it
    mark = datetime.now(UTC) - timedelta(seconds=30)
    for k in range(0, 40, 10):
        log.write_item_content(random_items(10, seed=10 + k, prefix=f"late{k}", listed_at=T0))
    for part in d.glob("part-*.parquet"):
        os.utime(part, (hour_ago, hour_ago))
    assert log._merger.run_once("item_content") == 1
    assert all((d / n).stat().st_mtime < time.time() - 3000 for n in data_parts(log, "item_content"))
    assert log.ids_written_since("item_content", "item_id", mark) == []


@pytest.mark.skipif(sys.platform != "linux", reason="per-thread nice values are Linux's")
def test_merges_run_at_a_lower_cpu_priority_than_their_process(tmp_path: Path) -> None:
    log = ParquetOfflineLog(tmp_path / "offline", SMALL.model_copy(update={"nice": 7}))
    log.write_interactions(clicks(0, 5))  # starts the merging thread
    deadline = time.monotonic() + 10
    nice = None
    while nice is None and time.monotonic() < deadline:
        for t in threading.enumerate():
            if t.name == "offline-part-merge" and t.native_id is not None:
                stat = Path(f"/proc/self/task/{t.native_id}/stat").read_text()
                nice = int(stat.rsplit(")", 1)[1].split()[16])  # field 19 of proc(5)
                if nice == os.getpriority(os.PRIO_PROCESS, 0):
                    nice = None  # not lowered yet: the thread has just started
        time.sleep(0.02)
    log.close()
    assert nice == min(19, os.getpriority(os.PRIO_PROCESS, 0) + 7)


def test_a_part_purged_during_a_listing_is_left_out_of_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    log, retired = merged_once(tmp_path / "offline")
    d = log.table_dir("interactions")
    victim = sorted(retired)[0]
    real_scandir = os.scandir

    class Listing:  # the directory as listed, then the victim purged before its stat
        def __init__(self, path: Path) -> None:
            with real_scandir(path) as it:
                self.entries = list(it)
            (Path(path) / victim).unlink(missing_ok=True)

        def __enter__(self) -> list[os.DirEntry[str]]:
            return self.entries

        def __exit__(self, *exc: object) -> None:
            return None

    monkeypatch.setattr("feature_repo.offline.parquet.os.scandir", Listing)
    since = T0 - timedelta(days=1)
    assert victim not in log.live_parts("interactions")
    # the replicas' sync reads the parts written since a time: rows once, no error
    assert sorted(log.ids_written_since("interactions", "event_id", since)) == sorted(
        f"e{k}" for k in range(40)
    )
    assert not (d / victim).exists()
