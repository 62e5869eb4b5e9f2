"""Validation: split each day's raw rows into usable rows and a quarantine, with GX."""

import datetime as dt
from collections.abc import Iterator
from typing import Any

import dagster as dg
import polars as pl
from pydantic import Field

from lib.expectations import ROW_DAY, outcome_table, partition_day, quarantine, unknown_values
from lib.frames import split_by_day
from ml_assets.assets.ingest import RAW_DESCRIPTIONS
from ml_assets.metadata import frame_metadata
from ml_assets.partitions import daily_partitions, partition_days
from ml_assets.run_config import default_of
from resources import SqlWarehouse

VALIDATED = dg.AssetKey("validated_transactions")
QUARANTINED = dg.AssetKey("quarantined_transactions")


class ValidationConfig(dg.Config):
    max_rejected_share: float = Field(
        default=default_of("validated_transactions", "max_rejected_share"),
        ge=0.0,
        le=1.0,
        allow_inf_nan=False,
        description="Largest share of a day's rows that may be quarantined, in [0, 1]; above it the day is blocked from downstream assets "
        "(max_rejected_share).",
    )
    min_rejected_rows: int = Field(
        default=default_of("validated_transactions", "min_rejected_rows"),
        ge=1,
        description="A day is blocked only when at least this many of its rows are quarantined, so one bad row never blocks a small day "
        "(min_rejected_rows).",
    )


@dg.multi_asset(
    outs={
        "validated_transactions": dg.AssetOut(
            description=(
                "Transactions that passed every data rule (great-expectations suite `raw_transactions`), in the "
                "canonical schema. This is the only transaction data features and models ever see."
            ),
            group_name="validation",
            kinds={"great_expectations", "polars", "parquet"},
            owners=["team:ml-platform"],
            metadata={"partition_expr": "ts"},
        ),
        "quarantined_transactions": dg.AssetOut(
            description=(
                "Every raw row that broke at least one data rule, with its original values, `rejected_reasons` "
                "(the rules it broke, semicolon-separated), `_type_errors` (source values that were not of their "
                "column's type) and `partition_date`. Nothing is dropped silently: raw = validated + quarantined for every day."
            ),
            group_name="validation",
            kinds={"great_expectations", "polars", "parquet"},
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
        ),
        dg.AssetCheckSpec(
            "rejected_share_below_threshold",
            asset=VALIDATED,
            description="The share of quarantined rows stays below `max_rejected_share` on every day (or fewer than "
            "`min_rejected_rows` rows are quarantined); otherwise the day is blocked.",
            blocking=True,
        ),
        dg.AssetCheckSpec(
            "raw_expectations",
            asset=VALIDATED,
            description="The great-expectations suite `raw_transactions`: observed vs expected for every rule (rows breaking it are quarantined).",
        ),
    ],
)
def validated_transactions(
    context: dg.AssetExecutionContext, config: ValidationConfig, raw_transactions: pl.DataFrame, warehouse: SqlWarehouse
) -> Iterator[object]:
    days = partition_days(context)
    source = warehouse.inspect_source()
    contract = warehouse.contract(source)
    # Ids recorded on an earlier day in the source are duplicates of data
    # already ingested; ids repeated within the run are caught by the suite.
    # Derived ids (no id column) exist only in the lake: nothing to look up.
    seen_before: set[int] = set()
    if not contract.derived_ids:
        ids = raw_transactions["transaction_id"].drop_nulls().unique().to_list()
        seen_before = warehouse.ids_recorded_before(ids, days[0], source)
    result = quarantine(raw_transactions, days, seen_before, now=dt.datetime.now(dt.UTC).replace(tzinfo=None), contract=contract)
    validated, quarantined = result.valid, result.rejected

    raw_days = (
        raw_transactions[ROW_DAY] if ROW_DAY in raw_transactions.columns else raw_transactions.select(partition_day(days)).to_series()
    )
    raw_by_day = _counts(pl.DataFrame({"_d": raw_days}), "_d")
    valid_by_day = _counts(validated.with_columns(pl.col("ts").dt.date().alias("_d")), "_d")
    rej_by_day = _counts(quarantined, "partition_date")
    vocabulary = {"channel": tuple(warehouse.channels)}
    unknown_by_day = {day: unknown_values(part, contract, vocabulary) for day, part in split_by_day(validated, "ts").items()}
    rejected_parts = {k[0]: g for k, g in quarantined.partition_by("partition_date", as_dict=True).items()} if quarantined.height else {}
    blocked = []
    for day in days:
        counts = (raw_by_day.get(day, 0), valid_by_day.get(day, 0), rej_by_day.get(day, 0))
        part = rejected_parts.get(day, quarantined.clear())
        if why := _report_day(context, config, day, counts, part, unknown_by_day.get(day, {})):
            blocked.append(why)
    context.add_output_metadata(
        {"dagster/column_schema": frame_metadata(validated, RAW_DESCRIPTIONS)["dagster/column_schema"]},
        output_name="validated_transactions",
    )

    yield dg.Output(validated, output_name="validated_transactions")
    yield dg.Output(quarantined, output_name="quarantined_transactions")

    not_conserved = [d.isoformat() for d in days if raw_by_day.get(d, 0) != valid_by_day.get(d, 0) + rej_by_day.get(d, 0)]
    yield dg.AssetCheckResult(
        check_name="rows_conserved",
        asset_key=VALIDATED,
        passed=not not_conserved and raw_transactions.height == validated.height + quarantined.height,
        metadata={
            "raw_rows": raw_transactions.height,
            "validated_rows": validated.height,
            "quarantined_rows": quarantined.height,
            "days_not_conserved": dg.MetadataValue.json(not_conserved),
        },
    )
    if blocked:
        context.log.error("validated_transactions blocked: " + " | ".join(blocked))
    yield dg.AssetCheckResult(
        check_name="rejected_share_below_threshold",
        asset_key=VALIDATED,
        passed=not blocked,
        description=("Blocked: " + " | ".join(blocked[:10])) if blocked else None,
        metadata={
            "max_rejected_share": config.max_rejected_share,
            "min_rejected_rows": config.min_rejected_rows,
            "blocked_days": dg.MetadataValue.json(blocked),
        },
    )
    yield dg.AssetCheckResult(
        check_name="raw_expectations",
        asset_key=VALIDATED,
        passed=all(o.success for o in result.outcomes),
        severity=dg.AssetCheckSeverity.WARN,
        metadata={
            "rules": dg.MetadataValue.md(outcome_table(result.outcomes)),
            "rows_quarantined_by_rule": dg.MetadataValue.json(result.counts()),
        },
    )


