"""One ``Settings`` object per process, built by :func:`get_settings` (never at import time).

Values come from environment variables prefixed ``COLDSTART_`` with ``__`` as the nested delimiter,
e.g. ``COLDSTART_KAFKA__BOOTSTRAP_SERVERS=broker:9092`` or ``COLDSTART_FEAST__TYPE=production``,
and from an optional ``.env`` file. Each concept owns its section (``<package>/config.py``).
"""

from __future__ import annotations

from pathlib import Path

from pydantic import Field, ValidationError
from pydantic_settings import BaseSettings, SettingsConfigDict

from api.config import ApiSettings
from coldstart.errors import ConfigError
from exploration.config import ExplorationSettings
from feature_repo.config import EmbeddedStoreConfig, FeastSettings
from models.config import ModelSettings
from stream.config import KafkaSettings, WarmupStageConfig


class Settings(BaseSettings):
    """Process-wide settings.

    Parameters
    ----------
    data_dir
        Root of all runtime state of the embedded default (model artifacts, Feast files, model store).
    """

    model_config = SettingsConfigDict(
        env_prefix="COLDSTART_",
        env_nested_delimiter="__",
        env_file=".env",
        extra="forbid",
    )

    data_dir: Path = Path(".coldstart")
    shared_dir: Path = Path("../shared")
    seed: int = 0
    models: ModelSettings = Field(default_factory=ModelSettings)
    kafka: KafkaSettings = Field(default_factory=KafkaSettings)
    feast: FeastSettings = Field(default_factory=EmbeddedStoreConfig)
    exploration: ExplorationSettings = Field(default_factory=ExplorationSettings)
    api: ApiSettings = Field(default_factory=ApiSettings)
    warmup: WarmupStageConfig = Field(default_factory=WarmupStageConfig)

    @property
    def movielens_dir(self) -> Path:
        """Location of the shared MovieLens data (read only, never copied into the repo)."""
        return self.shared_dir / "data" / "movielens"


#: Settings that were renamed: a process given the old name is told the new one.
RENAMED = {
    ("feast", "profile"): "feast.type (COLDSTART_FEAST__TYPE)",
    ("api", "kafka"): "api.connect_kafka (COLDSTART_API__CONNECT_KAFKA)",
}


def get_settings(**overrides: object) -> Settings:
    """Build the process's settings from the environment, with explicit overrides on top.

    Raises
    ------
    ConfigError
        A value is invalid, or a name is unknown (each problem on a line, renamed settings with their
        new name).
    """
    try:
        return Settings(**overrides)  # type: ignore[arg-type]
    except ValidationError as exc:
        raise ConfigError(describe(exc)) from None


def describe(exc: ValidationError) -> str:
    """One line per problem of a settings validation error, ``section.field: message``."""
    lines = []
    for err in exc.errors():
        loc = [str(part) for part in err["loc"]]
        line = f"{'.'.join(loc) or 'settings'}: {err['msg']}"
        renamed = RENAMED.get((loc[0], loc[-1])) if loc else None
        if renamed is not None:
            line += f" (renamed: use {renamed})"
        lines.append(line)
    return "invalid settings:\n  " + "\n  ".join(lines)
