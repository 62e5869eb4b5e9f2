"""Validation: split each day's raw rows into usable rows and a quarantine."""

import datetime as dt
from collections.abc import Iterator

import dagster as dg
import polars as pl

from ml_assets.ingest import RAW_DESCRIPTIONS
from ml_assets.lib.validation import rule_counts, split_valid
from ml_assets.metadata import frame_metadata
from ml_assets.partitions import daily_partitions, partition_days

VALIDATED = dg.AssetKey("validated_transactions")
QUARANTINED = dg.AssetKey("quarantined_transactions")


@dg.multi_asset(
    outs={
        "validated_transactions": dg.AssetOut(
            description=(
                "Transactions that passed every data rule, in the canonical schema. "
                "This is the only transaction data features and models ever see."
            ),
            group_name="validation",
            kinds={"polars", "parquet"},
            owners=["team:ml-platform"],
            metadata={"partition_expr": "ts"},
        ),
        "quarantined_transactions": dg.AssetOut(
            description=(
                "Every raw row that broke at least one data rule, unchanged, with `rejected_reasons` "
                "listing the rules it broke (semicolon-separated). Nothing is dropped silently: "
                "raw = validated + quarantined for every day."
            ),
            group_name="validation",
            kinds={"polars", "parquet"},
            owners=["team:ml-platform"],
            metadata={"partition_expr": "partition_date"},
        ),
    },
    partitions_def=daily_partitions,
    backfill_policy=dg.BackfillPolicy.single_run(),
    check_specs=[
        dg.AssetCheckSpec(
            "rows_conserved",
            asset=VALIDATED,
            additional_deps=[QUARANTINED],
            description="Every raw row is either validated or quarantined, never both, never neither.",
            blocking=True,
        )
    ],
)
def validated_transactions(context: dg.AssetExecutionContext, raw_transactions: pl.DataFrame) -> Iterator[object]:
    days = partition_days(context)
    # Rules run per day so that "inside the partition's day" and id uniqueness
    # mean the same thing in a single-day run and in a multi-day backfill.
    valid_parts, rejected_parts, per_day = [], [], []
    # A row whose timestamp could not be read has no day: it goes with the first
    # day of the run, where the not-null rule quarantines it.
    day_of = pl.col("ts").dt.date().fill_null(days[0])
    by_day = {d: raw_transactions.filter(day_of == d) for d in days} if len(days) > 1 else {days[0]: raw_transactions}
    for day in days:
        raw = by_day[day]
        start = dt.datetime.combine(day, dt.time())
        valid, rejected = split_valid(raw, start, start + dt.timedelta(days=1))
        rejected = rejected.with_columns(pl.lit(day).alias("partition_date"))
        valid_parts.append(valid)
        rejected_parts.append(rejected)
        counts = rule_counts(rejected)
        per_day.append((day, raw.height, valid.height, rejected.height))
        key = day.isoformat()
        context.add_asset_metadata(
            {**frame_metadata(valid, RAW_DESCRIPTIONS), "rejected_rows": rejected.height}, asset_key=VALIDATED, partition_key=key
        )
        context.add_asset_metadata(
            {
                **frame_metadata(rejected),
                "rejected_share": (rejected.height / raw.height) if raw.height else 0.0,
                "rejected_by_rule": dg.MetadataValue.json(counts),
            },
            asset_key=QUARANTINED,
            partition_key=key,
        )
        if rejected.height:
            context.log.warning(f"{key}: quarantined {rejected.height} of {raw.height} rows: {counts}")

    validated = pl.concat(valid_parts, how="vertical_relaxed")
    quarantined = pl.concat(rejected_parts, how="vertical_relaxed")
    raw_n, valid_n, rej_n = raw_transactions.height, validated.height, quarantined.height
    yield dg.Output(validated, output_name="validated_transactions")
    yield dg.Output(quarantined, output_name="quarantined_transactions")
    bad_days = [d.isoformat() for d, r, v, q in per_day if r != v + q]
    yield dg.AssetCheckResult(
        check_name="rows_conserved",
        asset_key=VALIDATED,
        passed=raw_n == valid_n + rej_n and not bad_days,
        metadata={
            "raw_rows": raw_n,
            "validated_rows": valid_n,
            "quarantined_rows": rej_n,
            "days_not_conserved": dg.MetadataValue.json(bad_days),
        },
    )
