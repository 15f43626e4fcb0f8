"""Settings section for exploration/ (owned by exploration/)."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict


class ExplorationSettings(BaseModel):
    """Bandit, candidate pool and pacing settings."""

    model_config = ConfigDict(extra="forbid")
