"""The SQL source of raw transactions, reached through SQLAlchemy.

Any SQLAlchemy URL works (SQLite by default, PostgreSQL in production).  Table
and column names are configuration: ``column_map`` maps canonical names (see
``ml_assets.schema``) to the names in the user's table.  Every query is built
with SQLAlchemy Core, so identifiers are quoted by the dialect and values are
bound parameters, never formatted into SQL text.
"""

from __future__ import annotations

import datetime as dt
import decimal
import json
import math
import re
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any

import dagster as dg
import polars as pl
from pydantic import Field, PrivateAttr, ValidationInfo, field_validator

from ml_assets.schema import DEFAULT_TABLE, RAW_COLUMNS, RAW_SCHEMA

if TYPE_CHECKING:
    # Imported lazily at run time: loading the code location should not pay for it.
    import sqlalchemy as sa


def _sa_types() -> dict[str, sa.types.TypeEngine]:
    """Column types of the table the generator creates (canonical names)."""
    import sqlalchemy as sa

    return {
        "transaction_id": sa.BigInteger(),
        "customer_id": sa.String(64),
        "ts": sa.DateTime(),
        "amount": sa.Double(),
        "quantity": sa.Integer(),
        "channel": sa.String(16),
        "category": sa.String(32),
        "payment_method": sa.String(16),
    }


class SourceUnavailableError(ConnectionError):
    """The source database could not be reached, or dropped the connection mid-read (retried by the ingest step)."""


class SourceSchemaError(ValueError):
    """The source table lacks a column the pipeline needs, or has it with the wrong type."""


TYPE_ERRORS = "_type_errors"

_EXPECTED_FAMILY = {
    "transaction_id": "an integer type",
    "customer_id": "a string type",
    "ts": "a timestamp type",
    "amount": "a numeric type",
    "quantity": "an integer type",
    "channel": "a string type",
    "category": "a string type",
    "payment_method": "a string type",
}


@dataclass(frozen=True)
class SourceColumns:
    missing_optional: list[str]
    extra: list[str]


def _compatible(name: str, declared: sa.types.TypeEngine) -> bool:
    import sqlalchemy as sa

    if isinstance(declared, sa.types.NullType):
        return True  # SQLite without a declared type: checked per value instead
    family = _EXPECTED_FAMILY[name]
    if family == "an integer type":
        return isinstance(declared, sa.Integer)
    if family == "a numeric type":
        return isinstance(declared, sa.Integer | sa.Numeric | sa.Float)
    if family == "a timestamp type":
        return isinstance(declared, sa.DateTime | sa.TIMESTAMP)
    return isinstance(declared, sa.String | sa.Text | sa.Enum)


def _convert(values: list[object], name: str) -> tuple[pl.Series, list[tuple[int, str]]]:
    """Cast one column to its canonical type; return the rows whose value did not fit.

    A value that does not fit becomes null in the typed column; its original
    text goes back to the caller, so the row can be quarantined with it.
    """
    dtype = RAW_SCHEMA[name]
    fast = _fast_path(values, name, dtype)
    if fast is not None:
        return fast, []
    if name == "ts":
        accept: Callable[[object], object] = _utc_naive
    elif dtype == pl.String():
        accept = _text
    elif dtype.is_integer():
        accept = _integer
    else:
        accept = _number
    clean: list[object] = []
    bad: list[tuple[int, str]] = []
    for i, value in enumerate(values):
        converted = None if value is None else accept(value)
        if value is not None and converted is _REJECT:
            bad.append((i, str(value)[:200]))
            converted = None
        clean.append(converted)
    return pl.Series(name, clean, dtype=dtype), bad


_REJECT = object()
# How SQLAlchemy writes DateTime values into SQLite: the common case, parsed vectorized.
_SQLITE_TS_FORMAT = "%Y-%m-%d %H:%M:%S%.f"


