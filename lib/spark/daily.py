"""The features stage on Spark: the carried state folded a day at a time, each day's snapshot written to the lake.

What ``ml_assets/assets/features.py`` does with polars, on a Spark session,
reading and writing the same files: the stored state of the day before (or
the validated history, when there is none that fits), the validated days of
the 90-day window, one features file per day and the state after the last.
The per-day figures the asset records and the feature expectations are
computed where the rows are (Spark aggregations, great-expectations' Spark
engine); only those figures come back to the driver.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from pyspark.sql import functions as F

from lib.expectations import Outcome, feature_rules, run_suite
from lib.features import cutoff_for
from lib.spark import features as sf
from lib.spark.lake import read_days, write_day

if TYPE_CHECKING:
    from pyspark.sql import DataFrame, SparkSession
    from upath import UPath

MEANS = ("recency_days", "tx_count_30d", "spend_30d", "avg_basket")


@dataclass
class DayFigures:
    rows: int = 0
    duplicates: int = 0
    means: dict[str, float] = field(default_factory=dict)


@dataclass
class FeatureRun:
    days: dict[dt.date, DayFigures]
    customers_in_state: int
    state_from: str
    outcomes: list[Outcome]


@dataclass(frozen=True)
class FeatureInputs:
    """Where the stage reads: the stored state of the day before the first (if any), the validated days before the
    first day (to rebuild the state when none fits) and the validated days of the run's windows."""

    stored_state: UPath | None
    history: list[UPath]
    window: list[UPath]


def load_state(spark: SparkSession, inputs: FeatureInputs, first_day: dt.date, channels: tuple[str, ...]) -> tuple[DataFrame, str]:
    """The state as of the end of the day before ``first_day``: the stored one when it fits the channels, else rebuilt."""
    before = first_day - dt.timedelta(days=1)
    if inputs.stored_state is not None:
        state = read_days(spark, [inputs.stored_state])
        if state.columns == sf.state_columns(channels):
            return state, f"carried from {before.isoformat()}"
    if not inputs.history:
        return sf.empty_state(spark, channels), "empty: no validated day before it"
    history = read_days(spark, inputs.history).filter(F.col("ts") < sf.instant(cutoff_for(before)))
    return sf.state_from_history(history, channels), f"rebuilt from {len(inputs.history)} validated days"


def run_features(
    spark: SparkSession,
    inputs: FeatureInputs,
    days: list[dt.date],
    target: Callable[[dt.date], UPath],
    state_target: UPath,
    columns: tuple[str, ...],
    channels: tuple[str, ...],
    extras: tuple[str, ...] = (),
    population_days: int | None = None,
    on_day: Callable[[int], None] | None = None,
) -> FeatureRun:
    """Fold and write every day of ``days``; store the state after the last at ``state_target``; measure what was written.

    ``on_day(days done)`` after each day is written (its rows are counted once, at the end, not per day).
    """
    state, state_from = load_state(spark, inputs, days[0], channels)
    transactions = read_days(spark, inputs.window)
    for extra in extras:
        if extra not in transactions.columns:
            transactions = transactions.withColumn(extra, F.lit(None).cast("string"))
    written: list[UPath] = []

    def write(day: dt.date, frame: DataFrame) -> None:
        written.append(target(day))
        write_day(frame, written[-1])
        if on_day is not None:
            on_day(len(written))

    _, state = sf.fold_snapshots(state, transactions, days, columns, channels, extras, population_days, write_day=write)
    write_day(state, state_target)
    customers = read_days(spark, [state_target]).count()
    frame = read_days(spark, written)
    figures = _day_figures(frame, days)
    helper = frame.drop("last_tx_ts").withColumn(
        "__fresh", F.col("feature_timestamp") == F.to_timestamp_ntz(F.date_add("snapshot_date", 1).cast("string"))
    )
    outcomes = run_suite(helper, "customer_features", feature_rules(columns))
    return FeatureRun(figures, customers, state_from, outcomes)


def _day_figures(frame: DataFrame, days: list[dt.date]) -> dict[dt.date, DayFigures]:
    """Rows, duplicate customers and a few means per day, in one aggregation."""
    rows = frame.groupBy("snapshot_date").agg(
        F.count(F.lit(1)).alias("rows"),
        (F.count(F.lit(1)) - F.count_distinct("customer_id")).alias("duplicates"),
        *[F.mean(c).alias(c) for c in MEANS],
    )
    figures = {day: DayFigures() for day in days}
    for row in rows.collect():
        figures[row["snapshot_date"]] = DayFigures(
            int(row["rows"]), int(row["duplicates"]), {c: round(float(row[c]), 4) for c in MEANS if row[c] is not None}
        )
    return figures