def _report_day(
    context: dg.AssetExecutionContext,
    config: ValidationConfig,
    day: dt.date,
    counts: tuple[int, int, int],
    part: pl.DataFrame,
    unknown: dict[str, Any],
) -> str | None:
    """One day's metadata on both outputs and its log line; why the day is blocked, or None."""
    key = day.isoformat()
    n_raw, n_valid, n_rej = counts
    reasons = _reason_counts(part)
    share = n_rej / n_raw if n_raw else 0.0
    context.add_asset_metadata(
        {
            "dagster/row_count": n_valid,
            "values_outside_feature_vocabulary": dg.MetadataValue.json(unknown),
            "raw_rows": n_raw,
            "rejected_rows": n_rej,
            "rejected_share": share,
            "empty_partition": n_raw == 0,
        },
        asset_key=VALIDATED,
        partition_key=key,
    )
    context.add_asset_metadata(
        {**frame_metadata(part), "rejected_share": share, "rejected_by_rule": dg.MetadataValue.json(reasons)},
        asset_key=QUARANTINED,
        partition_key=key,
    )
    if n_raw == 0:
        context.log.warning(f"validated_transactions {key}: the source has no rows for this day (empty partition)")
    elif n_rej:
        context.log.warning(f"validated_transactions {key}: quarantined {n_rej} of {n_raw} rows: {reasons}")
    if share > config.max_rejected_share and n_rej >= config.min_rejected_rows:
        return f"{key}: {n_rej} of {n_raw} rows ({share:.1%}) quarantined, by rule {reasons}"
    return None


def _counts(frame: pl.DataFrame, column: str) -> dict[dt.date, int]:
    if frame.is_empty():
        return {}
    return dict(frame.group_by(column).len().iter_rows())


def _reason_counts(rejected: pl.DataFrame) -> dict[str, int]:
    if rejected.is_empty():
        return {}
    counts = rejected.select(pl.col("rejected_reasons").str.split(";").explode()).group_by("rejected_reasons").len()
    return {r: int(n) for r, n in counts.sort("rejected_reasons").iter_rows()}
