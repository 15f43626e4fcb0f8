"""Hostile records on the ``decisions`` topic: the archive consumer dead-letters each one that breaks
the decision contract (an Event: strict fields, versioned, timezone-aware UTC ``ts``, bounded ids
without control characters) and archives the valid decisions around them."""

from __future__ import annotations

import json
import threading
import uuid
from datetime import UTC, datetime
from pathlib import Path

import pytest

from coldstart.contracts import encode_event
from coldstart.decisions import Candidate, Decision, Slot
from coldstart.topics import DECISIONS
from feature_repo.offline.parquet import ParquetOfflineLog
from stream.admin import ensure_topics
from stream.archive_worker import run_archive
from stream.broker import TansuBroker
from stream.config import ArchiveSettings, KafkaSettings
from stream.dlq import read_dead_letters
from stream.producer import EventProducer

pytestmark = [pytest.mark.integration, pytest.mark.timeout(180)]


def _decision(n: int) -> Decision:
    return Decision(
        decision_id=f"d{n}-{uuid.uuid4().hex[:6]}",
        ts=datetime.now(UTC),
        user_id=f"user-{n}",
        policy="vw-squarecb",
        model_version="v000001",
        candidates=[Candidate(item_id="i1", probability=1.0, score=0.5)],
        slots=[Slot(item_id="i1", position=0, propensity=1.0, score=0.5)],
    )


def _tampered(**fields: object) -> bytes:
    payload = json.loads(encode_event(_decision(99)))
    payload.update(fields)
    return json.dumps(payload).encode()


def test_hostile_decisions_are_dead_lettered_and_the_valid_ones_archived(tmp_path: Path) -> None:
    hostile = [
        _tampered(ts="2026-03-01T12:00:00"),  # no timezone
        _tampered(user_id="user\u0000x"),  # a control character
        b'{"decision_id": "d-s", "user_id": "\\ud800", "ts": "2026-03-01T12:00:00+00:00"}',  # lone surrogate
        _tampered(user_id="u" * 257),  # longer than an id may be
        _tampered(schema_version=2),
        _tampered(admin=True),  # a field the contract does not have
        b"\xff\xfe not json",
        b"[]",
    ]
    valid = [_decision(n) for n in range(3)]
    with TansuBroker(partitions=2) as broker:
        ensure_topics(broker.bootstrap_servers, 2)
        kafka = KafkaSettings(
            bootstrap_servers=broker.bootstrap_servers,
            partitions=2,
            archive=ArchiveSettings(group_id=f"arch-{uuid.uuid4().hex[:8]}", linger_ms=50),
        )
        producer = EventProducer(broker.bootstrap_servers, kafka)
        producer.publish_decision(valid[0])
        for raw in hostile:
            producer.send(DECISIONS, "user-x", raw)
        for d in valid[1:]:
            producer.publish_decision(d)
        producer.flush(10.0)
        producer.close()
        offline = ParquetOfflineLog(tmp_path / "offline")
        run_archive(broker.bootstrap_servers, kafka, offline, threading.Event(), idle_exit_s=3.0)
        archived = {d.decision_id: d for d in offline.read_decisions()}
        letters = read_dead_letters(broker.bootstrap_servers, DECISIONS)
    assert set(archived) == {d.decision_id for d in valid}
    assert all(d.ts.tzinfo is not None for d in archived.values())
    assert len(letters) == len(hostile)
    assert {letter.payload() for letter in letters} == set(hostile)
