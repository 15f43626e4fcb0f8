"""The API's pools follow ``items.stored``: a newly encoded or warmed-up vector reaches the bandit's
candidate pool within seconds, without waiting for the periodic store sync."""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient

from api.main import create_app
from stream.admin import ensure_topics
from stream.broker import TansuBroker
from stream.pool_feed import StoredAnnouncer
from stream.producer import EventProducer
from tests.api.conftest import seeded_settings
from tests.exploration.slot_env import make_items

pytestmark = pytest.mark.integration


@pytest.fixture
def broker() -> Iterator[TansuBroker]:
    with TansuBroker(partitions=2) as b:
        ensure_topics(b.bootstrap_servers, 2)
        yield b


def _wait(predicate: object, timeout_s: float = 20.0) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():  # type: ignore[operator]
            return True
        time.sleep(0.05)
    return False


def test_announced_rows_reach_the_slot_pool(tmp_path: Path, broker: TansuBroker) -> None:
    settings = seeded_settings(
        tmp_path,
        api={"api_keys": ["test-key"], "connect_kafka": True},
        kafka={"bootstrap_servers": broker.bootstrap_servers, "partitions": 2},
    )
    new = make_items(1, seed=7)[0]
    new = dataclasses.replace(new, item_id="fresh-item")
    warmed_vector = np.full_like(new.item_vector, 0.25)
    with TestClient(create_app(settings)) as client:
        state = client.app.state.coldstart  # type: ignore[attr-defined]
        assert state.pool_feed is not None
        assert state.service.entry("fresh-item") is None
        with EventProducer(broker.bootstrap_servers, settings.kafka) as producer:
            announce = StoredAnnouncer(producer)
            announce([new])
            assert _wait(lambda: state.service.entry("fresh-item") is not None)
            # a warmed-up vector (same item, newer row) replaces the pool entry
            announce([dataclasses.replace(new, item_vector=warmed_vector, status="warming")])
            assert _wait(
                lambda: np.allclose(state.service.entry("fresh-item").vector, warmed_vector)  # type: ignore[union-attr]
            )
            # graduation leaves the pool
            announce([dataclasses.replace(new, item_vector=warmed_vector, status="graduated")])
            assert _wait(lambda: state.service.entry("fresh-item") is None)