def _fast_path(values: list[object], name: str, dtype: pl.DataType) -> pl.Series | None:
    """Vectorized conversion when every value already has the expected form.

    Clean data (the common case) never pays for the per-value path; any
    surprise (a string in a numeric column, an offset on a timestamp) makes
    this return None and the careful path decides value by value.
    """
    try:
        if name == "ts":
            series = pl.Series(name, values, strict=True)
            if series.dtype == pl.String:
                parsed = series.str.to_datetime(_SQLITE_TS_FORMAT, time_unit="us", strict=True)
                return parsed if parsed.null_count() == series.null_count() else None
            if series.dtype == pl.Datetime("us") or (series.dtype == pl.Datetime and series.dtype.time_zone is None):
                return series.cast(pl.Datetime("us"))
            return None
        if dtype.is_numeric():
            series = pl.Series(name, values, strict=True)
            if not series.dtype.is_numeric() and series.dtype != pl.Null:
                return None
            if dtype.is_integer() and series.dtype.is_float():
                return None  # fractional counts need the careful path
            return series.cast(dtype, strict=True)
        series = pl.Series(name, values, strict=True)
        return series.cast(dtype) if series.dtype in (pl.String, pl.Null) else None
    except (TypeError, ValueError, OverflowError, pl.exceptions.PolarsError):
        return None


def _text(value: object) -> object:
    if isinstance(value, bytes):
        return value.decode("utf-8", "backslashreplace")
    return value if isinstance(value, str) else str(value)


def _number(value: object) -> object:
    if isinstance(value, bool):
        return _REJECT
    if isinstance(value, int | float):
        return float(value)
    if isinstance(value, decimal.Decimal):
        return float(value)
    if isinstance(value, str | bytes):
        try:
            return float(value)
        except ValueError:
            return _REJECT
    return _REJECT


def _integer(value: object) -> object:
    number = _number(value)
    if number is _REJECT or not math.isfinite(number) or not float(number).is_integer():  # type: ignore[arg-type]
        return _REJECT
    return int(value) if isinstance(value, int) else int(number)  # type: ignore[arg-type]


def _utc_naive(value: object) -> object:
    if isinstance(value, str):
        try:
            value = dt.datetime.fromisoformat(value)
        except ValueError:
            return _REJECT
    if not isinstance(value, dt.datetime):
        return _REJECT
    if value.tzinfo is not None:
        return value.astimezone(dt.UTC).replace(tzinfo=None)
    return value


def _lenient_sqlite_text(dbapi_connection: object, _record: object) -> None:
    dbapi_connection.text_factory = lambda raw: raw.decode("utf-8", "backslashreplace")  # type: ignore[attr-defined]


# Letters, digits, underscore and $ (PostgreSQL allows it), not starting with a
# digit, at most 63 characters (PostgreSQL's limit): what unquoted SQL accepts.
_IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_$]{0,62}")


def check_identifier(name: str, what: str) -> str:
    """Reject a table, schema or column name that is not a plain SQL identifier."""
    if not isinstance(name, str) or not _IDENTIFIER.fullmatch(name):
        raise ValueError(f"{what} {name!r} is not a plain SQL identifier (letters, digits, _ or $, not starting with a digit, at most 63 characters)")
    return name


