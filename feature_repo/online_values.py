"""Values between coldstart's records and Feast's online stores: proto conversion, per-view column
kinds, the precise event time of a row, and the newest-row-per-key rule of every write."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

import numpy as np
import pandas as pd
from feast.protos.feast.types.Value_pb2 import FloatList
from feast.protos.feast.types.Value_pb2 import Value as ValueProto
from numpy.typing import NDArray

from coldstart.errors import InvalidInputError
from feature_repo.definitions import (
    CONTENT_FEATURES,
    ITEM_CONTENT,
    ITEM_STATE,
    STATE_FEATURES,
    USER_FEATURES,
    USER_VECTOR,
)
from feature_repo.offline.base import from_epoch_us, utc
from feature_repo.offline.tables import ITEM_CONTENT_TABLE, ITEM_STATE_TABLE, USER_VECTOR_TABLE, ColumnKind

EPOCH = datetime.fromtimestamp(0, tz=UTC)


def f32(value: Any) -> NDArray[np.float32]:
    return np.asarray(value, dtype=np.float32)


def as_utc(value: Any) -> datetime | None:
    if value is None:
        return None
    if isinstance(value, datetime):
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)
    if isinstance(value, int | float):
        return datetime.fromtimestamp(float(value), tz=UTC)
    ts = pd.Timestamp(value)
    out: datetime = (ts.tz_localize(UTC) if ts.tzinfo is None else ts.tz_convert(UTC)).to_pydatetime()
    return out


def same_vec(a: NDArray[np.float32] | None, b: NDArray[np.float32] | None) -> bool:
    if a is None or b is None:
        return a is b
    return a.shape == b.shape and bool(np.array_equal(a, b))


def precise_ts(us: Any, fallback: datetime | None) -> datetime:
    """The row's event time: the microsecond feature, else the store's (whole-second) event ts."""
    if us is not None:
        return from_epoch_us(int(us))
    return fallback or EPOCH


def same_second(a: datetime, b: datetime) -> bool:
    """Feast's UnixTimestamp features keep whole seconds: compare at that precision."""
    return int(a.timestamp()) == int(b.timestamp())


def latest_per_key(items: Sequence[Any], key: str) -> list[Any]:
    best: dict[str, Any] = {}
    for it in items:
        k = getattr(it, key)
        if k in best and utc(best[k].updated_at, "updated_at") > utc(it.updated_at, "updated_at"):
            continue
        best[k] = it
    return list(best.values())


def checked_latest(rows: Sequence[Any], key: str) -> list[Any]:
    """The newest row per ``key`` (``item_id`` or ``user_id``); a row with an empty key is refused."""
    for r in rows:
        if not getattr(r, key):
            raise InvalidInputError(f"{key[:-3]}s[].{key}", getattr(r, key), "must be a non-empty string")
    return latest_per_key(rows, key)


# -- proto conversion (the online stores speak Feast's ValueProto) ---------------------------------
def to_proto(kind: ColumnKind, value: Any) -> ValueProto:
    if value is None:
        return ValueProto()
    if kind == "vec":
        return ValueProto(float_list_val=FloatList(val=value))
    if kind == "bool":
        return ValueProto(bool_val=bool(value))
    if kind == "int":
        return ValueProto(int64_val=int(value))
    if kind == "ts":
        return ValueProto(unix_timestamp_val=int(value.timestamp()))
    return ValueProto(string_val=str(value))


def from_proto(v: ValueProto) -> Any:
    which = v.WhichOneof("val")
    if which is None or which == "null_val":
        return None
    if which == "float_list_val":
        return np.asarray(v.float_list_val.val, dtype=np.float32)
    if which == "unix_timestamp_val":
        return datetime.fromtimestamp(v.unix_timestamp_val, tz=UTC)
    return getattr(v, which)


KINDS: dict[str, dict[str, ColumnKind]] = {
    ITEM_CONTENT: {c.name: c.kind for c in ITEM_CONTENT_TABLE.columns},
    ITEM_STATE: {c.name: c.kind for c in ITEM_STATE_TABLE.columns},
    USER_VECTOR: {c.name: c.kind for c in USER_VECTOR_TABLE.columns},
}
FEATURES: dict[str, tuple[str, ...]] = {
    ITEM_CONTENT: CONTENT_FEATURES,
    ITEM_STATE: STATE_FEATURES,
    USER_VECTOR: USER_FEATURES,
}
