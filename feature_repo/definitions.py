"""Feast object definitions (entities, sources, feature views), built for one store (embedded or production).

Three feature views, each fed by a PushSource (online writes) whose batch source is the offline table
coldstart writes itself (parquet files in the embedded store, PostgreSQL tables in production):

``item_content``  (entity ``item``) — frozen at encode time, one history row per (re-)encoding:
    content_vector (shared image/text space, unit norm), content_item_vector (item-tower output of the
    content), image_ok, text_ok, encoder_version, listed_at, category, seller_id, content_updated_us.
``item_state``    (entity ``item``) — changes with every interaction during warm-up:
    item_vector (recommendation space; the blended vector after warm-up), status, impressions, clicks,
    model_version, state_updated_us.
``user_vector``   (entity ``user``):
    user_vector, interactions, model_version, user_updated_us.

``*_updated_us`` repeat the row's event timestamp in epoch microseconds (Feast's online stores keep
event timestamps to the second; idempotent re-writes and freshness need better). ``listed_at`` is a
UnixTimestamp feature (whole seconds).

The current ``item_vector`` lives in ``item_state`` (not with the content) so that every warm-up step
writes one small state row instead of re-writing the content embedding.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta

from feast import Entity, FeatureView, Field, FileSource, PushSource
from feast.data_format import ParquetFormat
from feast.data_source import DataSource
from feast.infra.offline_stores.contrib.postgres_offline_store.postgres_source import PostgreSQLSource
from feast.types import Array, Bool, Float32, Int64, String, UnixTimestamp
from feast.value_type import ValueType

from feature_repo.config import FeastSettings, ProductionStoreConfig

ITEM_CONTENT = "item_content"
ITEM_STATE = "item_state"
USER_VECTOR = "user_vector"
#: Offline tables that back a feature view (others — decisions, interactions — are analyst tables).
FEATURE_TABLES = (ITEM_CONTENT, ITEM_STATE, USER_VECTOR)

CONTENT_FEATURES = (
    "content_vector",
    "content_item_vector",
    "image_ok",
    "text_ok",
    "encoder_version",
    "listed_at",
    "category",
    "seller_id",
    "content_updated_us",
)
STATE_FEATURES = ("item_vector", "status", "impressions", "clicks", "model_version", "state_updated_us")
USER_FEATURES = ("user_vector", "interactions", "model_version", "user_updated_us")

#: Relative to the Feast repo path (``feature_repo/`` for the CLI, ``<data_dir>/feast`` at run time).
EMBEDDED_OFFLINE_DIR = "data/offline"


@dataclass(frozen=True)
class Definitions:
    """Every Feast object of the coldstart repo for one store type."""

    item: Entity
    user: Entity
    item_content_source: DataSource
    item_state_source: DataSource
    user_vector_source: DataSource
    item_content_push: PushSource
    item_state_push: PushSource
    user_vector_push: PushSource
    item_content: FeatureView
    item_state: FeatureView
    user_vector: FeatureView

    def objects(self) -> list[object]:
        """All objects, in the order ``FeatureStore.apply`` takes them."""
        return [
            self.item,
            self.user,
            self.item_content_source,
            self.item_state_source,
            self.user_vector_source,
            self.item_content_push,
            self.item_state_push,
            self.user_vector_push,
            self.item_content,
            self.item_state,
            self.user_vector,
        ]


def _batch_source(store: FeastSettings, table: str) -> DataSource:
    if not isinstance(store, ProductionStoreConfig):
        return FileSource(
            name=f"{table}_offline",
            path=f"{EMBEDDED_OFFLINE_DIR}/{table}",
            file_format=ParquetFormat(),
            timestamp_field="event_ts",
            created_timestamp_column="created_ts",
            description=f"coldstart offline history of {table} (parquet parts, written by OfflineLog)",
        )
    return PostgreSQLSource(
        name=f"{table}_offline",
        table=f"{store.pg_schema}.{table}",
        timestamp_field="event_ts",
        created_timestamp_column="created_ts",
        description=f"coldstart offline history of {table} (PostgreSQL, written by OfflineLog)",
    )


#: No expiry. Spelled as the registry stores it (a zero duration): a view declared with ``ttl=None``
#: never equals its registry copy, and ``feast plan`` then reports every view as changed.
NO_TTL = timedelta(0)


def build_definitions(store: FeastSettings) -> Definitions:
    """Build the Feast objects of ``store`` (its offline tables: parquet files or PostgreSQL tables)."""
    item = Entity(
        name="item", join_keys=["item_id"], value_type=ValueType.STRING, description="A listed item"
    )
    user = Entity(name="user", join_keys=["user_id"], value_type=ValueType.STRING, description="A user")

    content_src = _batch_source(store, ITEM_CONTENT)
    state_src = _batch_source(store, ITEM_STATE)
    user_src = _batch_source(store, USER_VECTOR)
    content_push = PushSource(name=f"{ITEM_CONTENT}_push", batch_source=content_src)
    state_push = PushSource(name=f"{ITEM_STATE}_push", batch_source=state_src)
    user_push = PushSource(name=f"{USER_VECTOR}_push", batch_source=user_src)

    vec = Array(Float32)
    item_content = FeatureView(
        name=ITEM_CONTENT,
        entities=[item],
        ttl=NO_TTL,
        schema=[
            Field(name="content_vector", dtype=vec, description="shared image/text space, unit norm"),
            Field(name="content_item_vector", dtype=vec, description="item-tower output of the content"),
            Field(name="image_ok", dtype=Bool),
            Field(name="text_ok", dtype=Bool),
            Field(name="encoder_version", dtype=String),
            Field(name="listed_at", dtype=UnixTimestamp),
            Field(name="category", dtype=String),
            Field(name="seller_id", dtype=String),
            Field(name="content_updated_us", dtype=Int64, description="event_ts in epoch microseconds"),
        ],
        source=content_push,
        online=True,
        description="Content embedding of an item, frozen at encode time",
    )
    item_state = FeatureView(
        name=ITEM_STATE,
        entities=[item],
        ttl=NO_TTL,
        schema=[
            Field(name="item_vector", dtype=vec, description="recommendation space (blended after warm-up)"),
            Field(name="status", dtype=String, description="cold | warming | warm | graduated"),
            Field(name="impressions", dtype=Int64),
            Field(name="clicks", dtype=Int64),
            Field(name="model_version", dtype=String),
            Field(name="state_updated_us", dtype=Int64, description="event_ts in epoch microseconds"),
        ],
        source=state_push,
        online=True,
        description="Warm-up state of an item",
    )
    user_vector = FeatureView(
        name=USER_VECTOR,
        entities=[user],
        ttl=NO_TTL,
        schema=[
            Field(name="user_vector", dtype=vec, description="recommendation space"),
            Field(name="interactions", dtype=Int64),
            Field(name="model_version", dtype=String),
            Field(name="user_updated_us", dtype=Int64, description="event_ts in epoch microseconds"),
        ],
        source=user_push,
        online=True,
        description="User vector in the recommendation space",
    )
    return Definitions(
        item=item,
        user=user,
        item_content_source=content_src,
        item_state_source=state_src,
        user_vector_source=user_src,
        item_content_push=content_push,
        item_state_push=state_push,
        user_vector_push=user_push,
        item_content=item_content,
        item_state=item_state,
        user_vector=user_vector,
    )
