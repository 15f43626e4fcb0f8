"""Batched writes to Feast's SQLite online store: the rows ``SqliteOnlineStore.online_write_batch``
writes, in one ``executemany`` per call.

Feast's SQLite store upserts one row per (entity, feature) with its own ``execute`` and serialises the
entity key and adapts both timestamps for every feature. The learner writes a few thousand state and
user rows per batch (the store write is about a third of its batch: benchmarks/warmup.py,
``live_stage_s_per_batch.write_s``); for 400 state and 1,500 user rows Feast's loop took 118 ms and
this writer 74 ms (cProfile, one process). It builds the same rows (Feast's own key serialisation,
value-text extraction and datetime adapter, once per entity) and hands them to SQLite in one call.
``tests/feature_repo/test_sqlite_online.py`` holds the table contents of both writers equal, so a Feast
upgrade that changes the layout fails there.

It is used only where it writes exactly what Feast would: the stock ``SqliteOnlineStore`` without
vector search and without the ``value_num`` column; every other online store keeps Feast's own write.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any, TypeGuard

from feast import FeatureView, RepoConfig
from feast.infra.key_encoding_utils import serialize_entity_key
from feast.infra.online_stores.helpers import compute_table_id, extract_text_and_num
from feast.infra.online_stores.sqlite import SqliteOnlineStore, adapt_datetime_epoch
from feast.protos.feast.types.EntityKey_pb2 import EntityKey as EntityKeyProto
from feast.protos.feast.types.Value_pb2 import Value as ValueProto
from feast.utils import to_naive_utc

# (entity key, feature values, event time, created time): Feast's ``online_write_batch`` data
OnlineRow = tuple[EntityKeyProto, Mapping[str, ValueProto], datetime, datetime | None]

_COLUMNS = ("entity_key", "feature_name", "value", "value_text", "event_ts", "created_ts")


class SqliteOnlineWriter:
    """Writes online rows of a Feast SQLite store in one statement per call (see the module doc).

    Parameters
    ----------
    store
        The provider's online store (its connection is used, so reads through Feast see the rows).
    config
        The repo config of the store.
    """

    def __init__(self, store: SqliteOnlineStore, config: RepoConfig) -> None:
        self.store = store
        self.config = config

    @classmethod
    def applies(cls, store: object, config: RepoConfig) -> TypeGuard[SqliteOnlineStore]:
        """Whether ``store`` is one this writer writes exactly as Feast does."""
        online = config.online_store
        return (
            type(store) is SqliteOnlineStore
            and not getattr(online, "vector_enabled", False)
            and not getattr(online, "enable_openai_compatible_store", False)
        )

    def write(self, view: FeatureView, data: Sequence[OnlineRow]) -> None:
        """Upsert ``data`` into ``view``'s table in one transaction (the newest call wins per feature)."""
        if not data:
            return
        conn: sqlite3.Connection = self.store._get_conn(self.config)
        version = self.config.entity_key_serialization_version
        rows: list[tuple[Any, ...]] = []
        for entity_key, values, event_ts, created_ts in data:
            key = serialize_entity_key(entity_key, entity_key_serialization_version=version)
            event = adapt_datetime_epoch(to_naive_utc(event_ts))
            created = None if created_ts is None else adapt_datetime_epoch(to_naive_utc(created_ts))
            for name, value in values.items():
                text, _ = extract_text_and_num(value, False)
                rows.append((key, name, value.SerializeToString(), text, event, created))
        with conn:
            conn.executemany(self._upsert_sql(view), rows)

    def _upsert_sql(self, view: FeatureView) -> str:
        table = compute_table_id(
            self.config.project, view, self.config.registry.enable_online_feature_view_versioning
        )
        quoted = '"' + table.replace('"', '""') + '"'
        updates = ", ".join(f"{c} = excluded.{c}" for c in _COLUMNS[2:])
        return (
            f"INSERT INTO {quoted} ({', '.join(_COLUMNS)}) VALUES ({', '.join('?' * len(_COLUMNS))}) "
            f"ON CONFLICT(entity_key, feature_name) DO UPDATE SET {updates}"
        )
