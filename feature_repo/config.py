"""Settings section for the Feast feature store (owned by feature_repo/).

Environment variables use the ``COLDSTART_FEAST__`` prefix, e.g.
``COLDSTART_FEAST__PROFILE=production COLDSTART_FEAST__PROJECT=shop_a``.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Literal
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, field_validator

_IDENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,62}$")


class FeastSettings(BaseModel):
    """Embedded = SQLite online + file offline; production = Redis online + PostgreSQL offline/registry.

    Parameters
    ----------
    profile
        ``embedded`` (SQLite online store, parquet offline store, file registry under ``repo_path``)
        or ``production`` (Redis online store, PostgreSQL offline store and SQL registry).
    project
        Feast project name; it also namespaces every Redis key, so two projects can share a server.
    redis_url
        ``redis://[:password@]host:port/db`` of the production online store.
    postgres_url
        SQLAlchemy URL of the production offline store (and of the registry unless ``registry_url``).
    registry_url
        SQLAlchemy URL of the production SQL registry; defaults to ``postgres_url``.
    pg_schema
        PostgreSQL schema that holds the offline tables (created on first use).
    repo_path
        Directory of the embedded profile's files (registry, SQLite, parquet); default
        ``<settings.data_dir>/feast``. Relative paths are resolved against the working directory.
    registry_cache_ttl_s
        How long a process trusts its cached copy of the registry.
    online_timeout_ms
        Production profile: connect and read timeout of each Redis call, without retries (a call
        then fails within this bound when Redis is away). ``None``: the client's defaults (no
        timeout, retries with backoff: a write waits out a short outage). The API sets it to
        ``api.store_timeout_ms`` so that no request waits for a lost store.
    """

    model_config = ConfigDict(extra="forbid")

    profile: Literal["embedded", "production"] = "embedded"
    project: str = "coldstart"
    redis_url: str = "redis://127.0.0.1:6379/0"
    postgres_url: str = "postgresql+psycopg://postgres@127.0.0.1:5432/test"
    registry_url: str | None = None
    pg_schema: str = "coldstart"
    repo_path: Path | None = None
    registry_cache_ttl_s: int = Field(default=60, ge=0)
    online_timeout_ms: int | None = Field(default=None, ge=1, le=60_000)

    @field_validator("project", "pg_schema")
    @classmethod
    def _identifier(cls, value: str) -> str:
        if not _IDENT.match(value):
            raise ValueError(f"{value!r} must be a SQL identifier ([A-Za-z_][A-Za-z0-9_]*, ≤63 chars)")
        return value

    @field_validator("redis_url")
    @classmethod
    def _redis(cls, value: str) -> str:
        if urlsplit(value).scheme not in {"redis", "rediss"}:
            raise ValueError(f"redis_url={value!r} must start with redis:// or rediss://")
        return value

    def embedded_root(self, data_dir: Path) -> Path:
        """Absolute directory of the embedded profile's files (``repo_path`` or ``<data_dir>/feast``)."""
        return (self.repo_path or Path(data_dir) / "feast").expanduser().resolve()

    def feast_redis_connection_string(self) -> str:
        """``redis_url`` in Feast's ``host:port,db=N,password=...,ssl=true`` form."""
        parts = urlsplit(self.redis_url)
        host = parts.hostname or "127.0.0.1"
        out = [f"{host}:{parts.port or 6379}"]
        db = parts.path.lstrip("/")
        if db:
            out.append(f"db={int(db)}")
        if parts.password:
            out.append(f"password={parts.password}")
        if parts.scheme == "rediss":
            out.append("ssl=true")
        if self.online_timeout_ms is not None:
            t = self.online_timeout_ms / 1000.0
            out += [f"socket_timeout={t}", f"socket_connect_timeout={t}", "retry=null"]
        return ",".join(out)
