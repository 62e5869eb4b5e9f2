"""The SQL source of raw transactions, reached through SQLAlchemy.

Any SQLAlchemy URL works (SQLite by default, PostgreSQL in production).  Table
and column names are configuration: ``column_map`` maps canonical names (see
``ml_assets.schema``) to the names in the user's table.  Every query is built
with SQLAlchemy Core, so identifiers are quoted by the dialect and values are
bound parameters, never formatted into SQL text.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from contextlib import contextmanager
from functools import cached_property
from pathlib import Path

import dagster as dg
import polars as pl
import sqlalchemy as sa
from pydantic import Field, PrivateAttr

from ml_assets.schema import DEFAULT_TABLE, RAW_COLUMNS, RAW_SCHEMA

_SA_TYPES: dict[str, sa.types.TypeEngine] = {
    "transaction_id": sa.BigInteger(),
    "customer_id": sa.String(64),
    "ts": sa.DateTime(),
    "amount": sa.Double(),
    "quantity": sa.Integer(),
    "channel": sa.String(16),
    "category": sa.String(32),
    "payment_method": sa.String(16),
}


class SourceSchemaError(ValueError):
    """The source table lacks a column the pipeline needs."""


class SqlWarehouse(dg.ConfigurableResource):
    """Raw transactions in a SQL database."""

    url: str = Field(description="SQLAlchemy URL of the source database. Set it through the CHURN_WAREHOUSE_URL env var.")
    table: str = Field(default=DEFAULT_TABLE, description="Name of the transactions table.")
    db_schema: str | None = Field(default=None, description="Database schema holding the table (PostgreSQL), if not the default.")
    column_map: dict[str, str] = Field(
        default_factory=dict,
        description="Canonical column name -> column name in your table, for the columns whose names differ.",
    )

    _engine: sa.Engine | None = PrivateAttr(default=None)

    def source_column(self, canonical: str) -> str:
        return self.column_map.get(canonical, canonical)

    @property
    def engine(self) -> sa.Engine:
        if self._engine is None:
            url = sa.make_url(self.url)
            if url.get_backend_name() == "sqlite" and url.database not in (None, "", ":memory:"):
                # The embedded default lives in a folder that may not exist yet.
                Path(url.database).parent.mkdir(parents=True, exist_ok=True)
            # pool_pre_ping: a connection dropped by a database restart is
            # replaced instead of failing the next query.
            self._engine = sa.create_engine(self.url, pool_pre_ping=True)
        return self._engine

    @contextmanager
    def connect(self) -> Iterator[sa.Connection]:
        with self.engine.connect() as conn:
            yield conn

    @cached_property
    def _table(self) -> sa.Table:
        metadata = sa.MetaData(schema=self.db_schema)
        cols = [
            sa.Column(self.source_column(name), _SA_TYPES[name], primary_key=(name == "transaction_id"), nullable=not required)
            for name, (_, required, _) in RAW_COLUMNS.items()
        ]
        table = sa.Table(self.table, metadata, *cols)
        sa.Index(f"ix_{self.table}_{self.source_column('ts')}", table.c[self.source_column("ts")])
        return table

    # --- reading -----------------------------------------------------------

    def check_source_columns(self) -> list[str]:
        """Raise when a required column is missing; return the optional ones that are."""
        present = {c["name"] for c in sa.inspect(self.engine).get_columns(self.table, schema=self.db_schema)}
        if not present:
            raise SourceSchemaError(f"table {self.table!r} does not exist in {self._safe_url()}")
        missing_required, missing_optional = [], []
        for name, (_, required, _) in RAW_COLUMNS.items():
            if self.source_column(name) not in present:
                (missing_required if required else missing_optional).append(name)
        if missing_required:
            detail = ", ".join(f"{n!r} (looked for column {self.source_column(n)!r})" for n in missing_required)
            raise SourceSchemaError(
                f"table {self.table!r} lacks required column(s) {detail}; found {sorted(present)}. "
                'Map your names with CHURN_COLUMN_MAP, e.g. \'{"ts": "created_at"}\'.'
            )
        return missing_optional

    def read_transactions(self, start: dt.datetime, end: dt.datetime) -> pl.DataFrame:
        """Rows with ``start <= ts < end``, in canonical column names."""
        missing_optional = self.check_source_columns()
        t = self._table
        wanted = [n for n in RAW_COLUMNS if n not in missing_optional]
        ts_col = t.c[self.source_column("ts")]
        stmt = (
            sa.select(*[t.c[self.source_column(n)].label(n) for n in wanted])
            .where(ts_col >= sa.bindparam("start", type_=sa.DateTime()), ts_col < sa.bindparam("end", type_=sa.DateTime()))
            .order_by(ts_col)
        )
        with self.connect() as conn:
            result = conn.execute(stmt, {"start": start, "end": end})
            rows = result.fetchall()
        columns = {n: [r[i] for r in rows] for i, n in enumerate(wanted)}
        # strict=False: a value of the wrong type becomes null here and is then
        # quarantined by validation, instead of failing the whole partition.
        frame = pl.DataFrame(columns, schema={n: RAW_SCHEMA[n] for n in wanted}, strict=False)
        for name in missing_optional:
            frame = frame.with_columns(pl.lit(None, dtype=RAW_SCHEMA[name]).alias(name))
        return frame.select(list(RAW_COLUMNS))

    # --- writing (used by the generator CLI, the demo and the tests) -------

    def create_table(self, replace: bool = False) -> None:
        with self.engine.begin() as conn:
            if replace:
                self._table.drop(conn, checkfirst=True)
            self._table.create(conn, checkfirst=True)

    def append(self, frame: pl.DataFrame, chunk_rows: int = 50_000) -> int:
        """Insert canonical-schema rows; returns the number written."""
        t = self._table
        renamed = frame.rename({n: self.source_column(n) for n in frame.columns if n in RAW_COLUMNS})
        written = 0
        with self.engine.begin() as conn:
            for chunk in renamed.iter_slices(chunk_rows):
                conn.execute(sa.insert(t), chunk.to_dicts())
                written += chunk.height
        return written

    def _safe_url(self) -> str:
        return sa.make_url(self.url).render_as_string(hide_password=True)
