"""Settings section for api/ (owned by api/)."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict


class ApiSettings(BaseModel):
    """HTTP server settings."""

    model_config = ConfigDict(extra="forbid")

    host: str = "127.0.0.1"
    port: int = 8000
    api_keys: list[str] = ["dev-key"]
