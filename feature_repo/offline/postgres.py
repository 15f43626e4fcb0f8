"""Production offline store: PostgreSQL tables written through SQLAlchemy, read by Feast's PostgreSQLSource.

Feast 0.67's Postgres offline store cannot take pushes, so coldstart writes the tables itself with
``INSERT ... ON CONFLICT DO NOTHING`` on each table's key (idempotent under re-delivery). Vectors are
``real[]``, timestamps ``timestamptz``, decision candidates/slots/context ``jsonb``.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

import pandas as pd
from sqlalchemy import (
    BigInteger,
    Boolean,
    Column,
    DateTime,
    Double,
    Engine,
    Index,
    MetaData,
    PrimaryKeyConstraint,
    String,
    Table,
    cast,
    create_engine,
    select,
    text,
)
from sqlalchemy.dialects.postgresql import ARRAY, JSONB, REAL
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.types import TypeEngine, UserDefinedType

from coldstart.errors import StoreError
from feature_repo.offline.base import OfflineLog, Row, utc
from feature_repo.offline.tables import TABLES, ColumnKind, TableName, TableSpec


class PgVector(UserDefinedType[list[float]]):
    """``real[]`` bound as one array literal (``'{0.1,...}'::real[]``).

    psycopg's generic list dumper converts element by element in Python (≈1 ms per 512-d vector);
    the literal is built by ``repr`` in C and parsed by PostgreSQL. Rows read back as ``list[float]``.
    """

    cache_ok = True

    def get_col_spec(self, **kw: Any) -> str:
        return "REAL[]"

    def bind_processor(self, dialect: Any) -> Any:
        def process(value: Any) -> str | None:
            if value is None:
                return None
            return "{" + ",".join(map(repr, value)) + "}"

        return process

    def bind_expression(self, bindvalue: Any) -> Any:
        return cast(bindvalue, ARRAY(REAL))


_TYPES: dict[ColumnKind, Any] = {
    "str": String,
    "ts": DateTime(timezone=True),
    "vec": PgVector(),
    "bool": Boolean,
    "int": BigInteger,
    "float": Double,
    "json": JSONB,
}


def build_metadata(schema: str) -> tuple[MetaData, dict[str, Table]]:
    """SQLAlchemy tables for every offline table in ``schema``."""
    md = MetaData(schema=schema)
    tables: dict[str, Table] = {}
    for spec in TABLES.values():
        cols = [Column(c.name, _sqltype(c.kind), nullable=c.nullable) for c in spec.columns]
        tables[spec.name] = Table(spec.name, md, *cols, PrimaryKeyConstraint(*spec.key))
    for spec in TABLES.values():  # time-range scans of analysts and Feast
        Index(f"ix_{spec.name}_{spec.time_column}", tables[spec.name].c[spec.time_column])
    return md, tables


def _sqltype(kind: ColumnKind) -> TypeEngine[Any]:
    t = _TYPES[kind]
    return t() if isinstance(t, type) else t  # type: ignore[no-any-return]


class PostgresOfflineLog(OfflineLog):
    """PostgreSQL offline store (production store).

    Parameters
    ----------
    url
        SQLAlchemy URL, e.g. ``postgresql+psycopg://user:pw@host:5432/db``.
    schema
        Schema holding the tables; created (with the tables) if missing.
    """

    def __init__(self, url: str, schema: str, engine: Engine | None = None) -> None:
        self.schema = schema
        self.engine = engine or create_engine(url, pool_pre_ping=True, pool_size=4, max_overflow=4)
        self._md, self._tables = build_metadata(schema)
        self._stmts: dict[str, Any] = {}
        self.ensure_schema()

    def ensure_schema(self) -> None:
        """Create the schema and tables if they do not exist (safe to race with other processes)."""
        for attempt in range(3):
            try:
                with self.engine.begin() as conn:
                    # a transaction-level advisory lock serialises concurrent CREATEs across processes
                    conn.execute(
                        text("SELECT pg_advisory_xact_lock(hashtext(:s))"), {"s": f"cs:{self.schema}"}
                    )
                    conn.execute(text(f'CREATE SCHEMA IF NOT EXISTS "{self.schema}"'))
                    self._md.create_all(conn, checkfirst=True)
                return
            except SQLAlchemyError as exc:
                if attempt == 2:
                    raise StoreError(f"cannot create offline tables in schema {self.schema}: {exc}") from exc

    def _insert(self, spec: TableSpec, rows: list[Row]) -> int:
        if not rows:
            return 0
        table = self._tables[spec.name]
        stmt = self._stmts.get(spec.name)
        if stmt is None:
            # one cached statement, executed as executemany (SQLAlchemy batches it into multi-row
            # INSERTs); RETURNING counts the rows that were new
            stmt = self._stmts[spec.name] = (
                pg_insert(table)
                .on_conflict_do_nothing(index_elements=list(spec.key))
                .returning(table.c[spec.key[0]])
            )
        try:
            with self.engine.begin() as conn:
                return len(conn.execute(stmt, rows).fetchall())
        except SQLAlchemyError as exc:
            raise StoreError(f"cannot write {len(rows)} rows to offline table {spec.name}: {exc}") from exc

    def _read(self, spec: TableSpec, since: datetime | None, until: datetime | None) -> pd.DataFrame:
        table = self._tables[spec.name]
        q = select(table)
        tcol = table.c[spec.time_column]
        if since is not None:
            q = q.where(tcol >= since)
        if until is not None:
            q = q.where(tcol < until)
        try:
            with self.engine.connect() as conn:
                res = conn.execute(q)
                return pd.DataFrame(res.fetchall(), columns=list(res.keys()))
        except SQLAlchemyError as exc:
            raise StoreError(f"cannot read offline table {spec.name}: {exc}") from exc

    def distinct_ids(self, table: TableName, column: str) -> list[str]:
        """Sorted distinct values of an id column (``SELECT DISTINCT``)."""
        col = self._tables[table].c[column]
        try:
            with self.engine.connect() as conn:
                return sorted(str(v) for v in conn.execute(select(col).distinct()).scalars() if v is not None)
        except SQLAlchemyError as exc:
            raise StoreError(f"cannot read offline table {table}: {exc}") from exc

    def ids_written_since(self, table: TableName, column: str, since: datetime) -> list[str]:
        """Sorted distinct ids of the rows with ``created_ts >= since`` (``SELECT DISTINCT ... WHERE``)."""
        t = self._tables[table]
        q = select(t.c[column]).where(t.c.created_ts >= utc(since, "since")).distinct()
        try:
            with self.engine.connect() as conn:
                return sorted(str(v) for v in conn.execute(q).scalars() if v is not None)
        except SQLAlchemyError as exc:
            raise StoreError(f"cannot read offline table {table}: {exc}") from exc

    def drop_schema(self) -> None:
        """Drop the schema and everything in it (tests, tear-down)."""
        with self.engine.begin() as conn:
            conn.execute(text(f'DROP SCHEMA IF EXISTS "{self.schema}" CASCADE'))

    def close(self) -> None:
        """Dispose of the connection pool."""
        self.engine.dispose()
