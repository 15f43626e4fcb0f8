"""Helpers shared by the fault tests: kill a broker, wait for a condition, read a topic's ids, and a
PostgreSQL database of a test's own."""

from __future__ import annotations

import contextlib
import json
import signal
import time
import uuid
from collections.abc import Callable, Iterator

from kafka import KafkaConsumer
from sqlalchemy import create_engine, text

from stream.broker import TansuBroker

PG_ADMIN_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/test"


def kill_broker(broker: TansuBroker) -> None:
    """SIGKILL the embedded broker (its in-memory topics, offsets and groups are gone)."""
    proc = broker._proc
    assert proc is not None
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    broker._proc = None


def wait_for(predicate: Callable[[], object], timeout_s: float, step_s: float = 0.2, what: str = "") -> float:
    """Seconds until ``predicate()`` was true; AssertionError when it was not within ``timeout_s``."""
    start = time.monotonic()
    while time.monotonic() - start < timeout_s:
        if predicate():
            return time.monotonic() - start
        time.sleep(step_s)
    raise AssertionError(f"{what or 'condition'} not within {timeout_s}s")


def topic_values(bootstrap: str, topic: str, field: str) -> set[str]:
    """The ``field`` of every JSON record on ``topic``, read from the beginning until idle 1.5 s."""
    consumer = KafkaConsumer(
        topic,
        bootstrap_servers=bootstrap,
        auto_offset_reset="earliest",
        group_id=None,
        allow_auto_create_topics=False,
    )
    values: set[str] = set()
    try:
        while polled := consumer.poll(timeout_ms=1500):
            for records in polled.values():
                values.update(json.loads(r.value)[field] for r in records)
    finally:
        consumer.close()
    return values


@contextlib.contextmanager
def pg_database(prefix: str) -> Iterator[str]:
    """A fresh PostgreSQL database (its SQLAlchemy URL), dropped afterwards."""
    name = f"{prefix}_{uuid.uuid4().hex[:10]}"
    admin = create_engine(PG_ADMIN_URL, isolation_level="AUTOCOMMIT")
    with admin.connect() as c:
        c.execute(text(f'CREATE DATABASE "{name}"'))
    try:
        yield f"postgresql+psycopg://postgres@127.0.0.1:5432/{name}"
    finally:
        with admin.connect() as c:
            c.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()
