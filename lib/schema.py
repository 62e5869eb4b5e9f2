"""The canonical raw transaction schema and the mapping from a user's table to it.

Every stage after ingestion speaks these column names.  A user whose table
names them differently maps their names onto these with
``CHURN_COLUMN_MAP`` (see docs/own-database.md).
"""

from __future__ import annotations

import re

import polars as pl

# name -> (polars dtype, required, description). The contract is minimal: who
# bought (customer_id), when (ts: a timestamp, a date or ISO text) and how
# much (amount). Every other column is optional; features that need one exist
# only when the source has it.
RAW_COLUMNS: dict[str, tuple[pl.DataType, bool, str]] = {
    "transaction_id": (
        pl.Int64(),
        False,
        "Unique id of the transaction (integer). When the source has none, a stable hash of the row's values and its ordinal among identical rows.",
    ),
    "customer_id": (pl.String(), True, "Customer identifier: any printable text of 1 to 64 characters (numbers and UUIDs as their text)."),
    "ts": (pl.Datetime("us"), True, "When the transaction happened, naive UTC (a DATE column gives midnight)."),
    "amount": (pl.Float64(), True, "Total paid, in the store currency; positive."),
    "quantity": (pl.Int32(), False, "Number of items in the basket; at least 1."),
    "channel": (pl.String(), False, "Where it happened (e.g. web, mobile, store)."),
    "category": (pl.String(), False, "Main product category of the basket."),
    "payment_method": (pl.String(), False, "How it was paid (e.g. card, wallet, cash)."),
}

RAW_SCHEMA: dict[str, pl.DataType] = {name: spec[0] for name, spec in RAW_COLUMNS.items()}

DEFAULT_TABLE = "transactions"

# The generator's vocabularies. Validation accepts any value unless a closed set is declared
# (CHURN_CLOSED_VOCABULARIES); features use these values when the column exists.
CHANNELS = ("web", "mobile", "store")
CATEGORIES = ("grocery", "electronics", "apparel", "home", "beauty", "sports")
PAYMENT_METHODS = ("card", "wallet", "cash")


# Letters, digits, underscore and $ (PostgreSQL allows it), not starting with a
# digit, at most 63 characters (PostgreSQL's limit): what unquoted SQL accepts.
_IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_$]{0,62}")


def check_identifier(name: str, what: str) -> str:
    """Reject a table, schema or column name that is not a plain SQL identifier."""
    if not isinstance(name, str) or not _IDENTIFIER.fullmatch(name):
        raise ValueError(
            f"{what} {name!r} is not a plain SQL identifier (letters, digits, _ or $, not starting with a digit, at most 63 characters); "
            "rename it, or expose the table through a view whose columns have plain names"
        )
    return name


def check_column_map(value: dict[str, str]) -> dict[str, str]:
    """A column map (canonical column -> the user's column): known canonical names, plain column names, one meaning each."""
    unknown = sorted(set(value) - set(RAW_COLUMNS))
    if unknown:
        raise ValueError(f"maps unknown canonical column(s) {unknown}; canonical columns are {list(RAW_COLUMNS)}")
    for canonical, column in value.items():
        check_identifier(column, f"the column for {canonical!r}")
    if len(set(value.values())) != len(value):
        raise ValueError(f"maps two canonical columns to the same source column: {value}")
    return value
