"""Ingestion: the rows of each day from the SQL source into the lake, and every row no day can hold set aside."""

import datetime as dt

import dagster as dg
import polars as pl

from lib.contract import preview_text
from lib.schema import RAW_COLUMNS
from ml_assets.metadata import frame_metadata
from ml_assets.partitions import calendar_end, daily_partitions, partition_days
from resources import Lake, ModelRegistry, SourceSchemaError, SourceUnavailableError, SqlWarehouse
from resources.warehouse import ROW_DAY

RAW_DESCRIPTIONS = {name: spec[2] for name, spec in RAW_COLUMNS.items()} | {
    "_type_errors": "Source values that could not be read as their column's type, as JSON {column: original} (bytes as hex:...); null when all fit.",
    ROW_DAY: "The UTC day the row belongs to (for an unreadable text timestamp: the day its text starts with).",
}

UNPLACEABLE = dg.AssetKey("unplaceable_transactions")

unplaceable_transactions = dg.AssetSpec(
    UNPLACEABLE,
    description=(
        "Source rows that belong to no day of the partition calendar, kept with every original value as text and "
        "`unplaceable_reason`: ts_missing (null timestamp), ts_unreadable (not an accepted timestamp form: an epoch "
        "number, '2025/01/08', '', '0000-00-00', bytes), ts_before_calendar (before CHURN_PARTITIONS_START) or "
        "ts_after_calendar (later than tomorrow, UTC). Re-read from the source by every ingestion run; its "
        "materializations carry the count by reason."
    ),
    group_name="ingest",
    kinds={"sql", "parquet"},
    owners=["team:ml-platform"],
)

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
    metadata={"partition_expr": ROW_DAY},
    check_specs=[
        dg.AssetCheckSpec(
            "source_rows_accounted",
            asset="raw_transactions",
            description=(
                "For the window the run read, the source's own COUNT(*) equals the rows kept for the run's days plus the "
                "rows set aside for a neighbouring day; fails when any row was lost between the database and the lake."
            ),
            blocking=True,
        )
    ],
)
def raw_transactions(context: dg.AssetExecutionContext, warehouse: SqlWarehouse, lake: Lake, registry: ModelRegistry):
    """Every transaction recorded in the source database on this day (UTC), as read.

    One row per purchase: who bought (customer_id), when (ts), how much
    (amount) and, when the source has them, quantity, channel, category and
    payment method. Nothing is fixed or dropped here: a value that does not fit
    its column's type is kept as text in `_type_errors`, and the validation
    stage decides which rows are usable. Rows that belong to no day at all go
    to `unplaceable_transactions`.
    """
    days = partition_days(context)
    label = days[0].isoformat() if len(days) == 1 else f"{days[0]}..{days[-1]}"
    try:
        source = warehouse.inspect_source()
    except SourceSchemaError as exc:
        # A schema problem does not heal by retrying: fail once, clearly.
        raise dg.Failure(f"raw_transactions {label}: {exc}", allow_retries=False) from exc
    if source.extra:
        context.log.warning(f"raw_transactions: ignoring column(s) not in the raw schema: {source.extra}")
    try:
        read = warehouse.read_transactions(days, source)
        unplaceable = warehouse.read_unplaceable(daily_partitions.start.date(), calendar_end(), source)
    except SourceUnavailableError as exc:
        # Nothing has been written for these days: the read is one query, so a
        # dropped connection leaves no partial result. The retry policy tries again.
        context.log.error(f"raw_transactions {label}: {exc}")
        raise
    # Customers erased with `churn erase` whose rows the source still holds: not read back in, only counted.
    erased = registry.erased_hashes()  # one query for both frames
    frame, erased_rows = _drop_erased(read.frame, registry, erased)
    unplaceable, _ = _drop_erased(unplaceable, registry, erased)
    if erased_rows:
        context.log.warning(
            f"raw_transactions {label}: {erased_rows} source row(s) belong to erased customers and were not read in; "
            "delete them at the source"
        )
    conserved = read.source_rows == frame.height + erased_rows + read.other_days
    _record_unplaceable(context, lake, unplaceable, warehouse)
    # Rows go to days exactly as validation assigns them, so raw counts per day
    # equal validated + quarantined per day.
    by_day = {k[0]: g for k, g in frame.partition_by(ROW_DAY, as_dict=True).items()} if frame.height else {}
    for day in days:
        part = by_day.get(day, frame.clear())
        context.add_asset_metadata(
            {
                **frame_metadata(part, RAW_DESCRIPTIONS),
                "source_table": warehouse.table,
                "source_timestamp_kind": source.time_kind,
                "absent_optional_columns": dg.MetadataValue.json(source.missing_optional),
                "ignored_source_columns": dg.MetadataValue.json(source.extra),
                "values_of_wrong_type": int(part["_type_errors"].is_not_null().sum()),
                "source_unplaceable_rows": unplaceable.height,
            },
            partition_key=day.isoformat(),
        )
    empty = [d.isoformat() for d in days if d not in by_day]
    if empty:
        context.log.warning(f"raw_transactions: no rows in the source for {len(empty)} day(s): {empty[:10]}")
    yield dg.Output(frame)
    yield dg.AssetCheckResult(
        check_name="source_rows_accounted",
        passed=conserved,
        description=None
        if conserved
        else f"{label}: the source counts {read.source_rows} rows in the window, the run kept {frame.height}, set aside "
        f"{read.other_days} and dropped {erased_rows} of erased customers",
        metadata={
            "source_rows_in_window": read.source_rows,
            "rows_kept": frame.height,
            "rows_of_neighbouring_days": read.other_days,
            "rows_of_erased_customers": erased_rows,
            "timestamp_kind": source.time_kind,
        },
    )


def _drop_erased(frame: pl.DataFrame, registry: ModelRegistry, erased: set[str]) -> tuple[pl.DataFrame, int]:
    mask = registry.erased_rows(frame, erased)
    return (frame.filter(~mask), int(mask.sum())) if mask.any() else (frame, 0)


def _record_unplaceable(context: dg.AssetExecutionContext, lake: Lake, frame: pl.DataFrame, warehouse: SqlWarehouse) -> None:
    """Write the rows no day can hold where a user finds them, and report them as a materialization of their own asset."""
    path = lake.path_for(UNPLACEABLE, None, ".parquet")
    lake.write_parquet(path, frame)
    by_reason = dict(frame.group_by("unplaceable_reason").len().sort("unplaceable_reason").iter_rows()) if frame.height else {}
    context.log_event(
        dg.AssetMaterialization(
            asset_key=UNPLACEABLE,
            metadata={
                **frame_metadata(frame),
                "by_reason": dg.MetadataValue.json(by_reason),
                "path": dg.MetadataValue.path(str(path)),
                "read_at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
            },
        )
    )
    if frame.height:
        ts = warehouse.source_column("ts")
        sample = ", ".join(repr(preview_text(v or "", 40)) for v in frame["ts"].head(3).to_list())
        context.log.warning(
            f"raw_transactions: {frame.height} source row(s) belong to no day of the calendar ({by_reason}); column {ts!r}, "
            f"e.g. {sample}. They are kept in {path}; fix them in the source or move CHURN_PARTITIONS_START."
        )