class SqlWarehouse(dg.ConfigurableResource):
    """Raw transactions in a SQL database."""

    url: str = Field(description="SQLAlchemy URL of the source database. Set it through the CHURN_WAREHOUSE_URL env var.")
    table: str = Field(default=DEFAULT_TABLE, description="Name of the transactions table.")
    db_schema: str | None = Field(default=None, description="Database schema holding the table (PostgreSQL), if not the default.")
    column_map: dict[str, str] = Field(
        default_factory=dict,
        description="Canonical column name -> column name in your table, for the columns whose names differ.",
    )

    _engine: Any = PrivateAttr(default=None)  # sqlalchemy.Engine, created on first use

    # Identifiers are quoted by SQLAlchemy, so this is defence in depth: a
    # configuration typo or a hostile value fails at load time with the
    # offending name, long before it could reach a database.
    @field_validator("table", "db_schema")
    @classmethod
    def _plain_identifier(cls, value: str | None, info: ValidationInfo) -> str | None:
        if value is not None:
            check_identifier(value, info.field_name or "identifier")
        return value

    @field_validator("column_map")
    @classmethod
    def _known_columns(cls, value: dict[str, str]) -> dict[str, str]:
        unknown = sorted(set(value) - set(RAW_COLUMNS))
        if unknown:
            raise ValueError(f"column_map maps unknown canonical column(s) {unknown}; canonical columns are {list(RAW_COLUMNS)}")
        for canonical, source in value.items():
            check_identifier(source, f"column for {canonical!r}")
        if len(set(value.values())) != len(value):
            raise ValueError(f"column_map maps two canonical columns to the same source column: {value}")
        return value

    def source_column(self, canonical: str) -> str:
        return self.column_map.get(canonical, canonical)

    @property
    def engine(self) -> sa.Engine:
        import sqlalchemy as sa

        if self._engine is None:
            url = sa.make_url(self.url)
            if url.get_backend_name() == "sqlite" and url.database not in (None, "", ":memory:"):
                # The embedded default lives in a folder that may not exist yet.
                Path(url.database).parent.mkdir(parents=True, exist_ok=True)
            # pool_pre_ping: a connection dropped by a database restart is
            # replaced instead of failing the next query.
            self._engine = sa.create_engine(self.url, pool_pre_ping=True)
            if url.get_backend_name() == "sqlite":
                # SQLite stores whatever bytes it is given; bytes that are not
                # UTF-8 would fail the whole fetch. Decode them visibly instead
                # (\\xff) so the row reaches validation and is quarantined.
                sa.event.listen(self._engine, "connect", _lenient_sqlite_text)
        return self._engine

    @contextmanager
    def connect(self) -> Iterator[sa.Connection]:
        """A connection; a database that is down or drops the connection raises SourceUnavailableError (password hidden)."""
        import sqlalchemy as sa

        try:
            with self.engine.connect() as conn:
                yield conn
        except (sa.exc.OperationalError, sa.exc.InterfaceError) as exc:
            # The DBAPI message says what happened (refused, closed unexpectedly) without the password.
            detail = str(exc.orig).strip().splitlines()[0] if exc.orig is not None else type(exc).__name__
            raise SourceUnavailableError(f"source database {self._safe_url()} is unavailable: {detail}") from exc

    @cached_property
    def _table(self) -> sa.Table:
        import sqlalchemy as sa

        metadata = sa.MetaData(schema=self.db_schema)
        cols = [
            sa.Column(self.source_column(name), _sa_types()[name], primary_key=(name == "transaction_id"), nullable=not required)
            for name, (_, required, _) in RAW_COLUMNS.items()
        ]
        table = sa.Table(self.table, metadata, *cols)
        sa.Index(f"ix_{self.table}_{self.source_column('ts')}", table.c[self.source_column("ts")])
        return table

    # --- reading -----------------------------------------------------------

    def inspect_source(self) -> SourceColumns:
        """Check the table's columns against the raw schema before reading.

        A missing (or renamed) required column, or a column whose declared type
        cannot hold the canonical type, fails with the column named.  Extra
        columns are reported and ignored.
        """
        import sqlalchemy as sa

        try:
            with self.connect() as conn:
                columns = sa.inspect(conn).get_columns(self.table, schema=self.db_schema)
        except sa.exc.NoSuchTableError as exc:
            raise SourceSchemaError(f"table {self.table!r} does not exist in {self._safe_url()}") from exc
        present = {c["name"]: c["type"] for c in columns}
        if not present:
            raise SourceSchemaError(f"table {self.table!r} does not exist in {self._safe_url()}")
        missing_required, missing_optional, wrong_type = [], [], []
        for name, (_, required, _) in RAW_COLUMNS.items():
            source = self.source_column(name)
            if source not in present:
                (missing_required if required else missing_optional).append(name)
            elif not _compatible(name, present[source]):
                wrong_type.append(f"{source!r} is {present[source]}, expected {_EXPECTED_FAMILY[name]}")
        if missing_required:
            detail = ", ".join(f"{n!r} (looked for column {self.source_column(n)!r})" for n in missing_required)
            raise SourceSchemaError(
                f"table {self.table!r} lacks required column(s) {detail}; found {sorted(present)}. "
                'If a column was renamed, map it with CHURN_COLUMN_MAP, e.g. \'{"ts": "created_at"}\'.'
            )
        if wrong_type:
            raise SourceSchemaError(f"table {self.table!r} has column(s) of the wrong type: {'; '.join(wrong_type)}")
        mapped = {self.source_column(n) for n in RAW_COLUMNS}
        return SourceColumns(missing_optional=missing_optional, extra=sorted(set(present) - mapped))

    def read_transactions(self, start: dt.datetime, end: dt.datetime, source: SourceColumns | None = None) -> pl.DataFrame:
        """Rows with ``start <= ts < end``, in canonical column names.

        Values are read untyped and converted here: a value that is not of its
        column's type (SQLite stores anything anywhere) becomes null and its
        original text is kept in ``_type_errors``, so validation quarantines
        the row with the value intact instead of failing the partition.
        Timestamps with a UTC offset are converted to naive UTC. Pass the
        result of ``inspect_source`` when the caller already has it.
        """
        import sqlalchemy as sa

        source = source or self.inspect_source()
        wanted = [n for n in RAW_COLUMNS if n not in source.missing_optional]
        # Untyped columns: no driver-side conversion that could raise on one bad value.
        t = sa.table(self.table, *[sa.column(self.source_column(n)) for n in wanted], schema=self.db_schema)
        ts_col = t.c[self.source_column("ts")]
        stmt = (
            sa.select(*[t.c[self.source_column(n)].label(n) for n in wanted])
            .where(ts_col >= sa.bindparam("start", type_=sa.DateTime()), ts_col < sa.bindparam("end", type_=sa.DateTime()))
            .order_by(ts_col)
        )
        with self.connect() as conn:
            rows = conn.execute(stmt, {"start": start, "end": end}).fetchall()
        series = []
        errors: list[dict[str, str] | None] = [None] * len(rows)
        for i, name in enumerate(wanted):
            converted, bad = _convert([r[i] for r in rows], name)
            series.append(converted)
            for row, original in bad:
                errors[row] = {**(errors[row] or {}), name: original}
        frame = pl.DataFrame(series) if series else pl.DataFrame()
        for name in source.missing_optional:
            frame = frame.with_columns(pl.lit(None, dtype=RAW_SCHEMA[name]).alias(name))
        type_errors = pl.Series(TYPE_ERRORS, [json.dumps(e, sort_keys=True) if e else None for e in errors], dtype=pl.String)
        return frame.select(list(RAW_COLUMNS)).with_columns(type_errors)

    def count_rows_without_timestamp(self) -> int:
        """Rows whose timestamp is null belong to no day, so no partition reads them: count them to report them."""
        import sqlalchemy as sa

        t = sa.table(self.table, sa.column(self.source_column("ts")), schema=self.db_schema)
        with self.connect() as conn:
            return int(conn.execute(sa.select(sa.func.count()).select_from(t).where(t.c[self.source_column("ts")].is_(None))).scalar_one())

    def ids_recorded_before(self, ids: list[int], before: dt.datetime) -> set[int]:
        """Which of ``ids`` already occur in the source with an earlier timestamp."""
        import sqlalchemy as sa

        if not ids:
            return set()
        t = sa.table(
            self.table, sa.column(self.source_column("transaction_id")), sa.column(self.source_column("ts")), schema=self.db_schema
        )
        id_col, ts_col = t.c[self.source_column("transaction_id")], t.c[self.source_column("ts")]
        stmt = sa.select(id_col).where(
            ts_col < sa.bindparam("before", type_=sa.DateTime()), id_col.in_(sa.bindparam("ids", expanding=True))
        )
        found: set[int] = set()
        with self.connect() as conn:
            # Chunked: SQLite caps bound parameters per statement.
            for i in range(0, len(ids), 10_000):
                found.update(int(v) for (v,) in conn.execute(stmt, {"before": before, "ids": ids[i : i + 10_000]}) if v is not None)
        return found

    # --- writing (used by the generator CLI, the demo and the tests) -------

    def create_table(self, replace: bool = False) -> None:
        with self.engine.begin() as conn:
            if replace:
                self._table.drop(conn, checkfirst=True)
            self._table.create(conn, checkfirst=True)

    def append(self, frame: pl.DataFrame, chunk_rows: int = 50_000) -> int:
        """Insert canonical-schema rows; returns the number written."""
        import sqlalchemy as sa

        t = self._table
        renamed = frame.rename({n: self.source_column(n) for n in frame.columns if n in RAW_COLUMNS})
        written = 0
        with self.engine.begin() as conn:
            for chunk in renamed.iter_slices(chunk_rows):
                conn.execute(sa.insert(t), chunk.to_dicts())
                written += chunk.height
        return written

    def _safe_url(self) -> str:
        import sqlalchemy as sa

        return sa.make_url(self.url).render_as_string(hide_password=True)
