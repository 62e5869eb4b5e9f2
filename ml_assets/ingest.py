"""Ingestion: one day of raw transactions from the SQL source into the lake."""

import dagster as dg
import polars as pl

from ml_assets.metadata import frame_metadata
from ml_assets.partitions import daily_partitions, naive_utc, partition_days
from ml_assets.schema import RAW_COLUMNS
from resources import SqlWarehouse

RAW_DESCRIPTIONS = {name: spec[2] for name, spec in RAW_COLUMNS.items()}

# A database that is restarting or briefly unreachable is retried with backoff
# rather than failing the day's run.
SOURCE_RETRY = dg.RetryPolicy(max_retries=3, delay=2, backoff=dg.Backoff.EXPONENTIAL)


@dg.asset(
    partitions_def=daily_partitions,
    backfill_policy=dg.BackfillPolicy.single_run(),
    group_name="ingest",
    kinds={"sql", "polars", "parquet"},
    owners=["team:ml-platform"],
    retry_policy=SOURCE_RETRY,
    metadata={"partition_expr": "ts"},
)
def raw_transactions(context: dg.AssetExecutionContext, warehouse: SqlWarehouse) -> pl.DataFrame:
    """Every transaction recorded in the source database on this day (UTC), exactly as read.

    One row per purchase: who bought (customer_id), when (ts), how much
    (amount, quantity), where (channel) and what (category).  Nothing is fixed
    or dropped here; the validation stage decides which rows are usable.
    """
    window = context.partition_time_window
    frame = warehouse.read_transactions(naive_utc(window.start), naive_utc(window.end))
    days = partition_days(context)
    per_day = dict(frame.group_by(pl.col("ts").dt.date()).len().iter_rows()) if frame.height else {}
    for day in days:
        part = frame.filter(pl.col("ts").dt.date() == day) if len(days) > 1 else frame
        context.add_asset_metadata(
            {**frame_metadata(part, RAW_DESCRIPTIONS), "source_table": warehouse.table},
            partition_key=day.isoformat(),
        )
    empty = [d.isoformat() for d in days if per_day.get(d, 0) == 0]
    if empty:
        context.log.warning(f"raw_transactions: no rows in the source for {len(empty)} day(s): {empty[:10]}")
    return frame
