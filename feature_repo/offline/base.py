"""The offline store: typed writers and readers over the tables in :mod:`feature_repo.offline.tables`.

Writers deduplicate on each table's key (re-delivered events never duplicate history) and return the
number of rows that were new. Readers return typed records or, for analysts, pandas DataFrames.
Implementations: :class:`~feature_repo.offline.parquet.ParquetOfflineLog` (embedded; DuckDB-queryable
parquet) and :class:`~feature_repo.offline.postgres.PostgresOfflineLog` (production).
"""

from __future__ import annotations

import json
import math
from abc import ABC, abstractmethod
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np
import pandas as pd

from coldstart.decisions import Decision
from coldstart.errors import InvalidInputError
from feature_repo.offline.tables import (
    DECISION_SLOTS_TABLE,
    DECISIONS_TABLE,
    INTERACTIONS_TABLE,
    ITEM_CONTENT_TABLE,
    ITEM_STATE_TABLE,
    TABLES,
    USER_VECTOR_TABLE,
    TableName,
    TableSpec,
)
from feature_repo.records import InteractionLike, InteractionRecord, StoredItem, StoredUser

Row = dict[str, Any]
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def utc(value: datetime, param: str) -> datetime:
    """``value`` converted to UTC; naive datetimes are rejected (they are ambiguous)."""
    if value.tzinfo is None or value.utcoffset() is None:
        raise InvalidInputError(param, value, "must be timezone-aware")
    return value.astimezone(UTC)


