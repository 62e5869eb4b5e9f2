"""The canonical raw transaction schema and the mapping from a user's table to it.

Every stage after ingestion speaks these column names.  A user whose table
names them differently maps their names onto these with
``CHURN_COLUMN_MAP`` (see README, "Point it at your own database").
"""

from __future__ import annotations

import polars as pl

# name -> (polars dtype, required, description)
RAW_COLUMNS: dict[str, tuple[pl.DataType, bool, str]] = {
    "transaction_id": (pl.Int64(), True, "Unique id of the transaction (integer)."),
    "customer_id": (pl.String(), True, "Customer identifier, 'C' followed by digits, e.g. C00001234."),
    "ts": (pl.Datetime("us"), True, "When the transaction happened, UTC, naive timestamp."),
    "amount": (pl.Float64(), True, "Total paid, in the store currency; positive."),
    "quantity": (pl.Int32(), True, "Number of items in the basket; at least 1."),
    "channel": (pl.String(), True, "Where it happened: web, mobile or store."),
    "category": (pl.String(), True, "Main product category of the basket."),
    "payment_method": (pl.String(), False, "card, wallet or cash."),
}

RAW_SCHEMA: dict[str, pl.DataType] = {name: spec[0] for name, spec in RAW_COLUMNS.items()}

DEFAULT_TABLE = "transactions"

# Allowed values of the categorical columns (validation rules and the generator share them).
CHANNELS = ("web", "mobile", "store")
CATEGORIES = ("grocery", "electronics", "apparel", "home", "beauty", "sports")
PAYMENT_METHODS = ("card", "wallet", "cash")
