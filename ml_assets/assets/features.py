"""Features: point-in-time customer snapshots, one row per active customer per day."""

import datetime as dt
from collections.abc import Iterator

import dagster as dg
import polars as pl
from pydantic import Field

from lib.expectations import FeatureValidation, Outcome, outcome_table
from lib.features import WINDOW_DAYS, cutoff_for, feature_columns, fold_snapshots, window_in_history
from lib.history import STATE_INPUTS, empty_state, fits, state_from_history, state_in_stretches
from lib.progress import Ticker
from lib.schema import RAW_COLUMNS
from ml_assets.metadata import frame_metadata
from ml_assets.partitions import daily_partitions, partition_days
from ml_assets.run_config import default_of
from resources import ComputeResource, Lake, SqlWarehouse

VALIDATED = dg.AssetKey("validated_transactions")
FEATURES = dg.AssetKey("customer_features")
# The carried per-customer state, one parquet per day a run ended on (not an asset: an internal of customer_features).
STATE = dg.AssetKey("customer_features_state")
STATES_KEPT = 8
# Validated days read at once when the carried state is rebuilt from history.
REBUILD_STRETCH_DAYS = 30

FEATURE_DESCRIPTIONS = {
    "customer_id": "Customer identifier.",
    "snapshot_date": "The day these features describe, as of its end (UTC).",
    "recency_days": "Days from the last purchase to the end of the snapshot day.",
    "tenure_days": "Customer age: days from the first purchase ever to the end of the snapshot day (BG/NBD's T).",
    "lifetime_tx": "Purchases over the whole history.",
    "repeat_days": "Purchase days after the first one (BG/NBD's x, the repeat frequency).",
    "active_span_days": "Days from the first to the last purchase day (BG/NBD's t_x).",
    "lifetime_spend": "Amount spent over the whole history.",
    "tx_count_7d": "Purchases in the last 7 days.",
    "tx_count_30d": "Purchases in the last 30 days.",
    "tx_count_90d": "Purchases in the last 90 days.",
    "spend_7d": "Amount spent in the last 7 days.",
    "spend_30d": "Amount spent in the last 30 days.",
    "spend_90d": "Amount spent in the last 90 days.",
    "avg_basket": "Average amount per purchase (whole history).",
    "max_amount": "Largest single purchase (whole history).",
    "avg_quantity": "Average items per purchase (whole history).",
    "spend_trend": "log(spend last 30 days) minus log(monthly spend in the 60 days before): negative means spend is falling.",
    "frequency_trend": "Purchases in the last 30 days minus the monthly rate of the 60 days before.",
    "mean_gap_days": "Average days between purchase days (0 for one purchase day).",
    "gap_std_days": "Spread (standard deviation) of the days between purchase days (0 for fewer than two gaps' worth).",
    "overdue_ratio": "Days since the last purchase over the average gap: how many usual gaps have passed (0 for one purchase day).",
    "active_days_90d": "Distinct days with a purchase in the last 90 days.",
    "mobile_share": "Share of purchases made on mobile (whole history).",
    "store_share": "Share of purchases made in a store (whole history).",
    "weekend_share": "Share of purchases made on Saturday or Sunday (whole history).",
    "n_categories": f"Distinct product categories bought in the last {WINDOW_DAYS} days.",
    "feature_timestamp": "The instant the features are valid at (end of the snapshot day).",
    "last_tx_ts": "Time of the last purchase (used to derive labels, never a model input).",
}


class FeaturesConfig(dg.Config):
    population_days: int | None = Field(
        default=default_of("customer_features", "population_days"),
        ge=1,
        description="Score every customer with a purchase in this many days before the snapshot; none means all of history "
        "(population_days).",
    )


