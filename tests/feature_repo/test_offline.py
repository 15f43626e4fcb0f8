"""The offline store on both profiles: typed writers/readers, dedupe, DuckDB access, Feast CLI."""

from __future__ import annotations

import os
import shutil
import sys
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pytest

from coldstart.decisions import Candidate, Decision, Slot
from coldstart.errors import InvalidInputError
from feature_repo.offline.base import OfflineLog
from feature_repo.offline.parquet import ParquetOfflineLog
from feature_repo.records import InteractionRecord

T0 = datetime(2026, 2, 1, 9, 0, tzinfo=UTC)
REPO = Path(__file__).resolve().parents[2] / "feature_repo"


@pytest.fixture(params=["embedded", pytest.param("production", marks=pytest.mark.integration)])
def offline(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[OfflineLog]:
    if request.param == "embedded":
        log: OfflineLog = ParquetOfflineLog(tmp_path / "offline")
        yield log
        return
    from feature_repo.offline.postgres import PostgresOfflineLog

    pg = PostgresOfflineLog(request.getfixturevalue("pg_database_url"), f"s_{uuid.uuid4().hex[:10]}")
    try:
        yield pg
    finally:
        pg.drop_schema()
        pg.close()


def decision(n: int, ts: datetime) -> Decision:
    cands = [
        Candidate(item_id=f"it{j}", probability=p, score=float(j)) for j, p in enumerate([0.5, 0.3, 0.2])
    ]
    return Decision(
        decision_id=f"d{n}",
        ts=ts,
        user_id=f"u{n % 2}",
        context={"hour": 9.0, "device": "ios"},
        policy="vw-squarecb",
        model_version="m-7",
        candidates=cands,
        slots=[
            Slot(item_id="it1", position=0, propensity=0.3, score=1.0),
            Slot(item_id="it0", position=1, propensity=0.5 / 0.7, score=0.0),
        ],
    )


def test_decisions_round_trip_once(offline: OfflineLog) -> None:
    ds = [decision(n, T0 + timedelta(seconds=n)) for n in range(5)]
    assert offline.write_decisions(ds) == 5
    assert offline.write_decisions(ds[:3]) == 0  # re-delivery
    back = offline.read_decisions()
    assert back == ds
    assert offline.read_decisions(since=T0 + timedelta(seconds=1), until=T0 + timedelta(seconds=3)) == ds[1:3]
    slots = offline.frame("decision_slots")
    assert len(slots) == 10
    first = slots[slots["decision_id"] == "d0"].sort_values("position")
    assert list(first["item_id"]) == ["it1", "it0"]
    np.testing.assert_allclose(first["propensity"], [0.3, 0.5 / 0.7])
    np.testing.assert_allclose(first["first_slot_probability"], [0.3, 0.5])
    assert set(slots["model_version"]) == {"m-7"}


def test_interactions_round_trip_once(offline: OfflineLog) -> None:
    rows = [
        InteractionRecord("e1", "u1", "it1", "impression", T0, None, "d0", 0),
        InteractionRecord("e2", "u1", "it1", "click", T0 + timedelta(seconds=2), None, "d0", 0),
        InteractionRecord("e3", "u2", "it9", "rating", T0 + timedelta(seconds=5), 4.5),
    ]
    assert offline.write_interactions(rows + rows[:1]) == 3
    assert offline.write_interactions(rows) == 0
    assert offline.read_interactions() == rows
    assert offline.read_interactions(since=T0 + timedelta(seconds=1)) == rows[1:]
    with pytest.raises(InvalidInputError, match="ts"):
        offline.write_interactions([InteractionRecord("e4", "u", "i", "click", datetime(2026, 1, 1))])
    with pytest.raises(InvalidInputError, match="table"):
        offline.frame("nope")  # type: ignore[arg-type]


def test_parquet_tables_are_queryable_with_duckdb_and_compact(tmp_path: Path) -> None:
    import duckdb

    log = ParquetOfflineLog(tmp_path / "offline")
    for n in range(4):  # four writes → four parts
        log.write_decisions([decision(n, T0 + timedelta(minutes=n))])
    df = log.sql("select policy, count(*) as n from decisions group by policy")
    assert df.to_dict("records") == [{"policy": "vw-squarecb", "n": 4}]
    glob = str(log.table_dir("decision_slots") / "*.parquet")
    n_slots = duckdb.connect().execute(f"select count(*) from read_parquet('{glob}')").fetchone()
    assert n_slots == (8,)
    assert log.compact("decisions") == 4
    assert len([p for p in log.live_parts("decisions") if "schema" not in p]) == 1
    assert log.sql("select count(*) as n from decisions")["n"].tolist() == [4]
    assert [d.decision_id for d in log.read_decisions()] == ["d0", "d1", "d2", "d3"]
    assert log.write_decisions([decision(2, T0)]) == 0  # the ledger survives compaction


@pytest.mark.parametrize("profile", ["embedded", pytest.param("production", marks=pytest.mark.integration)])
def test_feast_cli_plan_and_apply_run_cleanly(
    profile: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, request: pytest.FixtureRequest
) -> None:
    """`feast plan` / `feast apply` on a copy of feature_repo/ (repo.py, yaml files, .feastignore)."""
    from click.testing import CliRunner
    from feast.cli.cli import cli

    from feature_repo.cli import feast_cli_env

    repo = tmp_path / "feature_repo"
    repo.mkdir()
    for name in ("repo.py", "feature_store.yaml", "feature_store.production.yaml", ".feastignore"):
        shutil.copy(REPO / name, repo / name)
    if profile == "production":
        tag = uuid.uuid4().hex[:10]
        monkeypatch.setenv("COLDSTART_FEAST__TYPE", "production")
        monkeypatch.setenv("COLDSTART_FEAST__PROJECT", f"cli_{tag}")
        monkeypatch.setenv("COLDSTART_FEAST__PG_SCHEMA", f"cli_{tag}")
        monkeypatch.setenv("COLDSTART_FEAST__POSTGRES_URL", request.getfixturevalue("pg_database_url"))
    else:
        monkeypatch.setenv("COLDSTART_FEAST__TYPE", "embedded")
    env = feast_cli_env()
    for k, v in env.items():
        monkeypatch.setenv(k, v.replace(str(REPO), str(repo)))
    sys.modules.pop("repo", None)  # feast imports repo.py as a top-level module
    cwd = os.getcwd()
    try:
        runner = CliRunner()
        plan = runner.invoke(cli, ["-c", str(repo), "plan"], catch_exceptions=False)
        assert plan.exit_code == 0, plan.output
        assert "Created feature view item_content" in plan.output
        assert "WARNING" not in plan.output and "Could not validate" not in plan.output
        sys.modules.pop("repo", None)
        apply = runner.invoke(cli, ["-c", str(repo), "apply"], catch_exceptions=False)
        assert apply.exit_code == 0, apply.output
        sys.modules.pop("repo", None)
        views = runner.invoke(cli, ["-c", str(repo), "feature-views", "list"], catch_exceptions=False)
        assert views.exit_code == 0, views.output
        for fv in ("item_content", "item_state", "user_vector"):
            assert fv in views.output
    finally:
        os.chdir(cwd)
        sys.modules.pop("repo", None)
        if profile == "production":
            from tests.feature_repo.conftest import drop_redis_project

            drop_redis_project(f"cli_{tag}")


def test_store_cli_apply_and_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from typer.testing import CliRunner

    from feature_repo.cli import app

    monkeypatch.setenv("COLDSTART_DATA_DIR", str(tmp_path))
    monkeypatch.setenv("COLDSTART_FEAST__TYPE", "embedded")
    runner = CliRunner()
    res = runner.invoke(app, ["apply"])
    assert res.exit_code == 0, res.output
    assert "type=embedded" in res.output and "item_state" in res.output
    assert (tmp_path / "feast" / "data" / "registry.db").exists()
    assert (tmp_path / "feast" / "data" / "offline" / "decisions").is_dir()
    env = runner.invoke(app, ["env", "--type", "production"])
    assert env.exit_code == 0, env.output
    assert "export FEAST_FS_YAML_FILE_PATH=" in env.output and "export CS_FEAST_REDIS=" in env.output
    bad = runner.invoke(app, ["env", "--type", "staging"])
    assert bad.exit_code != 0 and "staging" in bad.output


def _count_part_reads(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The names of the parquet files read from now on (``pyarrow.parquet.read_table`` counted)."""
    import pyarrow.parquet as pq

    reads: list[str] = []
    real_read = pq.read_table

    def counting_read(source: object, *args: object, **kwargs: object) -> object:
        reads.append(Path(str(source)).name)
        return real_read(source, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(pq, "read_table", counting_read)
    return reads


def test_parquet_distinct_ids_reads_each_part_once_and_follows_writes_and_compaction(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The API's periodic sync asks for every item id every few seconds: parts read before are not
    read again, and the answer still follows new parts (this or another process's), compaction and
    deletions."""
    from feature_repo.testing import random_items

    reads = _count_part_reads(monkeypatch)
    log = ParquetOfflineLog(tmp_path / "offline")
    other = ParquetOfflineLog(tmp_path / "offline")  # e.g. the encode worker's process
    items = random_items(30, seed=1, listed_at=T0)
    for start in (0, 10):
        log.write_item_content(items[start : start + 10])
    want = sorted(i.item_id for i in items[:20])
    assert log.distinct_ids("item_content", "item_id") == want
    assert len(reads) == 3  # two parts and the empty schema part
    assert log.distinct_ids("item_content", "item_id") == want
    assert len(reads) == 3  # nothing new: nothing read
    other.write_item_content(items[20:])
    assert log.distinct_ids("item_content", "item_id") == sorted(i.item_id for i in items)
    assert len(reads) == 4  # only the new part
    log.compact("item_content")
    reads.clear()
    assert log.distinct_ids("item_content", "item_id") == sorted(i.item_id for i in items)
    assert reads and all(r.startswith("part-m-") for r in reads)  # the merged-away parts are skipped
    for part in log.table_dir("item_content").glob("part-m-*.parquet"):
        part.unlink()  # the answer never outlives its parts
    assert log.distinct_ids("item_content", "item_id") == []


def test_ids_written_since_are_the_rows_written_after_the_mark(offline: OfflineLog) -> None:
    """The API's periodic sync reads only the items whose rows were written since its last one."""
    import dataclasses

    from feature_repo.testing import random_items

    items = random_items(6, seed=2, listed_at=T0)  # event times long before the writes
    offline.write_item_content(items[:3])
    offline.write_item_states(items[:3])
    mark = datetime.now(UTC)
    assert offline.ids_written_since("item_state", "item_id", mark) == []
    offline.write_item_content(items[3:5])
    # a new state row of an old item, with an old event time: written now, so it changed now
    offline.write_item_states([dataclasses.replace(items[0], updated_at=T0 + timedelta(seconds=1))])
    assert offline.ids_written_since("item_content", "item_id", mark) == sorted(i.item_id for i in items[3:5])
    assert offline.ids_written_since("item_state", "item_id", mark) == [items[0].item_id]
    assert offline.ids_written_since("item_state", "item_id", mark - timedelta(hours=1)) == sorted(
        i.item_id for i in items[:3]
    )
    assert offline.ids_written_since("item_state", "item_id", datetime.now(UTC) + timedelta(seconds=5)) == []
    with pytest.raises(InvalidInputError):
        offline.ids_written_since("item_state", "item_id", datetime(2026, 1, 1))  # naive time


def test_parquet_ids_written_since_reads_only_parts_modified_since(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from feature_repo.testing import random_items

    log = ParquetOfflineLog(tmp_path / "offline")
    items = random_items(20, seed=3, listed_at=T0)
    for start in range(0, 15, 5):
        log.write_item_content(items[start : start + 5])
    hour_ago = datetime.now(UTC).timestamp() - 3600
    for part in log.table_dir("item_content").glob("*.parquet"):
        os.utime(part, (hour_ago, hour_ago))  # written an hour ago
    reads = _count_part_reads(monkeypatch)
    mark = datetime.now(UTC) - timedelta(minutes=1)
    log.write_item_content(items[15:])
    assert log.ids_written_since("item_content", "item_id", mark) == sorted(i.item_id for i in items[15:])
    assert len(reads) == 1  # the new part only


def test_a_broken_part_is_a_store_error_for_the_periodic_sync(tmp_path: Path) -> None:
    """A part that is not parquet (a foreign or truncated file) fails the read with the project's store
    error, which the API's maintenance loop logs before it tries again; nothing else is raised."""
    from coldstart.errors import StoreError
    from feature_repo.testing import random_items

    log = ParquetOfflineLog(tmp_path / "offline")
    mark = datetime.now(UTC) - timedelta(minutes=1)
    log.write_item_content(random_items(3, seed=4, listed_at=T0))
    (log.table_dir("item_content") / "part-broken.parquet").write_bytes(b"PAR1\x00 not parquet")
    with pytest.raises(StoreError):
        log.ids_written_since("item_content", "item_id", mark)
    with pytest.raises(StoreError):
        log.distinct_ids("item_content", "item_id")


def test_dedupe_across_ledger_chunks_and_within_one_write(offline: OfflineLog) -> None:
    # 1,301 keys (more than one ledger query's worth), 300 written before, 50 repeated in the call
    rows = [
        InteractionRecord(f"e{k}", "u1", f"it{k % 7}", "click", T0 + timedelta(milliseconds=k))
        for k in range(1300)
    ]
    odd = InteractionRecord("e-ü'\"; DROP", "u2", "it'", "click", T0)
    assert offline.write_interactions(rows[:300]) == 300
    assert offline.write_interactions(rows + rows[1000:1050] + [odd]) == 1001
    assert offline.write_interactions([odd, *rows[::97]]) == 0
    back = offline.read_interactions()
    assert len(back) == 1301
    assert sorted(r.event_id for r in back) == sorted([r.event_id for r in rows] + [odd.event_id])
