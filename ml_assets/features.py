"""Features: point-in-time customer snapshots, one row per active customer per day."""

import dagster as dg
import polars as pl

from ml_assets.lib.expectations import outcome_table, validate_features
from ml_assets.lib.features import LOOKBACK_DAYS, feature_columns, snapshots_features
from ml_assets.lib.frames import split_by_day
from ml_assets.metadata import frame_metadata
from ml_assets.partitions import daily_partitions, partition_days
from ml_assets.schema import RAW_COLUMNS
from resources import SqlWarehouse

FEATURE_DESCRIPTIONS = {
    "customer_id": "Customer identifier.",
    "snapshot_date": "The day these features describe, as of its end (UTC).",
    "recency_days": "Days from the last purchase to the end of the snapshot day.",
    "tenure_days": f"Days since the first purchase seen in the last {LOOKBACK_DAYS} days.",
    "tx_count_7d": "Purchases in the last 7 days.",
    "tx_count_30d": "Purchases in the last 30 days.",
    "tx_count_90d": "Purchases in the last 90 days.",
    "spend_7d": "Amount spent in the last 7 days.",
    "spend_30d": "Amount spent in the last 30 days.",
    "spend_90d": "Amount spent in the last 90 days.",
    "spend_lookback": f"Amount spent in the last {LOOKBACK_DAYS} days.",
    "avg_basket": "Average amount per purchase.",
    "max_amount": "Largest single purchase.",
    "avg_quantity": "Average items per purchase.",
    "spend_trend": "log(spend last 30 days) minus log(monthly spend in the 60 days before): negative means spend is falling.",
    "frequency_trend": "Purchases in the last 30 days minus the monthly rate of the 60 days before.",
    "mean_gap_days": "Average days between purchases.",
    "active_days_90d": "Distinct days with a purchase in the last 90 days.",
    "mobile_share": "Share of purchases made on mobile.",
    "store_share": "Share of purchases made in a store.",
    "weekend_share": "Share of purchases made on Saturday or Sunday.",
    "n_categories": "Distinct product categories bought.",
    "feature_timestamp": "The instant the features are valid at (end of the snapshot day).",
    "last_tx_ts": "Time of the last purchase (used to derive labels, never a model input).",
}


@dg.asset(
    partitions_def=daily_partitions,
    backfill_policy=dg.BackfillPolicy.single_run(),
    ins={
        "validated_transactions": dg.AssetIn(
            # The day itself and the LOOKBACK_DAYS - 1 days before it: never later days.
            partition_mapping=dg.TimeWindowPartitionMapping(
                start_offset=-(LOOKBACK_DAYS - 1), end_offset=0, allow_nonexistent_upstream_partitions=True
            )
        )
    },
    group_name="features",
    kinds={"polars", "parquet"},
    owners=["team:data-science"],
    metadata={"partition_expr": "snapshot_date"},
    check_specs=[
        dg.AssetCheckSpec(
            "one_row_per_customer",
            asset="customer_features",
            description="Each customer appears at most once per snapshot day.",
            blocking=True,
        ),
        dg.AssetCheckSpec(
            "feature_expectations",
            asset="customer_features",
            description=(
                "The great-expectations suite `customer_features`: no nulls, shares in [0, 1], counts and spend "
                "non-negative, recency and tenure within the lookback, nested windows, fresh feature timestamps."
            ),
            blocking=True,
        ),
    ],
)
def customer_features(context: dg.AssetExecutionContext, validated_transactions: pl.DataFrame, warehouse: SqlWarehouse):
    """Who each customer is as of the end of the day: recency, frequency and spend over 7/30/90/180-day
    windows, basket size, spend and frequency trends, channel and weekday habits.

    One row per customer who bought anything in the last 180 days. Computed only
    from transactions up to the end of the snapshot day, so a snapshot never
    changes when later data arrives: the models train on what was knowable then.
    """
    days = partition_days(context)
    # Features that need an optional column (quantity, channel, category) exist only when the source has it.
    source = warehouse.inspect_source()
    channels, extras = tuple(warehouse.channels), tuple(warehouse.extra_columns)
    # A further categorical column added later is absent from older partitions: null there, so no value.
    missing = [e for e in extras if e not in validated_transactions.columns]
    if missing:
        validated_transactions = validated_transactions.with_columns(pl.lit(None, dtype=pl.String).alias(e) for e in missing)
    columns = feature_columns((n for n in RAW_COLUMNS if n not in source.missing_optional), channels, extras)
    frame = snapshots_features(validated_transactions, days, columns=columns, channels=channels, extras=extras)
    by_day = split_by_day(frame, "snapshot_date")
    dupes = 0
    for day in days:
        part = by_day.get(day, frame.clear())
        # Per day: one hash of a day's customers instead of one over (customer, day) for the whole range.
        dupes += int(part["customer_id"].is_duplicated().sum())
        means = (
            {c: round(float(part[c].mean()), 4) for c in ("recency_days", "tx_count_30d", "spend_30d", "avg_basket")} if part.height else {}
        )
        context.add_asset_metadata(
            {
                **frame_metadata(part, FEATURE_DESCRIPTIONS),
                "active_customers": part.height,
                **{f"mean_{c}": v for c, v in means.items()},
            },
            partition_key=day.isoformat(),
        )
        if part.is_empty():
            context.log.warning(f"customer_features {day}: no customer bought anything in the {LOOKBACK_DAYS} days up to this day")
    outcomes = validate_features(frame, LOOKBACK_DAYS, columns) if frame.height else []
    failed = [o for o in outcomes if not o.success]
    yield dg.Output(frame)
    yield dg.AssetCheckResult(check_name="one_row_per_customer", passed=dupes == 0, metadata={"duplicate_rows": dupes})
    yield dg.AssetCheckResult(
        check_name="feature_expectations",
        passed=not failed,
        description=("Failed: " + ", ".join(f"{o.rule} (observed {o.observed})" for o in failed)) if failed else None,
        metadata={
            "expectations": len(outcomes),
            "failed": dg.MetadataValue.json({o.rule: {"observed": o.observed, "expected": o.expected} for o in failed}),
            "rules": dg.MetadataValue.md(outcome_table(outcomes)),
        },
    )
