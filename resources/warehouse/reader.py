"""Reading the SQL source of raw transactions, reached through SQLAlchemy.

Any SQLAlchemy URL works (SQLite by default, PostgreSQL in production).  Table
and column names are configuration: ``column_map`` maps canonical names (see
``lib.schema``) to the names in the user's table.  Every query is built
with SQLAlchemy Core, so identifiers are quoted by the dialect and values are
bound parameters, never formatted into SQL text.
"""

from __future__ import annotations

import datetime as dt
import json
import re
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, cast

import dagster as dg
import polars as pl
from pydantic import Field, PrivateAttr, ValidationInfo, field_validator

from lib.contract import (
    ISO_LIKE,
    REJECT,
    derived_row_ids,
    integer_converter,
    original_text,
    text_day,
    to_utc_naive,
    unplaceable_reason,
)
from lib.expectations import RawContract
from lib.features import check_channels, extra_name
from lib.schema import DEFAULT_TABLE, RAW_COLUMNS, RAW_SCHEMA, check_column_map, check_identifier
from resources.warehouse.conversion import TYPE_ERRORS, _convert
from resources.warehouse.dialects import (
    _EXPECTED_FAMILY,
    DATE,
    TEXT,
    TIMESTAMP,
    TIMESTAMPTZ,
    _compatible,
    _lenient_sqlite_text,
    _sa_types,
    _time_kind,
    _utc_session,
)

if TYPE_CHECKING:
    # Imported lazily at run time: loading the code location should not pay for it.
    import sqlalchemy as sa


class SourceUnavailableError(ConnectionError):
    """The source database could not be reached, or dropped the connection mid-read (retried by the ingest step)."""


class SourceSchemaError(ValueError):
    """The source table lacks a column the pipeline needs, or has it with the wrong type."""


# The day (UTC) each row read belongs to: its partition, decided here once.
ROW_DAY = "partition_date"


@dataclass(frozen=True)
class SourceColumns:
    missing_optional: list[str]
    extra: list[str]
    time_kind: str = TEXT


@dataclass(frozen=True)
class DayRead:
    """What one run read for its days, and how every fetched source row was accounted for."""

    frame: pl.DataFrame  # the rows of the run's days, canonical columns + _type_errors + partition_date
    source_rows: int  # COUNT(*) of the same window in the source, in the same snapshot
    other_days: int  # fetched rows that belong to a neighbouring day (text with an offset near midnight)

    @property
    def conserved(self) -> bool:
        return self.source_rows == self.frame.height + self.other_days


