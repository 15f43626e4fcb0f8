"""Fault tolerance: SIGKILL the worker mid-stream, restart it, lose nothing, duplicate nothing."""

from __future__ import annotations

import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from coldstart.contracts import ImageRef
from coldstart.topics import ITEMS_LISTED
from models.records import ItemContent
from stream.config import KafkaSettings
from stream.producer import EventProducer
from tests.stream.conftest import poster_paths, subprocess_env
from tests.stream.helpers import bad_payload, good_event, read_dlq

pytestmark = pytest.mark.integration

N_ITEMS = 2000
BAD_EVERY = 50  # 40 planted poison events
KILLS = 3


def committed_total(bootstrap: str, group_id: str, partitions: int) -> int:
    from kafka import KafkaConsumer
    from kafka.structs import TopicPartition

    probe = KafkaConsumer(bootstrap_servers=bootstrap, group_id=group_id, enable_auto_commit=False)
    try:
        return sum(probe.committed(TopicPartition(ITEMS_LISTED, p)) or 0 for p in range(partitions))
    finally:
        probe.close()


def start_worker(artifact: Path, env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    cmd = [sys.executable, "-m", "cli.main", "stream", "encode", "--artifact", str(artifact)]
    cmd += ["--batch-size", "64", "--quiet"]
    with log.open("ab") as out:
        return subprocess.Popen(cmd, env=env, stdout=out, stderr=subprocess.STDOUT)


def test_sigkill_three_times_loses_and_duplicates_nothing(
    kafka: KafkaSettings, tiny_artifact: Path, encoder: Any, store: Any, store_dir: Path, tmp_path: Path
) -> None:
    bootstrap = kafka.bootstrap_servers or ""
    posters = poster_paths(16)
    good: dict[str, Any] = {}
    planted: list[bytes] = []
    ends: dict[int, int] = {}

    def publish() -> None:
        with EventProducer(bootstrap, kafka) as producer:
            futures = []
            for i in range(N_ITEMS):
                if i % BAD_EVERY == BAD_EVERY - 1:
                    raw = bad_payload("f", i, len(planted))
                    planted.append(raw)
                    futures.append(producer.send(ITEMS_LISTED, f"f-bad-{i}", raw))
                else:
                    # a real poster on every 8th item (image decoding is the slow part on 2 CPU cores)
                    image = ImageRef(path=str(posters[i % len(posters)])) if i % 8 == 0 else None
                    event = good_event("f", i, image)
                    good[event.item_id] = event
                    futures.append(producer.publish_item(event))
                if i % 200 == 199:
                    producer.flush()
                    time.sleep(0.5)  # keep publishing while the worker is killed and restarted
            producer.flush()
            for fut in futures:
                meta = fut.get(timeout=30)
                ends[meta.partition] = max(ends.get(meta.partition, 0), meta.offset + 1)

    publisher = threading.Thread(target=publish, daemon=True)
    publisher.start()
    env = subprocess_env(store_dir, kafka)
    log = tmp_path / "worker.log"
    kills = 0
    proc = start_worker(tiny_artifact, env, log)
    try:
        while kills < KILLS:
            base = committed_total(bootstrap, kafka.encode.group_id, 4)
            deadline = time.monotonic() + 120
            while committed_total(bootstrap, kafka.encode.group_id, 4) < base + 150:
                assert proc.poll() is None, log.read_text()[-3000:]
                assert time.monotonic() < deadline, "the worker made no progress"
                time.sleep(0.1)
            proc.send_signal(signal.SIGKILL)  # mid-stream: batches in flight, offsets uncommitted
            proc.wait(10)
            kills += 1
            proc = start_worker(tiny_artifact, env, log)
        publisher.join(120)
        total = N_ITEMS
        deadline = time.monotonic() + 150
        while committed_total(bootstrap, kafka.encode.group_id, 4) < total:
            assert proc.poll() is None, log.read_text()[-3000:]
            assert time.monotonic() < deadline, "the worker did not finish"
            time.sleep(0.2)
        assert sum(ends.values()) == total
        proc.send_signal(signal.SIGTERM)  # graceful: finish, commit, leave the group
        assert proc.wait(30) == 0, log.read_text()[-3000:]
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()

    assert kills == KILLS and len(planted) == N_ITEMS // BAD_EVERY
    stored = store.get_items(list(good))
    assert set(stored) == set(good), f"missing {len(set(good) - set(stored))} items"
    history = store.offline.frame("item_content")
    mine = history[history["item_id"].str.startswith("f-")]
    assert len(mine) == len(good) and mine["item_id"].is_unique  # exactly once, offline too

    sample = sorted(good)[::37] + [i for i in sorted(good) if good[i].image is not None][::25]
    embs = encoder.encode(
        [
            ItemContent(i, good[i].text(), Path(good[i].image.path).read_bytes() if good[i].image else None)
            for i in sample
        ]
    )
    for item_id, emb in zip(sample, embs, strict=True):
        np.testing.assert_allclose(stored[item_id].content_vector, emb.content_vector, atol=1e-5)
        np.testing.assert_allclose(stored[item_id].item_vector, emb.item_vector, atol=1e-5)

    letters = read_dlq(bootstrap)
    assert sorted(letter.payload() for letter in letters) == sorted(planted)  # exactly the planted ones
    coords = [(letter.source_partition, letter.source_offset) for letter in letters]
    assert len(set(coords)) == len(coords)
