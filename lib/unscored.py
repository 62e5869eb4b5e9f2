"""Known customers a scored day has no score for, and why: nothing a source row names goes missing silently.

A customer with at least one source row is scored on every day from their
first validated purchase on. One whose every row so far was quarantined
(an amount of 0 under `source.zero_amount: quarantine`, a malformed
timestamp, a broken rule) has no features, so no score: such customers are
listed per scored day with the rules that set their rows aside and how many
rows, beside the day's predictions.
"""

from __future__ import annotations

import datetime as dt

import polars as pl

SCHEMA = {"customer_id": pl.String, "snapshot_date": pl.Date, "reason": pl.String, "quarantined_rows": pl.Int64, "first_row_day": pl.Date}


def unscored_customers(quarantined: pl.DataFrame, scored_ids: pl.Series, day: dt.date) -> pl.DataFrame:
    """Customers of ``quarantined`` (rows with `customer_id`, `day` and `rejected_reasons`) on or before ``day`` who are
    not among ``scored_ids``: one row each with the reason, the number of their quarantined rows and the first one's day."""
    if quarantined.is_empty():
        return pl.DataFrame(schema=SCHEMA)
    rows = quarantined.filter(pl.col("customer_id").is_not_null() & (pl.col("day") <= day)).with_columns(
        pl.col("customer_id").cast(pl.String)
    )
    rows = rows.filter(~pl.col("customer_id").is_in(scored_ids.cast(pl.String).implode()))
    if rows.is_empty():
        return pl.DataFrame(schema=SCHEMA)
    grouped = rows.group_by("customer_id").agg(
        pl.col("rejected_reasons").str.split(";").explode().unique().sort().str.join(",").alias("rules"),
        pl.len().cast(pl.Int64).alias("quarantined_rows"),
        pl.col("day").min().alias("first_row_day"),
    )
    return grouped.select(
        "customer_id",
        pl.lit(day).alias("snapshot_date"),
        pl.format("every row quarantined (rules: {})", "rules").alias("reason"),
        "quarantined_rows",
        "first_row_day",
    ).sort("customer_id")
