"""Schemas of the offline tables, shared by the parquet and PostgreSQL implementations.

Every table carries the version of the model that produced its rows (``encoder_version`` /
``model_version``) and a ``created_ts`` (when coldstart wrote the row). The feature tables also hold
``*_updated_us`` = ``event_ts`` in epoch microseconds: a feature, because Feast's online stores keep
timestamps to the second only. Rows are deduplicated on the
table's key, so re-delivered events never create duplicate history.

=================  ============================  ==========================================================
table              key                           content
=================  ============================  ==========================================================
item_content       (item_id, event_ts)           content embedding history (Feast view ``item_content``)
item_state         (item_id, event_ts)           warm-up state history (Feast view ``item_state``)
user_vector        (user_id, event_ts)           user vector history (Feast view ``user_vector``)
decisions          (decision_id)                 one row per exploration decision, candidates/slots as JSON
decision_slots     (decision_id, position)       one row per filled slot (flat, for obp / VW exports)
interactions       (event_id)                    impressions, clicks, ... as they arrived on the stream
=================  ============================  ==========================================================
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import pyarrow as pa

ColumnKind = Literal["str", "ts", "vec", "bool", "int", "float", "json"]


@dataclass(frozen=True)
class Column:
    """One column: ``kind`` maps to parquet and PostgreSQL types; ``nullable`` only for optional data."""

    name: str
    kind: ColumnKind
    nullable: bool = False


@dataclass(frozen=True)
class TableSpec:
    """An offline table: its columns, its dedupe key and the column ``since``/``until`` filter on."""

    name: str
    columns: tuple[Column, ...]
    key: tuple[str, ...]
    time_column: str

    @property
    def column_names(self) -> list[str]:
        """Column names in storage order."""
        return [c.name for c in self.columns]

    def arrow_schema(self) -> pa.Schema:
        """The parquet schema (vectors ``list<float32>``, timestamps ``timestamp[us, UTC]``, JSON as text)."""
        types: dict[ColumnKind, pa.DataType] = {
            "str": pa.string(),
            "ts": pa.timestamp("us", tz="UTC"),
            "vec": pa.list_(pa.float32()),
            "bool": pa.bool_(),
            "int": pa.int64(),
            "float": pa.float64(),
            "json": pa.string(),
        }
        return pa.schema([pa.field(c.name, types[c.kind], nullable=c.nullable) for c in self.columns])


def _c(name: str, kind: ColumnKind, nullable: bool = False) -> Column:
    return Column(name, kind, nullable)


ITEM_CONTENT_TABLE = TableSpec(
    name="item_content",
    columns=(
        _c("item_id", "str"),
        _c("event_ts", "ts"),
        _c("created_ts", "ts"),
        _c("content_vector", "vec"),
        _c("content_item_vector", "vec"),
        _c("image_ok", "bool"),
        _c("text_ok", "bool"),
        _c("encoder_version", "str"),
        _c("listed_at", "ts"),
        _c("category", "str"),
        _c("seller_id", "str"),
        _c("content_updated_us", "int"),
    ),
    key=("item_id", "event_ts"),
    time_column="event_ts",
)
ITEM_STATE_TABLE = TableSpec(
    name="item_state",
    columns=(
        _c("item_id", "str"),
        _c("event_ts", "ts"),
        _c("created_ts", "ts"),
        _c("item_vector", "vec"),
        _c("status", "str"),
        _c("impressions", "int"),
        _c("clicks", "int"),
        _c("model_version", "str"),
        _c("encoder_version", "str"),
        _c("state_updated_us", "int"),
    ),
    key=("item_id", "event_ts"),
    time_column="event_ts",
)
USER_VECTOR_TABLE = TableSpec(
    name="user_vector",
    columns=(
        _c("user_id", "str"),
        _c("event_ts", "ts"),
        _c("created_ts", "ts"),
        _c("user_vector", "vec"),
        _c("interactions", "int"),
        _c("model_version", "str"),
        _c("user_updated_us", "int"),
    ),
    key=("user_id", "event_ts"),
    time_column="event_ts",
)
DECISIONS_TABLE = TableSpec(
    name="decisions",
    columns=(
        _c("decision_id", "str"),
        _c("ts", "ts"),
        _c("created_ts", "ts"),
        _c("user_id", "str"),
        _c("policy", "str"),
        _c("model_version", "str"),
        _c("schema_version", "int"),
        _c("n_candidates", "int"),
        _c("n_slots", "int"),
        _c("context", "json"),
        _c("candidates", "json"),
        _c("slots", "json"),
    ),
    key=("decision_id",),
    time_column="ts",
)
DECISION_SLOTS_TABLE = TableSpec(
    name="decision_slots",
    columns=(
        _c("decision_id", "str"),
        _c("position", "int"),
        _c("ts", "ts"),
        _c("created_ts", "ts"),
        _c("user_id", "str"),
        _c("item_id", "str"),
        _c("propensity", "float"),
        _c("score", "float"),
        _c("first_slot_probability", "float", nullable=True),
        _c("n_candidates", "int"),
        _c("policy", "str"),
        _c("model_version", "str"),
    ),
    key=("decision_id", "position"),
    time_column="ts",
)
INTERACTIONS_TABLE = TableSpec(
    name="interactions",
    columns=(
        _c("event_id", "str"),
        _c("ts", "ts"),
        _c("created_ts", "ts"),
        _c("user_id", "str"),
        _c("item_id", "str"),
        _c("kind", "str"),
        _c("value", "float", nullable=True),
        _c("decision_id", "str", nullable=True),
        _c("position", "int", nullable=True),
        _c("schema_version", "int"),
    ),
    key=("event_id",),
    time_column="ts",
)

TABLES: dict[str, TableSpec] = {
    t.name: t
    for t in (
        ITEM_CONTENT_TABLE,
        ITEM_STATE_TABLE,
        USER_VECTOR_TABLE,
        DECISIONS_TABLE,
        DECISION_SLOTS_TABLE,
        INTERACTIONS_TABLE,
    )
}
TableName = Literal[
    "item_content", "item_state", "user_vector", "decisions", "decision_slots", "interactions"
]
