"""Describing a user's table for `churn init`: columns and samples, the time range, frequent values, uniqueness."""

from __future__ import annotations

import datetime as dt
from typing import TYPE_CHECKING, Any

from lib.contract import (
    ISO_LIKE,
    REJECT,
    original_text,
    to_utc_naive,
)
from resources.warehouse.dialects import DATE, TEXT, _family
from resources.warehouse.reader import SourceColumns, SourceReader, SourceSchemaError

if TYPE_CHECKING:
    # Imported lazily at run time: loading the code location should not pay for it.
    pass


class Profiler(SourceReader):
    """What `churn init` reads from the source to propose the settings."""

    def describe_table(self, samples: int = 5) -> list[dict[str, Any]]:
        """Each column's name, declared type, family and a few distinct sample values (as text, bounded): what `churn init` shows."""
        import sqlalchemy as sa

        try:
            with self.connect() as conn:
                columns = sa.inspect(conn).get_columns(self.table, schema=self.db_schema)
                backend = conn.dialect.name
                out = []
                for column in columns:
                    t = sa.table(self.table, sa.column(column["name"]), schema=self.db_schema)
                    c = t.c[column["name"]]
                    # PostgreSQL's own text of each value: its driver cannot read every timestamp a column may hold (infinity).
                    shown = sa.cast(c, sa.Text) if backend == "postgresql" else c
                    values = conn.execute(sa.select(shown).where(c.is_not(None)).distinct().limit(samples)).scalars().all()
                    out.append(
                        {
                            "name": column["name"],
                            "type": str(column["type"]),
                            "family": _family(column["type"], backend),
                            "samples": [original_text(v) for v in values],
                        }
                    )
        except sa.exc.NoSuchTableError as exc:
            raise SourceSchemaError(f"table {self.table!r} does not exist in {self._safe_url()}") from exc
        if not out:
            raise SourceSchemaError(f"table {self.table!r} does not exist in {self._safe_url()}")
        return out

    def time_range(self, source: SourceColumns | None = None) -> tuple[int, dt.date | None, dt.date | None]:
        """(rows in the table, first and last UTC day of the readable timestamps): the calendar `churn init` proposes."""
        import sqlalchemy as sa

        source = source or self.inspect_source()
        t, ts = self._ts()
        kind = source.time_kind
        readable = self._readable(kind, ts)
        column = self._text(ts) if kind == TEXT else ts
        with self.connect() as conn:
            rows = int(conn.execute(sa.select(sa.func.count()).select_from(t)).scalar_one())
            low, high = conn.execute(sa.select(sa.func.min(column), sa.func.max(column)).where(readable)).one()
            if kind == TEXT:
                # The smallest ISO-looking text may not parse ('0000-00-00'): walk up to the first that does.
                low = next(
                    (
                        v
                        for v in conn.execute(sa.select(ts).where(readable).order_by(column).limit(1000)).scalars()
                        if to_utc_naive(v) is not REJECT
                    ),
                    None,
                )
                high = next(
                    (
                        v
                        for v in conn.execute(sa.select(ts).where(readable).order_by(column.desc()).limit(1000)).scalars()
                        if to_utc_naive(v) is not REJECT
                    ),
                    None,
                )
        first, last = (None if v is None else to_utc_naive(v) for v in (low, high))
        return rows, (first.date() if isinstance(first, dt.datetime) else None), (last.date() if isinstance(last, dt.datetime) else None)

    def _readable(self, kind: str, ts: Any) -> Any:
        """Rows whose time is a day: ISO-looking text, or typed values within years 1..9999 (PostgreSQL's
        infinities and BC dates are no day, and unreadable to its driver)."""
        if kind == TEXT:
            return ts.like(ISO_LIKE)
        return (ts >= self._bound(kind, dt.date(1, 1, 2))) & (ts < self._bound(kind, dt.date(9999, 12, 31)))

    def activity(self, source: SourceColumns | None = None) -> tuple[int, dict[str, int]]:
        """(days with at least one row, customers by month of their first row 'YYYY-MM'): the table's shape, for `churn init`.

        Days of text timestamps are their leading 'YYYY-MM-DD' (an offset may move a row by a day: a
        description, not the pipeline's UTC days). Two aggregate queries; nothing per row leaves the database.
        """
        import sqlalchemy as sa

        source = source or self.inspect_source()
        kind = source.time_kind
        t, ts = self._ts(["customer_id"])
        day = sa.func.substr(ts, 1, 10) if kind == TEXT else ts if kind == DATE else sa.cast(ts, sa.Date)
        readable = self._readable(kind, ts)
        customer = t.c[self.source_column("customer_id")]
        firsts = sa.select(sa.func.min(day).label("first")).where(readable, customer.is_not(None)).group_by(customer).subquery()
        with self.connect() as conn:
            days = int(conn.execute(sa.select(sa.func.count(sa.distinct(day))).where(readable)).scalar_one())
            by_day = conn.execute(sa.select(firsts.c.first, sa.func.count()).group_by(firsts.c.first)).all()
        months: dict[str, int] = {}
        for first, n in by_day:
            month = (first.isoformat() if isinstance(first, dt.date) else str(first))[:7]
            months[month] = months.get(month, 0) + int(n)
        return days, dict(sorted(months.items()))

    def top_values(self, canonical: str, limit: int = 5) -> list[str]:
        """The most frequent non-null values of a column, most frequent first (a proposed vocabulary)."""
        import sqlalchemy as sa

        t = sa.table(self.table, sa.column(self.source_column(canonical)), schema=self.db_schema)
        c = t.c[self.source_column(canonical)]
        n = sa.func.count().label("n")
        stmt = sa.select(c, n).where(c.is_not(None)).group_by(c).order_by(n.desc(), c).limit(limit)
        with self.connect() as conn:
            return [str(v) for v, _ in conn.execute(stmt)]

    def is_unique(self, canonical: str) -> bool:
        """Whether a column's non-null values are all distinct (a transaction id must be)."""
        import sqlalchemy as sa

        t = sa.table(self.table, sa.column(self.source_column(canonical)), schema=self.db_schema)
        c = t.c[self.source_column(canonical)]
        with self.connect() as conn:
            total, distinct = conn.execute(sa.select(sa.func.count(c), sa.func.count(sa.distinct(c)))).one()
        return int(total) == int(distinct)
