"""The Feast feature repo and coldstart's feature-store API.

``open_store(settings)`` returns the :class:`~feature_repo.base.FeatureStore` of the configured
store (``COLDSTART_FEAST__TYPE=embedded|production``). Feast is imported lazily, inside it (it costs
seconds at import).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from feature_repo.config import EmbeddedStoreConfig

if TYPE_CHECKING:
    from coldstart.settings import Settings
    from feature_repo.feast_store import FeastFeatureStore
    from feature_repo.offline.base import OfflineLog


def open_store(settings: Settings) -> FeastFeatureStore:
    """Open the feature store of ``settings.feast`` (creating files, tables and registry entries).

    Embedded: SQLite online store, parquet offline store and file registry under
    ``settings.feast.repo_path`` (default ``<settings.data_dir>/feast``). Production: Redis online
    store, PostgreSQL offline tables in schema ``pg_schema`` and SQL registry. The returned
    store is a :class:`~feature_repo.base.FeatureStore`; its ``offline`` attribute is the
    :class:`~feature_repo.offline.base.OfflineLog` (decisions, interactions, analysts' frames).
    """
    # deferred import: Feast
    from feature_repo.opening import open_feast_store

    return open_feast_store(settings.feast, settings.data_dir)


def open_offline_log(settings: Settings) -> OfflineLog:
    """The offline store alone (no Feast import): parquet under the embedded repo path, or PostgreSQL.

    Same tables and location as ``open_store(settings).offline`` (analysts, reports, exports).
    """
    feast = settings.feast
    if isinstance(feast, EmbeddedStoreConfig):
        # deferred import: SQLAlchemy, pyarrow, duckdb
        from feature_repo.offline.parquet import ParquetOfflineLog

        root = feast.embedded_root(settings.data_dir)
        return ParquetOfflineLog(root / "data" / "offline", feast.part_merge)
    from feature_repo.offline.postgres import PostgresOfflineLog

    return PostgresOfflineLog(feast.postgres_url, feast.pg_schema)


__all__ = ["open_offline_log", "open_store"]
