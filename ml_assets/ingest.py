"""Ingestion: one day of raw transactions from the SQL source into the lake."""

import dagster as dg
import polars as pl

from ml_assets.lib.expectations import partition_day
from ml_assets.metadata import frame_metadata
from ml_assets.partitions import daily_partitions, naive_utc, partition_days
from ml_assets.schema import RAW_COLUMNS
from resources import SourceSchemaError, SourceUnavailableError, SqlWarehouse

RAW_DESCRIPTIONS = {name: spec[2] for name, spec in RAW_COLUMNS.items()} | {
    "_type_errors": "Source values that could not be read as their column's type, as JSON {column: original}; null when all fit."
}

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
    """Every transaction recorded in the source database on this day (UTC), as read.

    One row per purchase: who bought (customer_id), when (ts), how much
    (amount, quantity), where (channel) and what (category).  Nothing is fixed
    or dropped here: a value that does not fit its column's type is kept as text
    in `_type_errors`, and the validation stage decides which rows are usable.
    """
    window = context.partition_time_window
    try:
        source = warehouse.inspect_source()
    except SourceSchemaError as exc:
        # A schema problem does not heal by retrying: fail once, clearly.
        raise dg.Failure(f"raw_transactions {context.partition_key_range.start}: {exc}", allow_retries=False) from exc
    if source.extra:
        context.log.warning(f"raw_transactions: ignoring column(s) not in the raw schema: {source.extra}")
    try:
        frame = warehouse.read_transactions(naive_utc(window.start), naive_utc(window.end), source)
        undated = warehouse.count_rows_without_timestamp()
    except SourceUnavailableError as exc:
        # Nothing has been written for these days: the read is one query, so a
        # dropped connection leaves no partial result. The retry policy tries again.
        context.log.error(f"raw_transactions {window.start:%Y-%m-%d}..{window.end:%Y-%m-%d}: {exc}")
        raise
    if undated:
        # A query for a human to copy, never executed here; SqlWarehouse validates the identifiers.
        hint = f"SELECT * FROM {warehouse.table} WHERE {warehouse.source_column('ts')} IS NULL"  # noqa: S608
        context.log.warning(f"raw_transactions: {undated} source row(s) have no timestamp and belong to no day; find them with: {hint}")
    days = partition_days(context)
    # Rows go to days exactly as validation assigns them, so raw counts per day
    # equal validated + quarantined per day.
    by_day = {
        k[0]: g.drop("_day") for k, g in frame.with_columns(partition_day(days).alias("_day")).partition_by("_day", as_dict=True).items()
    }
    for day in days:
        part = by_day.get(day, frame.clear())
        context.add_asset_metadata(
            {
                **frame_metadata(part, RAW_DESCRIPTIONS),
                "source_table": warehouse.table,
                "ignored_source_columns": dg.MetadataValue.json(source.extra),
                "source_rows_without_timestamp": undated,
                "values_of_wrong_type": int(part["_type_errors"].is_not_null().sum()),
            },
            partition_key=day.isoformat(),
        )
    empty = [d.isoformat() for d in days if d not in by_day]
    if empty:
        context.log.warning(f"raw_transactions: no rows in the source for {len(empty)} day(s): {empty[:10]}")
    return frame
