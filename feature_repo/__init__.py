"""The Feast feature repo and coldstart's feature-store API.

``open_store(settings)`` returns the :class:`~feature_repo.base.FeatureStore` of the configured
profile (``COLDSTART_FEAST__PROFILE=embedded|production``). Feast is imported lazily, inside it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from coldstart.settings import Settings
    from feature_repo.feast_store import FeastFeatureStore


def open_store(settings: Settings) -> FeastFeatureStore:
    """Open the feature store of ``settings.feast.profile`` (creating files, tables and registry entries).

    Embedded: SQLite online store, parquet offline store and file registry under
    ``settings.feast.repo_path`` (default ``<settings.data_dir>/feast``). Production: Redis online
    store, PostgreSQL offline tables in ``settings.feast.pg_schema`` and SQL registry. The returned
    store is a :class:`~feature_repo.base.FeatureStore`; its ``offline`` attribute is the
    :class:`~feature_repo.offline.base.OfflineLog` (decisions, interactions, analysts' frames).
    """
    from feature_repo.feast_store import open_feast_store

    return open_feast_store(settings.feast, settings.data_dir)


__all__ = ["open_store"]
