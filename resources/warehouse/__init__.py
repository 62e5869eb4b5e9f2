"""The SQL source of raw transactions, reached through SQLAlchemy.

Any SQLAlchemy URL works (SQLite by default, PostgreSQL in production).  Table
and column names are configuration: ``column_map`` maps canonical names (see
``lib.schema``) to the names in the user's table.  Every query is built
with SQLAlchemy Core, so identifiers are quoted by the dialect and values are
bound parameters, never formatted into SQL text.
"""

from __future__ import annotations

from lib.schema import check_identifier
from resources.warehouse.conversion import TYPE_ERRORS
from resources.warehouse.demo import DemoWriter, write_frame
from resources.warehouse.profile import Profiler
from resources.warehouse.reader import ROW_DAY, DayRead, SourceColumns, SourceSchemaError, SourceUnavailableError

__all__ = [
    "ROW_DAY",
    "TYPE_ERRORS",
    "DayRead",
    "SourceColumns",
    "SourceSchemaError",
    "SourceUnavailableError",
    "SqlWarehouse",
    "check_identifier",
    "write_frame",
]


class SqlWarehouse(Profiler, DemoWriter):
    """Raw transactions in a SQL database.

    One resource; its parts are modules of this package: reader.py (the
    connection and the day reads the pipeline makes), dialects.py and
    conversion.py (what differs per database, typed values with reasons),
    profile.py (`churn init`'s look at the table) and demo.py (writing a table,
    for the generator, the demo and tests).
    """
