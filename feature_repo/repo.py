"""The module the ``feast`` CLI scans (every other module is listed in ``.feastignore``).

``cd feature_repo && feast plan`` / ``feast apply`` use ``feature_store.yaml`` (embedded store,
files under ``feature_repo/data/``). For the production store, export the variables printed by
``coldstart store env`` (they select ``feature_store.production.yaml`` through
``FEAST_FS_YAML_FILE_PATH`` and ``COLDSTART_FEAST__TYPE=production``) and run the same commands.
The objects are the ones :func:`feature_repo.open_store` applies at run time.
"""

from __future__ import annotations

import os
from pathlib import Path

from feature_repo.config import EmbeddedStoreConfig, FeastSettings, ProductionStoreConfig
from feature_repo.definitions import EMBEDDED_OFFLINE_DIR, build_definitions

_store: FeastSettings = (
    ProductionStoreConfig(pg_schema=os.environ.get("COLDSTART_FEAST__PG_SCHEMA", "coldstart"))
    if os.environ.get("COLDSTART_FEAST__TYPE") == "production"
    else EmbeddedStoreConfig()
)
_defs = build_definitions(_store)
if isinstance(_store, EmbeddedStoreConfig):
    # the FileSources' parquet directories must exist (schema-only parts) for Feast to validate them
    from feature_repo.offline.parquet import ParquetOfflineLog

    ParquetOfflineLog(Path(__file__).resolve().parent / EMBEDDED_OFFLINE_DIR)

item = _defs.item
user = _defs.user
item_content_source = _defs.item_content_source
item_state_source = _defs.item_state_source
user_vector_source = _defs.user_vector_source
item_content_push = _defs.item_content_push
item_state_push = _defs.item_state_push
user_vector_push = _defs.user_vector_push
item_content = _defs.item_content
item_state = _defs.item_state
user_vector = _defs.user_vector
