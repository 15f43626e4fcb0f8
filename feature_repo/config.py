"""Settings section for the Feast feature store (owned by feature_repo/)."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict


class FeastSettings(BaseModel):
    """Embedded = SQLite online + file offline; production = Redis online + PostgreSQL offline/registry."""

    model_config = ConfigDict(extra="forbid")

    profile: Literal["embedded", "production"] = "embedded"
    redis_url: str = "redis://127.0.0.1:6379/0"
    postgres_url: str = "postgresql+psycopg://postgres@127.0.0.1:5432/test"
