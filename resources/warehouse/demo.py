"""Writing a source table: the generator CLI, the demo and the tests (never the pipeline, which only reads)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import polars as pl

from lib.schema import RAW_COLUMNS, check_identifier
from resources.warehouse.reader import SourceReader

if TYPE_CHECKING:
    # Imported lazily at run time: loading the code location should not pay for it.
    pass


class DemoWriter(SourceReader):
    """Create and fill the transactions table in the canonical schema."""

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


def write_frame(url: str, table: str, frame: pl.DataFrame, db_schema: str | None = None, replace: bool = False) -> int:
    """Write any frame as a typed table (the retail generator's plain purchase log, test sources); returns rows written."""
    import sqlalchemy as sa

    check_identifier(table, "table")
    types: dict[Any, sa.types.TypeEngine[Any]] = {
        pl.Int64: sa.BigInteger(),
        pl.Int32: sa.Integer(),
        pl.Float64: sa.Double(),
        pl.Date: sa.Date(),
        pl.Datetime: sa.DateTime(),
        pl.String: sa.String(64),
    }
    engine = sa.create_engine(url)
    if engine.dialect.name == "sqlite" and (database := sa.make_url(url).database):
        Path(database).parent.mkdir(parents=True, exist_ok=True)
    columns = [sa.Column(check_identifier(n, "column"), types.get(d.base_type(), sa.String(64))) for n, d in frame.schema.items()]
    t = sa.Table(table, sa.MetaData(schema=db_schema), *columns)
    with engine.begin() as conn:
        if replace:
            t.drop(conn, checkfirst=True)
        t.create(conn, checkfirst=True)
        for chunk in frame.iter_slices(50_000):
            conn.execute(sa.insert(t), chunk.to_dicts())
    engine.dispose()
    return frame.height
