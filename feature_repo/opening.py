"""Opening the Feast store: the repo config of each store type, and applying the definitions once
(a file lock on the embedded registry, a PostgreSQL advisory lock on the SQL one)."""

from __future__ import annotations

import contextlib
import fcntl
import logging
import sqlite3
from collections.abc import Iterator
from pathlib import Path

from feast import FeatureStore as _FeastStore
from feast import RepoConfig
from feast.repo_config import RegistryConfig
from sqlalchemy import text
from sqlalchemy.engine import make_url

from coldstart.errors import StoreError
from feature_repo.config import EmbeddedStoreConfig, FeastSettings
from feature_repo.definitions import Definitions, build_definitions
from feature_repo.feast_store import FeastFeatureStore
from feature_repo.offline.base import OfflineLog
from feature_repo.offline.parquet import ParquetOfflineLog
from feature_repo.offline.postgres import PostgresOfflineLog

log = logging.getLogger(__name__)


def repo_config(feast: FeastSettings, data_dir: Path) -> RepoConfig:
    """The Feast ``RepoConfig`` of ``feast`` (what feature_store.yaml would say)."""
    if isinstance(feast, EmbeddedStoreConfig):
        root = feast.embedded_root(data_dir)
        (root / "data").mkdir(parents=True, exist_ok=True)
        return RepoConfig(
            project=feast.project,
            provider="local",
            registry=RegistryConfig(
                path=str(root / "data" / "registry.db"), cache_ttl_seconds=feast.registry_cache_ttl_s
            ),
            online_store={"type": "sqlite", "path": str(root / "data" / "online_store.db")},
            offline_store={"type": "file"},
            entity_key_serialization_version=3,
            repo_path=root,
        )
    pg = make_url(feast.postgres_url)
    return RepoConfig(
        project=feast.project,
        provider="local",
        registry={
            "registry_type": "sql",
            "path": feast.registry_url or feast.postgres_url,
            "cache_ttl_seconds": feast.registry_cache_ttl_s,
            "sqlalchemy_config_kwargs": {"echo": False, "pool_pre_ping": True},
        },
        online_store={"type": "redis", "connection_string": feast.feast_redis_connection_string()},
        offline_store={
            "type": "postgres",
            "host": pg.host or "127.0.0.1",
            "port": pg.port or 5432,
            "database": pg.database or "postgres",
            "db_schema": feast.pg_schema,
            "user": pg.username or "postgres",
            "password": pg.password or "",
            "sslmode": str(pg.query.get("sslmode", "disable")),
        },
        entity_key_serialization_version=3,
        repo_path=Path.cwd(),
    )


@contextlib.contextmanager
def _file_lock(path: Path) -> Iterator[None]:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def _registry_matches(store: _FeastStore, defs: Definitions) -> bool:
    try:
        for fv in (defs.item_content, defs.item_state, defs.user_vector):
            stored = store.get_feature_view(fv.name, allow_registry_cache=False)
            if stored.schema != fv.schema or stored.entities != fv.entities:
                return False
            if stored.stream_source is None or stored.stream_source != fv.stream_source:
                return False
        return True
    except Exception:
        return False


def apply_definitions(store: _FeastStore, defs: Definitions) -> None:
    """Register the definitions unless the registry already holds identical ones."""
    if _registry_matches(store, defs):
        return
    store.apply(defs.objects())  # type: ignore[arg-type]


def _write_ahead_log(path: Path) -> None:
    """Put the SQLite online store in WAL mode (a property of the file: every later connection,
    Feast's included, uses it). Several processes share the file (the learner and the encoder write,
    API replicas read): with the default rollback journal a reader blocks the writer and a writer
    blocks every reader; with WAL neither waits for the other."""
    try:
        with contextlib.closing(sqlite3.connect(path, timeout=10.0)) as con:
            if con.execute("PRAGMA journal_mode").fetchone()[0] != "wal":
                con.execute("PRAGMA journal_mode=WAL")
    except sqlite3.Error as exc:  # only speed is at stake: the next opener tries again
        log.warning("online store %s stays in rollback-journal mode: %s", path, exc)


def open_feast_store(feast: FeastSettings, data_dir: Path) -> FeastFeatureStore:
    """Open (and on first use create) the store ``feast`` describes; see :func:`feature_repo.open_store`."""

    defs = build_definitions(feast)
    try:
        config = repo_config(feast, data_dir)
        offline: OfflineLog
        if isinstance(feast, EmbeddedStoreConfig):
            root = feast.embedded_root(data_dir)
            offline = ParquetOfflineLog(root / "data" / "offline", feast.part_merge)
            # Feast's file registry is rewritten in place by apply: build the store, apply and read the
            # views all under the lock, so no opener reads a registry file another one is writing.
            with _file_lock(root / "data" / ".apply.lock"):
                store = _FeastStore(config=config)
                apply_definitions(store, defs)
                _write_ahead_log(root / "data" / "online_store.db")
                return FeastFeatureStore(store, offline, defs)
        else:
            pg_log = PostgresOfflineLog(feast.postgres_url, feast.pg_schema)
            offline = pg_log
            store = _FeastStore(config=config)
            # workers starting together must not apply concurrently: a session advisory lock
            with pg_log.engine.connect() as conn:
                key = {"k": f"coldstart-apply:{feast.project}"}
                conn.execute(text("SELECT pg_advisory_lock(hashtext(:k))"), key)
                try:
                    apply_definitions(store, defs)
                    return FeastFeatureStore(store, offline, defs)
                finally:
                    conn.execute(text("SELECT pg_advisory_unlock(hashtext(:k))"), key)
    except StoreError:
        raise
    except Exception as exc:
        raise StoreError(f"cannot open the {feast.type} feature store: {exc}") from exc