def epoch_us(value: datetime) -> int:
    """Microseconds since the Unix epoch of a tz-aware datetime (exact, no float rounding)."""
    delta = value - _EPOCH
    return (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds


def from_epoch_us(us: int) -> datetime:
    """Inverse of :func:`epoch_us` (UTC)."""
    return _EPOCH + timedelta(microseconds=int(us))


def _vec(value: Any, param: str) -> list[float]:
    arr = np.asarray(value, dtype=np.float32).reshape(-1)
    if arr.size == 0 or not bool(np.isfinite(arr).all()):
        raise InvalidInputError(param, f"<vector of {arr.size}>", "must be a non-empty finite vector")
    out: list[float] = arr.tolist()
    return out


def content_row(item: StoredItem, created: datetime) -> Row:
    """The ``item_content`` row of ``item`` (``content_item_vector`` defaults to ``item_vector``)."""
    cvec = item.content_item_vector if item.content_item_vector is not None else item.item_vector
    ts = utc(item.updated_at, f"items[{item.item_id}].updated_at")
    return {
        "item_id": item.item_id,
        "event_ts": ts,
        "created_ts": created,
        "content_vector": _vec(item.content_vector, f"items[{item.item_id}].content_vector"),
        "content_item_vector": _vec(cvec, f"items[{item.item_id}].content_item_vector"),
        "image_ok": bool(item.image_ok),
        "text_ok": bool(item.text_ok),
        "encoder_version": item.encoder_version,
        "listed_at": utc(item.listed_at, f"items[{item.item_id}].listed_at"),
        "category": item.category,
        "seller_id": item.seller_id,
        "content_updated_us": epoch_us(ts),
    }


def state_row(item: StoredItem, created: datetime) -> Row:
    """The ``item_state`` row of ``item``."""
    ts = utc(item.updated_at, f"items[{item.item_id}].updated_at")
    return {
        "item_id": item.item_id,
        "event_ts": ts,
        "created_ts": created,
        "item_vector": _vec(item.item_vector, f"items[{item.item_id}].item_vector"),
        "status": item.status,
        "impressions": int(item.impressions),
        "clicks": int(item.clicks),
        "model_version": item.model_version,
        "encoder_version": item.encoder_version,
        "state_updated_us": epoch_us(ts),
    }


def user_row(user: StoredUser, created: datetime) -> Row:
    """The ``user_vector`` row of ``user``."""
    ts = utc(user.updated_at, f"users[{user.user_id}].updated_at")
    return {
        "user_id": user.user_id,
        "event_ts": ts,
        "created_ts": created,
        "user_vector": _vec(user.vector, f"users[{user.user_id}].vector"),
        "interactions": int(user.interactions),
        "model_version": user.model_version,
        "user_updated_us": epoch_us(ts),
    }


def _decision_rows(d: Decision, created: datetime) -> tuple[Row, list[Row]]:
    ts = utc(d.ts, f"decisions[{d.decision_id}].ts")
    first = {c.item_id: c.probability for c in d.candidates}
    row = {
        "decision_id": d.decision_id,
        "ts": ts,
        "created_ts": created,
        "user_id": d.user_id,
        "policy": d.policy,
        "model_version": d.model_version,
        "schema_version": d.schema_version,
        "n_candidates": len(d.candidates),
        "n_slots": len(d.slots),
        "context": dict(d.context),
        "candidates": [c.model_dump() for c in d.candidates],
        "slots": [s.model_dump() for s in d.slots],
    }
    slots = [
        {
            "decision_id": d.decision_id,
            "position": s.position,
            "ts": ts,
            "created_ts": created,
            "user_id": d.user_id,
            "item_id": s.item_id,
            "propensity": s.propensity,
            "score": s.score,
            "first_slot_probability": first.get(s.item_id),
            "n_candidates": len(d.candidates),
            "policy": d.policy,
            "model_version": d.model_version,
        }
        for s in d.slots
    ]
    return row, slots


def _interaction_row(i: InteractionLike, created: datetime, default_version: int) -> Row:
    value = None if i.value is None else float(i.value)
    if value is not None and not math.isfinite(value):
        raise InvalidInputError(f"interactions[{i.event_id}].value", i.value, "must be finite")
    return {
        "event_id": i.event_id,
        "ts": utc(i.ts, f"interactions[{i.event_id}].ts"),
        "created_ts": created,
        "user_id": i.user_id,
        "item_id": i.item_id,
        "kind": str(i.kind),
        "value": value,
        "decision_id": i.decision_id,
        "position": i.position,
        "schema_version": int(getattr(i, "schema_version", default_version)),
    }


def _json(value: Any) -> Any:
    return json.loads(value) if isinstance(value, str) else value


def _opt(value: Any) -> Any:
    """``None`` for SQL NULL / pandas NaN / NaT / NA, the value otherwise."""
    if value is None:
        return None
    try:
        return None if bool(pd.isna(value)) else value
    except (TypeError, ValueError):
        return value


class OfflineLog(ABC):
    """Append-only, deduplicated offline history (see :mod:`feature_repo.offline.tables`)."""

    # -- writers --------------------------------------------------------------------------------
    def write_item_content(self, items: Sequence[StoredItem]) -> int:
        """Append content rows (key ``(item_id, updated_at)``); returns how many were new."""
        now = datetime.now(UTC)
        return self._insert(ITEM_CONTENT_TABLE, [content_row(i, now) for i in items])

    def write_item_states(self, items: Sequence[StoredItem]) -> int:
        """Append warm-up state rows (key ``(item_id, updated_at)``); returns how many were new."""
        now = datetime.now(UTC)
        return self.write_state_rows([state_row(i, now) for i in items])

    def write_state_rows(self, rows: list[Row]) -> int:
        """Append ``item_state`` rows :func:`state_row` built (a writer that sends the same rows
        online builds them once)."""
        return self._insert(ITEM_STATE_TABLE, rows)

    def write_user_rows(self, rows: list[Row]) -> int:
        """Append ``user_vector`` rows :func:`user_row` built (key ``(user_id, updated_at)``; the writer
        sends the same rows online); returns how many were new."""
        return self._insert(USER_VECTOR_TABLE, rows)

    def write_decisions(self, decisions: Sequence[Decision]) -> int:
        """Append decisions (key ``decision_id``) and their slots; returns how many decisions were new."""
        now = datetime.now(UTC)
        rows: list[Row] = []
        slot_rows: list[Row] = []
        for d in decisions:
            row, slots = _decision_rows(d, now)
            rows.append(row)
            slot_rows.extend(slots)
        # slots first: a crash in between is healed by the retry, which re-inserts the decision
        self._insert(DECISION_SLOTS_TABLE, slot_rows)
        return self._insert(DECISIONS_TABLE, rows)

    def write_interactions(self, interactions: Sequence[InteractionLike], schema_version: int = 1) -> int:
        """Append interactions (key ``event_id``); returns how many were new.

        ``schema_version`` is stored for records that carry none (stream events carry their own).
        """
        now = datetime.now(UTC)
        return self._insert(
            INTERACTIONS_TABLE, [_interaction_row(i, now, schema_version) for i in interactions]
        )

    # -- readers --------------------------------------------------------------------------------
    def frame(
        self, table: TableName, since: datetime | None = None, until: datetime | None = None
    ) -> pd.DataFrame:
        """Rows of ``table`` with ``since <= time_column < until``, ordered by it (analysts' entry point).

        Vectors are lists of floats, timestamps tz-aware UTC, JSON columns parsed.
        """
        spec = TABLES.get(table)
        if spec is None:
            raise InvalidInputError("table", table, f"must be one of {sorted(TABLES)}")
        lo = utc(since, "since") if since is not None else None
        hi = utc(until, "until") if until is not None else None
        df = self._read(spec, lo, hi)
        for c in spec.columns:
            if c.kind == "json" and c.name in df.columns:
                df[c.name] = [_json(v) for v in df[c.name]]
            if c.kind == "ts" and c.name in df.columns:
                df[c.name] = pd.to_datetime(df[c.name], utc=True)
        return df.sort_values([spec.time_column, *spec.key], kind="stable").reset_index(drop=True)

    def read_decisions(self, since: datetime | None = None, until: datetime | None = None) -> list[Decision]:
        """Decisions with ``since <= ts < until`` as :class:`~coldstart.decisions.Decision`, by time."""
        df = self.frame("decisions", since, until)
        out: list[Decision] = []
        for r in df.itertuples(index=False):
            out.append(
                Decision(
                    schema_version=int(r.schema_version),
                    decision_id=str(r.decision_id),
                    ts=r.ts.to_pydatetime(),
                    user_id=str(r.user_id),
                    context=r.context or {},
                    policy=str(r.policy),
                    model_version=str(r.model_version),
                    candidates=r.candidates,
                    slots=r.slots,
                )
            )
        return out

    def read_interactions(
        self, since: datetime | None = None, until: datetime | None = None
    ) -> list[InteractionRecord]:
        """Interactions with ``since <= ts < until`` as :class:`InteractionRecord`, by time."""
        df = self.frame("interactions", since, until)
        return [
            InteractionRecord(
                event_id=str(r.event_id),
                user_id=str(r.user_id),
                item_id=str(r.item_id),
                kind=str(r.kind),
                ts=r.ts.to_pydatetime(),
                value=None if _opt(r.value) is None else float(r.value),
                decision_id=None if _opt(r.decision_id) is None else str(r.decision_id),
                position=None if _opt(r.position) is None else int(r.position),
            )
            for r in df.itertuples(index=False)
        ]

    def distinct_ids(self, table: TableName, column: str) -> list[str]:
        """Sorted distinct values of an id column (e.g. every ``item_id`` ever written)."""
        df = self.frame(table)
        return sorted({str(v) for v in df[column]})

    def ids_written_since(self, table: TableName, column: str, since: datetime) -> list[str]:
        """Sorted distinct values of an id column among the rows written (``created_ts``) at or after
        ``since``: what changed since then (every writer writes its rows here before it writes them
        online). Backends override it to avoid reading the whole table."""
        spec = TABLES.get(table)
        if spec is None:
            raise InvalidInputError("table", table, f"must be one of {sorted(TABLES)}")
        df = self._read(spec, None, None)
        written = pd.to_datetime(df["created_ts"], utc=True) >= pd.Timestamp(utc(since, "since"))
        return sorted({str(v) for v in df.loc[written, column] if v is not None})

    @staticmethod
    def tables() -> Iterable[str]:
        """Names of the offline tables."""
        return TABLES.keys()

    # -- implementation -------------------------------------------------------------------------
    @abstractmethod
    def _insert(self, spec: TableSpec, rows: list[Row]) -> int:
        """Insert rows whose key is not stored yet (atomically per call); return how many were new."""

    @abstractmethod
    def _read(self, spec: TableSpec, since: datetime | None, until: datetime | None) -> pd.DataFrame:
        """Every stored row of ``spec`` with ``since <= time_column < until`` (either bound optional)."""

    @abstractmethod
    def close(self) -> None:
        """Release connections."""
