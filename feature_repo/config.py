"""Settings section for the Feast feature store (owned by feature_repo/).

One of two stores, chosen by ``type`` (a discriminated union; absent means ``embedded``). Environment
variables use the ``COLDSTART_FEAST__`` prefix, e.g.
``COLDSTART_FEAST__TYPE=production COLDSTART_FEAST__PROJECT=shop_a``.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Discriminator, Field, Tag, field_validator

_IDENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,62}$")


def _sql_identifier(value: str) -> str:
    if not _IDENT.match(value):
        raise ValueError(f"{value!r} must be a SQL identifier ([A-Za-z_][A-Za-z0-9_]*, ≤63 chars)")
    return value


class _StoreBase(BaseModel):
    """Fields of both stores.

    Parameters
    ----------
    project
        Feast project name; in production it also namespaces every Redis key, so two projects can share
        a server.
    registry_cache_ttl_s
        How long a process trusts its cached copy of the registry.
    """

    model_config = ConfigDict(extra="forbid")

    project: str = "coldstart"
    registry_cache_ttl_s: int = Field(default=60, ge=0)

    @field_validator("project")
    @classmethod
    def _project(cls, value: str) -> str:
        return _sql_identifier(value)


class PartMergeConfig(BaseModel):
    """Size-tiered merging of the embedded offline store's parquet parts (every write adds one).

    Parameters
    ----------
    enabled
        Merge in the background of every process that writes; ``False``: parts accumulate until
        ``compact`` is called.
    fanout
        Parts of one size tier merged into one. A table keeps fewer than ``fanout`` parts per tier and
        a row is rewritten about once per tier: larger means fewer rewrites and more parts.
    base_bytes
        Upper size of the smallest tier (tier ``t`` holds parts below ``base_bytes · fanout**t``).
    max_merge_bytes
        Largest merge: a tier whose ``fanout`` parts would exceed it is left as is (a merge streams
        its inputs, holding one input part in memory at a time).
    grace_s
        How long a merged-away part stays on disk for a reader that listed it before the merge (the
        store's own readers skip it at once; a plain glob sees its rows twice meanwhile).
    nice
        How much lower the merging thread's CPU priority is than its process's (Linux, where each
        thread has its own nice value): merges take the CPU that serving and writing leave.
    """

    model_config = ConfigDict(extra="forbid")

    enabled: bool = True
    fanout: int = Field(default=8, ge=2, le=64)
    base_bytes: int = Field(default=256 * 1024, ge=1024)
    max_merge_bytes: int = Field(default=512 * 1024 * 1024, ge=1024 * 1024)
    grace_s: float = Field(default=600.0, ge=0.0, le=7 * 86_400.0)
    nice: int = Field(default=10, ge=0, le=19)


class EmbeddedStoreConfig(_StoreBase):
    """The embedded store: SQLite online store, parquet offline store, file registry, all under one
    directory.

    Parameters
    ----------
    repo_path
        That directory; default ``<settings.data_dir>/feast``. Relative paths are resolved against the
        working directory.
    part_merge
        How the offline store's parquet parts are merged as they accumulate.
    """

    type: Literal["embedded"] = "embedded"
    repo_path: Path | None = None
    part_merge: PartMergeConfig = Field(default_factory=PartMergeConfig)

    def embedded_root(self, data_dir: Path) -> Path:
        """Absolute directory of the store's files (``repo_path`` or ``<data_dir>/feast``)."""
        return (self.repo_path or Path(data_dir) / "feast").expanduser().resolve()


class ProductionStoreConfig(_StoreBase):
    """The production store: Redis online store, PostgreSQL offline store and SQL registry.

    Parameters
    ----------
    redis_url
        ``redis://[:password@]host:port/db`` of the online store.
    postgres_url
        SQLAlchemy URL of the offline store (and of the registry unless ``registry_url``).
    registry_url
        SQLAlchemy URL of the SQL registry; defaults to ``postgres_url``.
    pg_schema
        PostgreSQL schema that holds the offline tables (created on first use).
    online_timeout_ms
        Connect and read timeout of each Redis call, without retries (a call then fails within this
        bound when Redis is away). ``None``: the client's defaults (no timeout, retries with backoff: a
        write waits out a short outage). The API sets it to ``api.store_timeout_ms`` so that no request
        waits for a lost store.
    """

    type: Literal["production"] = "production"
    redis_url: str = "redis://127.0.0.1:6379/0"
    postgres_url: str = "postgresql+psycopg://postgres@127.0.0.1:5432/test"
    registry_url: str | None = None
    pg_schema: str = "coldstart"
    online_timeout_ms: int | None = Field(default=None, ge=1, le=60_000)

    @field_validator("pg_schema")
    @classmethod
    def _schema(cls, value: str) -> str:
        return _sql_identifier(value)

    @field_validator("redis_url")
    @classmethod
    def _redis(cls, value: str) -> str:
        if urlsplit(value).scheme not in {"redis", "rediss"}:
            raise ValueError(f"redis_url={value!r} must start with redis:// or rediss://")
        return value

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


def _store_type(value: Any) -> str:
    """The union's tag: ``type`` of a model or a mapping; a mapping without one is the embedded store."""
    if isinstance(value, dict):
        return str(value.get("type", "embedded"))
    return str(getattr(value, "type", "embedded"))


FeastSettings = Annotated[
    Annotated[EmbeddedStoreConfig, Tag("embedded")] | Annotated[ProductionStoreConfig, Tag("production")],
    Discriminator(_store_type),
]
"""The feature store section: :class:`EmbeddedStoreConfig` or :class:`ProductionStoreConfig` by ``type``."""
