"""Settings section for stream/ (owned by stream/)."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict


class KafkaSettings(BaseModel):
    """Kafka connection. ``bootstrap_servers=None`` starts the embedded Tansu broker on 127.0.0.1."""

    model_config = ConfigDict(extra="forbid")

    bootstrap_servers: str | None = None
    embedded_port: int = 19092
    partitions: int = 4
    # Tansu needs short group timeouts, or a consumer group takes ~23 s to join.
    session_timeout_ms: int = 6000
    heartbeat_interval_ms: int = 1000
