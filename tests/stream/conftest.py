"""Fixtures of the stream tests: a Tansu broker per test, a Feast store per session, an encoder."""

from __future__ import annotations

import json
import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from stream.broker import TansuBroker
from stream.config import EncodeWorkerSettings, ImageFetchSettings, KafkaSettings
from stream.egress_policy import EgressPolicy

SHARED = Path(__file__).resolve().parents[2] / ".." / "shared" / "data" / "movielens"
POSTERS = SHARED / "ml1m_posters"


def poster_paths(n: int) -> list[Path]:
    """The first ``n`` real posters (sorted by file name)."""
    if not POSTERS.is_dir():
        pytest.skip(f"shared MovieLens posters not found at {POSTERS}")
    return sorted(POSTERS.glob("*.jpg"))[:n]


@pytest.fixture
def broker() -> Iterator[TansuBroker]:
    """A fresh Tansu broker (memory storage, free port, 4 partitions) for one test."""
    with TansuBroker(partitions=4) as b:
        yield b


@pytest.fixture
def kafka(broker: TansuBroker) -> KafkaSettings:
    """Stream settings pointing at the test's broker, with a unique consumer group."""
    return KafkaSettings(
        bootstrap_servers=broker.bootstrap_servers,
        partitions=4,
        encode=EncodeWorkerSettings(group_id=f"enc-{uuid.uuid4().hex[:8]}", max_batch_size=32, linger_ms=20),
        # the tests' own loopback image servers and poster folder, allowlisted explicitly
        images=ImageFetchSettings(
            timeout_s=2.0, concurrency=4, path_roots=[POSTERS], egress=EgressPolicy(allow_hosts=["127.0.0.1"])
        ),
    )


@pytest.fixture(scope="session")
def tiny_artifact(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny random encoder artifact (mechanics only), built once per session."""
    from models.testing import build_tiny_artifact

    out: Path = build_tiny_artifact(tmp_path_factory.mktemp("artifact"), seed=0)
    return out


@pytest.fixture(scope="session")
def encoder(tiny_artifact: Path) -> object:
    """The models/ ONNX encoder of the tiny artifact (CPU)."""
    import models

    return models.load_encoder(tiny_artifact, providers=["CPUExecutionProvider"])  # type: ignore[attr-defined]


@pytest.fixture(scope="session")
def store_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("coldstart-data")


@pytest.fixture(scope="session")
def store(store_dir: Path) -> object:
    """The embedded Feast store (SQLite online + parquet offline) of this test session."""
    from coldstart.settings import Settings
    from feature_repo import open_store

    return open_store(Settings(data_dir=store_dir))


def subprocess_env(store_dir: Path, kafka: KafkaSettings) -> dict[str, str]:
    """Environment for a ``coldstart`` subprocess that shares this session's broker and store."""
    env = dict(os.environ)
    env["COLDSTART_DATA_DIR"] = str(store_dir)
    env["COLDSTART_KAFKA__BOOTSTRAP_SERVERS"] = kafka.bootstrap_servers or ""
    env["COLDSTART_KAFKA__ENCODE__GROUP_ID"] = kafka.encode.group_id
    env["COLDSTART_KAFKA__ENCODE__LINGER_MS"] = str(kafka.encode.linger_ms)
    env["COLDSTART_KAFKA__IMAGES__PATH_ROOTS"] = json.dumps([str(p) for p in kafka.images.path_roots])
    env["COLDSTART_KAFKA__IMAGES__EGRESS__ALLOW_HOSTS"] = json.dumps(kafka.images.egress.allow_hosts)
    env["OMP_NUM_THREADS"] = "1"
    return env