@dg.asset(
    partitions_def=daily_partitions,
    backfill_policy=dg.BackfillPolicy.single_run(),
    ins={
        "validated_transactions": dg.AssetIn(
            # The windowed features' days: the day itself and the WINDOW_DAYS - 1 days before it, never later days.
            # Older history arrives through the carried state.
            partition_mapping=dg.TimeWindowPartitionMapping(
                start_offset=-(WINDOW_DAYS - 1), end_offset=0, allow_nonexistent_upstream_partitions=True
            ),
            # Read by the asset itself, from the lake: into polars here, or by Spark's executors (compute.engine).
            dagster_type=dg.Nothing,
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
                "non-negative, recency within the customer's age, nested windows, fresh feature timestamps."
            ),
            blocking=True,
        ),
    ],
)
def customer_features(
    context: dg.AssetExecutionContext, config: FeaturesConfig, warehouse: SqlWarehouse, lake: Lake, compute: ComputeResource
):
    """Who each customer is as of the end of the day: whole-history recency, age, purchases, spend and
    gaps between purchases (the quantities of BG/NBD), 7/30/90-day windows, trends, channel and weekday habits.

    One row per customer with any purchase before the day (or within
    `population_days`, when set): a one-time buyer from long ago is scored too.
    Whole-history features come from a per-customer state carried from the
    previous day's run, so a daily run reads one day plus the 90-day window,
    however long the history. Computed only from transactions up to the end
    of the snapshot day, so a snapshot never changes when later data arrives.
    With `compute.engine: spark` the same features are computed on Spark.
    """
    days = partition_days(context)
    # Features that need an optional column (quantity, channel, category) exist only when the source has it.
    source = warehouse.inspect_source()
    channels, extras = tuple(warehouse.channels), tuple(warehouse.extra_columns)
    columns = feature_columns((n for n in RAW_COLUMNS if n not in source.missing_optional), channels, extras)
    window_days, before_history = window_in_history(
        context.asset_partition_keys_for_input("validated_transactions"), lake.existing_partitions(VALIDATED)
    )
    if before_history:
        context.log.info(
            f"customer_features: {len(before_history)} days of the {WINDOW_DAYS}-day window ({before_history[0]}..{before_history[-1]}) "
            "precede the first ingested day: no history there"
        )
    if compute.spark:
        from ml_assets.assets.features_spark import spark_customer_features

        yield from spark_customer_features(context, config, compute, lake, days, window_days, columns, channels, extras)
        return
    # Only the columns features are computed from: the window is held for the whole run (ids and other text columns
    # of 120 days at 10 M transactions a year are a few hundred MB).
    validated_transactions = lake.read_partitions(
        VALIDATED, window_days, needed_by=" (needed by customer_features)", columns=[*STATE_INPUTS, "category", *extras], where_present=True
    )
    # A further categorical column added later is absent from older partitions: null there, so no value.
    missing = [e for e in extras if e not in validated_transactions.columns]
    if missing:
        validated_transactions = validated_transactions.with_columns(pl.lit(None, dtype=pl.String).alias(e) for e in missing)
    state, state_from = _state_before(days[0], lake, channels)
    ticker = Ticker("customer_features", len(days), context.log.info)
    writer = _DayWriter(context, lake, columns)
    # Each day goes to the lake as soon as it is computed: a range run holds one day of features, never the whole range.
    _, state = fold_snapshots(
        state,
        validated_transactions,
        days,
        columns=columns,
        channels=channels,
        extras=extras,
        population_days=config.population_days,
        on_day=ticker.tick,
        write_day=writer.write,
    )
    del validated_transactions
    _keep_state(lake, days[-1], state)
    for day in days:
        context.add_asset_metadata(
            {**writer.metadata[day], "customers_in_state": state.height, "state_from": state_from}, partition_key=day.isoformat()
        )
    # The files are written: nothing for the IO manager to store.
    yield dg.Output(
        None, metadata={"lake_path": dg.MetadataValue.path(str(lake.path_for(FEATURES, days[0].isoformat(), ".parquet").parent))}
    )
    yield from check_results(writer.duplicates, writer.validation.outcomes())


class _DayWriter:
    """One day of features at a time: its file in the lake, its figures, its duplicate count, its validation."""

    def __init__(self, context: dg.AssetExecutionContext, lake: Lake, columns: tuple[str, ...]) -> None:
        self.context, self.lake = context, lake
        self.validation = FeatureValidation(columns)
        self.duplicates = 0
        self.metadata: dict[dt.date, dict[str, object]] = {}

    def write(self, day: dt.date, part: pl.DataFrame) -> None:
        self.lake.write_parquet(self.lake.path_for(FEATURES, day.isoformat(), ".parquet"), part)
        # Per day: one hash of a day's customers instead of one over (customer, day) for the whole range.
        self.duplicates += int(part["customer_id"].is_duplicated().sum())
        means = (
            part.select(pl.col("recency_days", "tx_count_30d", "spend_30d", "avg_basket").mean()).row(0, named=True) if part.height else {}
        )
        self.metadata[day] = {
            **frame_metadata(part, FEATURE_DESCRIPTIONS),
            "active_customers": part.height,
            **{f"mean_{c}": round(float(v), 4) for c, v in means.items()},
        }
        if part.is_empty():
            self.context.log.warning(f"customer_features {day}: no customer has a purchase before the end of this day")
        self.validation.add(part)


def check_results(dupes: int, outcomes: list[Outcome]) -> Iterator[dg.AssetCheckResult]:
    """The stage's two blocking checks, whichever engine computed the figures."""
    failed = [o for o in outcomes if not o.success]
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


def _state_before(day: dt.date, lake: Lake, channels: tuple[str, ...]) -> tuple[pl.DataFrame, str]:
    """The carried state as of the end of the day before ``day``: the stored one, or rebuilt from every validated day before it."""
    before = (day - dt.timedelta(days=1)).isoformat()
    path = lake.path_for(STATE, before, ".parquet")
    if path.exists():
        state = pl.read_parquet(path.read_bytes())
        if fits(state, channels):
            return state, f"carried from {before}"
    history = [p for p in lake.existing_partitions(VALIDATED) if p <= before]
    if not history:
        return empty_state(channels), "empty: no validated day before it"
    cutoff = cutoff_for(day - dt.timedelta(days=1))

    def read(keys: list[str]) -> pl.DataFrame:
        # Only the columns the state needs (at 10 M transactions a year, all columns of 335 days took the run to 4.6 GB).
        frames = lake.read_partitions(
            VALIDATED, keys, needed_by=" (rebuilding customer_features_state)", columns=list(STATE_INPUTS), where_present=True
        )
        return frames.filter(pl.col("ts") < cutoff)

    # A stretch of days at a time: the whole history at once held 1.6 GB more at 10 M transactions a year.
    starts = range(0, len(history), REBUILD_STRETCH_DAYS)
    stretches = (
        (
            dt.date.fromisoformat(history[i + REBUILD_STRETCH_DAYS]) if i + REBUILD_STRETCH_DAYS < len(history) else None,
            read(history[i : i + REBUILD_STRETCH_DAYS]),
        )
        for i in starts
    )
    state = state_in_stretches(stretches, channels)
    return (state if state is not None else state_from_history(read(history), channels)), f"rebuilt from {len(history)} validated days"


def _keep_state(lake: Lake, day: dt.date, state: pl.DataFrame) -> None:
    """Store the state at the run's last day; keep only the newest few (a run for an older day rebuilds)."""
    lake.write_parquet(lake.path_for(STATE, day.isoformat(), ".parquet"), state)
    for old in lake.existing_partitions(STATE)[:-STATES_KEPT]:
        lake.path_for(STATE, old, ".parquet").unlink(missing_ok=True)