class SourceReader(dg.ConfigurableResource):
    """Raw transactions in a SQL database: the connection, the source's columns and the day reads."""

    url: str = Field(description="SQLAlchemy URL of the source database. Set it through the CHURN_WAREHOUSE_URL env var.")
    table: str = Field(default=DEFAULT_TABLE, description="Name of the transactions table.")
    db_schema: str | None = Field(default=None, description="Database schema holding the table (PostgreSQL), if not the default.")
    column_map: dict[str, str] = Field(
        default_factory=dict,
        description="Canonical column name -> column name in your table, for the columns whose names differ.",
    )

    zero_amount: Literal["keep", "quarantine"] = Field(
        default="keep", description="A zero amount: kept as a purchase without spend (keep) or quarantined (source.zero_amount)."
    )
    customer_id_pattern: str | None = Field(
        default=None,
        description="A regular expression the whole customer id must match (CHURN_CUSTOMER_ID_PATTERN). "
        "Default: any printable text of 1 to 64 characters without leading or trailing white space.",
    )
    closed_vocabularies: dict[str, list[str]] = Field(
        default_factory=dict,
        description='Categorical columns whose values must be in a declared set, e.g. {"channel": ["web", "store"]} '
        "(CHURN_CLOSED_VOCABULARIES); rows outside it are quarantined. Other categorical columns are open: unknown values are counted.",
    )

    channels: list[str] = Field(
        default_factory=lambda: ["web", "mobile", "store"],
        description="The channel vocabulary features use (CHURN_CHANNELS): the first is the reference, every other value gets a "
        "'<value>_share' feature. `churn init` proposes the source's most frequent values.",
    )

    categoricals: list[str] = Field(
        default_factory=list,
        description="Further categorical columns of your table, by name (CHURN_CATEGORICALS): carried as text into the lake "
        "as cat_<name>, each gives the feature n_<name>_values (distinct values a customer bought).",
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
        return check_column_map(value)

    @field_validator("customer_id_pattern")
    @classmethod
    def _compiles(cls, value: str | None) -> str | None:
        if value:
            try:
                re.compile(value)
            except re.error as exc:
                raise ValueError(f"customer_id_pattern {value!r} is not a valid regular expression: {exc}") from exc
        return value or None

    @field_validator("channels")
    @classmethod
    def _channel_names(cls, value: list[str]) -> list[str]:
        return check_channels(value)

    @field_validator("closed_vocabularies")
    @classmethod
    def _categorical(cls, value: dict[str, list[str]]) -> dict[str, list[str]]:
        allowed = ("channel", "category", "payment_method")
        unknown = sorted(set(value) - set(allowed))
        if unknown:
            raise ValueError(f"closed_vocabularies names {unknown}; only the categorical columns {list(allowed)} can be closed")
        return value

    @field_validator("categoricals")
    @classmethod
    def _categorical_names(cls, value: list[str]) -> list[str]:
        for name in value:
            check_identifier(name, "categorical column")
        if len({n.lower() for n in value}) != len(value):
            raise ValueError(f"categoricals {value}: a column is named twice")
        return value

    @property
    def extra_columns(self) -> dict[str, str]:
        """Further categorical columns: lake name (cat_<name>) -> the column in your table."""
        return {extra_name(n): n for n in self.categoricals}

    def contract(self, source: SourceColumns) -> RawContract:
        """The validation rules' view of this source: which optional columns exist and what the user declared."""
        present = frozenset(n for n in RAW_COLUMNS if n not in source.missing_optional)
        return RawContract(
            present=present | {"transaction_id"},
            derived_ids="transaction_id" not in present,
            customer_id_pattern=self.customer_id_pattern,
            closed_vocabularies={k: tuple(v) for k, v in self.closed_vocabularies.items()},
            zero_amount=self.zero_amount,
        )

    def source_column(self, canonical: str) -> str:
        return self.column_map.get(canonical) or self.extra_columns.get(canonical) or canonical

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
            if url.get_backend_name() in ("postgresql", "mysql", "mariadb"):
                # Sessions run in UTC, so a TIMESTAMP WITH TIME ZONE (PostgreSQL) or a
                # TIMESTAMP (MariaDB) reads the same instants whatever zone the server,
                # the role or the URL sets. The bounds are typed too (see _bound).
                sa.event.listen(self._engine, "connect", _utc_session, insert=True)
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
        """Check the table's columns against the contract before reading.

        Required: customer id, timestamp (or date) and amount. A missing (or
        renamed) required column, or a column whose declared type cannot hold
        its canonical type, fails with the column named and the fix. Extra
        columns are reported and ignored; missing optional ones are absent.
        """
        import sqlalchemy as sa

        try:
            with self.connect() as conn:
                columns = sa.inspect(conn).get_columns(self.table, schema=self.db_schema)
                backend = conn.dialect.name
        except sa.exc.NoSuchTableError as exc:
            raise SourceSchemaError(f"table {self.table!r} does not exist in {self._safe_url()}") from exc
        present = {c["name"]: c["type"] for c in columns}
        if not present:
            raise SourceSchemaError(f"table {self.table!r} does not exist in {self._safe_url()}")
        missing_required: list[str] = []
        missing_optional: list[str] = []
        wrong_type = []
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
                "Map your columns with `churn init` (writes the settings file) or CHURN_COLUMN_MAP, "
                'e.g. \'{"ts": "purchase_date", "customer_id": "customer_no"}\'.'
            )
        kind = _time_kind(present[self.source_column("ts")], backend)
        if kind is None:
            ts = self.source_column("ts")
            wrong_type.append(
                f"{ts!r} is {present[ts]}, expected {_EXPECTED_FAMILY['ts']} (epoch numbers are not read: seconds or "
                f"milliseconds cannot be told apart; expose the column through a view as a timestamp)"
            )
        if wrong_type:
            raise SourceSchemaError(f"table {self.table!r} has column(s) of the wrong type: {'; '.join(wrong_type)}")
        missing_extra = [n for n in self.categoricals if n not in present]
        if missing_extra:
            raise SourceSchemaError(
                f"table {self.table!r} lacks the categorical column(s) {missing_extra} named in source.categoricals "
                f"(CHURN_CATEGORICALS); found {sorted(present)}"
            )
        mapped = {self.source_column(n) for n in RAW_COLUMNS} | set(self.categoricals)
        return SourceColumns(missing_optional=missing_optional, extra=sorted(set(present) - mapped), time_kind=kind or TEXT)

    def _ts(self, columns: list[str] | None = None) -> tuple[sa.TableClause, sa.ColumnClause]:
        import sqlalchemy as sa

        names = [self.source_column(n) for n in (columns or [])]
        ts_name = self.source_column("ts")
        t = sa.table(self.table, *[sa.column(n) for n in dict.fromkeys([*names, ts_name])], schema=self.db_schema)
        return t, t.c[ts_name]

    def _select(self, source: SourceColumns, as_text: bool = False) -> tuple[list[str], sa.TableClause, sa.ColumnClause, sa.Select]:
        """Every column the source has, labelled with its lake name: (names, table, ts column, SELECT without a WHERE).

        `as_text`: a PostgreSQL timestamp or date is fetched as its text, because the driver cannot turn
        `infinity`, BC dates or years past 9999 into Python values and would fail the whole read.
        """
        import sqlalchemy as sa

        wanted = [*(n for n in RAW_COLUMNS if n not in source.missing_optional), *self.extra_columns]
        t, ts = self._ts(wanted)
        text_ts = as_text and source.time_kind != TEXT and self.engine.dialect.name == "postgresql"
        columns = [
            (sa.cast(t.c[self.source_column(n)], sa.Text) if n == "ts" and text_ts else t.c[self.source_column(n)]).label(n) for n in wanted
        ]
        return wanted, t, ts, sa.select(*columns)

    def _bound(self, kind: str, day: dt.date) -> sa.BindParameter:
        """A day boundary as a bound parameter of the column's own type: compared as instants or dates, never as strings."""
        import sqlalchemy as sa

        if kind == DATE:
            return sa.literal(day, sa.Date())
        if kind == TIMESTAMPTZ:
            return sa.literal(dt.datetime.combine(day, dt.time(), tzinfo=dt.UTC), sa.DateTime(timezone=True))
        if kind == TIMESTAMP:
            return sa.literal(dt.datetime.combine(day, dt.time()), sa.DateTime())
        return sa.literal(day.isoformat(), sa.String())

    def _text(self, column: sa.ColumnElement) -> sa.ColumnElement:
        # Text timestamps are compared by their leading 'YYYY-MM-DD' in byte order.
        return column.collate("C") if self.engine.dialect.name == "postgresql" else column

    def _window(self, kind: str, ts: sa.ColumnClause, first: dt.date, end: dt.date) -> sa.ColumnElement:
        """The rows a run over days [first, end) fetches.

        Typed columns: exactly the days. Text: the ISO-looking values from the
        day before to the day after, because an offset can move a row across
        midnight; each is parsed and kept only if its UTC day is in the run.
        """
        import sqlalchemy as sa

        if kind != TEXT:
            return sa.and_(ts >= self._bound(kind, first), ts < self._bound(kind, end))
        text = self._text(ts)
        day = dt.timedelta(days=1)
        return sa.and_(ts.like(ISO_LIKE), text >= self._bound(TEXT, first - day), text < self._bound(TEXT, end + day))

    def _snapshot(self, conn: sa.Connection) -> sa.Connection:
        """One consistent view for a count and a read (PostgreSQL and MariaDB; SQLite's read transaction already is one)."""
        if conn.dialect.name in ("postgresql", "mysql", "mariadb"):
            return conn.execution_options(isolation_level="REPEATABLE READ")
        return conn

    def read_transactions(self, days: list[dt.date], source: SourceColumns | None = None) -> DayRead:
        """The rows of ``days`` (UTC), in canonical column names, with the day each belongs to and the source's own count.

        Values are read untyped and converted here: a value that is not of its
        column's type (SQLite stores anything anywhere, a count beyond 2^31, a
        NaN, undecodable bytes) becomes null and its original text is kept in
        ``_type_errors``, so validation quarantines the row with the value
        intact instead of failing the run. A text timestamp that cannot be read
        but starts with one of the run's days is kept on that day for the
        quarantine. Pass the result of ``inspect_source`` when the caller already has it.
        """
        import sqlalchemy as sa

        source = source or self.inspect_source()
        days = sorted(days)
        first, end = days[0], days[-1] + dt.timedelta(days=1)
        wanted, t, ts, select = self._select(source)
        where = self._window(source.time_kind, ts, first, end)
        stmt = select.where(where).order_by(ts)
        count = sa.select(sa.func.count()).select_from(t).where(where)
        with self.connect() as conn, self._snapshot(conn).begin():
            rows = conn.execute(stmt).fetchall()
            source_rows = int(conn.execute(count).scalar_one())
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
        # The day each row belongs to: its UTC date; an unreadable text timestamp goes to the day its text starts with.
        ts_index = wanted.index("ts")
        fallback = [
            text_day(r[ts_index], days) if "ts" in (errors[i] or {}) and isinstance(r[ts_index], str) else None for i, r in enumerate(rows)
        ]
        row_day = pl.Series(ROW_DAY, fallback, dtype=pl.Date)
        frame = frame.select([*RAW_COLUMNS, *self.extra_columns]).with_columns(
            pl.Series(TYPE_ERRORS, [json.dumps(e, sort_keys=True, ensure_ascii=False) if e else None for e in errors], dtype=pl.String),
            pl.coalesce(pl.col("ts").dt.date(), row_day).alias(ROW_DAY),
        )
        if "transaction_id" in source.missing_optional:
            # No id in the source: a stable one from the row's values (see derived_row_ids), the same in every run.
            frame = frame.with_columns(derived_row_ids(frame, [*wanted, TYPE_ERRORS]))
        mine = pl.col(ROW_DAY).is_between(first, days[-1])
        other_days = frame.filter(~mine.fill_null(False)).height
        return DayRead(frame.filter(mine.fill_null(False)), source_rows, other_days)

    def read_unplaceable(self, calendar_start: dt.date, calendar_end: dt.date, source: SourceColumns | None = None) -> pl.DataFrame:
        """Source rows no day of the calendar [calendar_start, calendar_end) can hold, with their original values and a reason.

        Reasons: ``ts_missing`` (null), ``ts_unreadable`` (not one of the accepted
        forms: an epoch number, '2025/01/08', '', '0000-00-00', bytes),
        ``ts_out_of_range`` (a timestamp the database holds that no calendar can:
        infinity, a year before 1 or after 9999), ``ts_before_calendar`` (before
        the partitions start) and ``ts_after_calendar`` (beyond tomorrow). Every value is kept as text
        (bytes as hex), so nothing about the row is lost.
        """
        import sqlalchemy as sa

        source = source or self.inspect_source()
        wanted, t, ts, select = self._select(source, as_text=True)
        kind = source.time_kind
        lo, hi = self._bound(kind, calendar_start), self._bound(kind, calendar_end)
        if kind == TEXT:
            text = self._text(ts)
            # The first day's text is also fetched: an offset can put its rows before the calendar.
            edge = self._bound(TEXT, calendar_start + dt.timedelta(days=1))
            where = sa.or_(ts.is_(None), sa.not_(ts.like(ISO_LIKE)), text < edge, text >= hi)
        else:
            where = sa.or_(ts.is_(None), ts < lo, ts >= hi)
        with self.connect() as conn:
            rows = conn.execute(select.where(where)).fetchall()
        ts_index = wanted.index("ts")
        kept, reasons = [], []
        for row in rows:
            reason = unplaceable_reason(row[ts_index], calendar_start, calendar_end)
            if reason is not None:
                kept.append(row)
                reasons.append(reason)
        data = {n: [None if r[i] is None else original_text(r[i]) for r in kept] for i, n in enumerate(wanted)}
        frame = pl.DataFrame(data, schema={n: pl.String for n in wanted})
        return frame.with_columns(pl.Series("unplaceable_reason", reasons, dtype=pl.String))

    def ids_recorded_before(self, ids: list[int], before: dt.date, source: SourceColumns | None = None) -> set[int]:
        """Which of ``ids`` already occur in the source on a UTC day before ``before``."""
        import sqlalchemy as sa

        if not ids:
            return set()
        source = source or self.inspect_source()
        t, ts = self._ts(["transaction_id"])
        id_col = t.c[self.source_column("transaction_id")]
        kind = source.time_kind
        # Text: fetch up to the day itself and decide on the parsed instant (an offset can move a row across midnight).
        if kind == TEXT:
            limit = self._text(ts) < self._bound(TEXT, before + dt.timedelta(days=1))
        else:
            # From year 1 on: a typed value before it (-infinity, a BC date) is no day's, and no driver can read it.
            limit = sa.and_(ts >= self._bound(kind, dt.date(1, 1, 2)), ts < self._bound(kind, before))
        # PostgreSQL's typed values as text, parsed here: its driver cannot read every value the column may hold.
        fetched = sa.cast(ts, sa.Text) if kind != TEXT and self.engine.dialect.name == "postgresql" else ts
        stmt = sa.select(id_col, fetched).where(limit, id_col.in_(sa.bindparam("ids", expanding=True)))
        cutoff = dt.datetime.combine(before, dt.time())
        found: set[int] = set()
        with self.connect() as conn:
            # Chunked: SQLite caps bound parameters per statement.
            for i in range(0, len(ids), 10_000):
                for value, moment in conn.execute(stmt, {"ids": ids[i : i + 10_000]}):
                    parsed = to_utc_naive(moment) if moment is not None else REJECT
                    if value is not None and parsed is not REJECT and parsed < cutoff:  # type: ignore[operator]
                        number = integer_converter(pl.Int64())(value)
                        if number is not REJECT:
                            found.add(cast(int, number))
        return found

    def _safe_url(self) -> str:
        import sqlalchemy as sa

        return sa.make_url(self.url).render_as_string(hide_password=True)
