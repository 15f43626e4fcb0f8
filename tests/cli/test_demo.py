"""The main job, as a fresh machine runs it: ``coldstart demo`` on the embedded default (Tansu, SQLite,
parquet, the encoder worker and the API as subprocesses), with a tiny random encoder."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.integration
@pytest.mark.timeout(400)
def test_the_demo_streams_items_into_the_store_and_the_pool_and_serves_slots(tmp_path: Path) -> None:
    env = dict(os.environ, COLDSTART_DATA_DIR=str(tmp_path))
    for name in list(env):  # the demo starts its own broker and embedded store
        if name.startswith(("COLDSTART_KAFKA__", "COLDSTART_FEAST__")):
            del env[name]
    res = subprocess.run(
        [sys.executable, "-m", "cli.main", "demo", "--tiny-encoder", "--limit", "12", "--rate", "0"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=380,
    )
    assert res.returncode == 0, res.stderr[-3000:]
    summary = json.loads(res.stdout.strip().splitlines()[-1])
    assert summary["published"] == 12
    assert summary["stored_online"] == 12 and summary["in_pool"] == 12
    assert summary["dead_letters"] == 0
    assert summary["api_slots_requests"] >= 1 and summary["api_slots_p50_ms"] is not None
