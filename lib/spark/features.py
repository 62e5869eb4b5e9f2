"""The carried per-customer state and the point-in-time features of ``lib.features``, as Spark DataFrames.

Every function here is the Spark form of its namesake in ``lib.history`` or
``lib.features``, expression for expression, so the two engines give the same
values (tested: integers exactly, floats within 1e-9). Nothing is collected
to the driver but single figures (the two dates ``merge_states`` checks);
the work is grouped by customer, so it spreads over as many executors as
there are. Timestamps are Spark's TIMESTAMP_NTZ: the lake's naive UTC instants.
"""

from __future__ import annotations

import datetime as dt
from typing import TYPE_CHECKING

from pyspark.sql import Column, Window
from pyspark.sql import functions as F

from lib.features import AUX_COLUMNS, WINDOW_DAYS, cutoff_for, share_column, values_feature
from lib.history import STATE_COLUMNS, channel_column

if TYPE_CHECKING:
    from collections.abc import Callable

    from pyspark.sql import DataFrame, SparkSession

_DAY_SECONDS = 86_400.0
_SUMS = ("n_tx", "n_days", "spend", "quantity", "weekend_tx", "gap_sq")


def instant(value: dt.datetime) -> Column:
    """A naive UTC instant as a TIMESTAMP_NTZ literal (a Python datetime would be read in the session's time zone)."""
    return F.lit(value.isoformat(sep=" ")).cast("timestamp_ntz")


def _seconds_between(later: Column, earlier: Column) -> Column:
    """Whole seconds from ``earlier`` to ``later``, truncated toward zero: polars' ``Duration.total_seconds()``."""
    micros = F.unix_micros(later.cast("timestamp")) - F.unix_micros(earlier.cast("timestamp"))
    return (F.when(micros >= 0, F.floor(micros / 1_000_000)).otherwise(F.ceil(micros / 1_000_000))).cast("double")


def state_columns(channels: tuple[str, ...]) -> list[str]:
    return [*STATE_COLUMNS, *(channel_column(i) for i in range(len(channels)))]


def empty_state(spark: SparkSession, channels: tuple[str, ...]) -> DataFrame:
    fields = ", ".join(
        f"{c} {'string' if c == 'customer_id' else 'timestamp_ntz' if c.endswith('_ts') else 'double'}" for c in state_columns(channels)
    )
    return spark.createDataFrame([], fields)


def state_from_history(transactions: DataFrame, channels: tuple[str, ...]) -> DataFrame:
    """``lib.history.state_from_history``: the state of every customer in ``transactions``."""
    names = set(transactions.columns)
    quantity = F.col("quantity").cast("double") if "quantity" in names else F.lit(None).cast("double")
    channel = F.col("channel") if "channel" in names else F.lit(None).cast("string")
    tx = transactions.withColumn("ts", F.col("ts").cast("timestamp_ntz")).withColumn("_day", F.to_date("ts"))
    per_day = tx.groupBy("customer_id", "_day").agg(
        F.min("ts").alias("first_ts"),
        F.max("ts").alias("last_ts"),
        F.count(F.lit(1)).cast("double").alias("n_tx"),
        F.sum("amount").alias("spend"),
        F.max("amount").alias("max_amount"),
        F.coalesce(F.sum(quantity), F.lit(0.0)).alias("quantity"),
        # Saturday and Sunday (Spark counts from Sunday = 1).
        F.sum(F.when(F.dayofweek("ts").isin(1, 7), 1).otherwise(0)).cast("double").alias("weekend_tx"),
        *[F.sum(F.when(channel == v, 1).otherwise(0)).cast("double").alias(channel_column(i)) for i, v in enumerate(channels)],
    )
    previous = F.lag("_day").over(Window.partitionBy("customer_id").orderBy("_day"))
    per_day = per_day.withColumn("_gap_sq", F.coalesce(F.datediff("_day", previous).cast("double") ** 2, F.lit(0.0)))
    state = per_day.groupBy("customer_id").agg(
        F.min("first_ts").alias("first_ts"),
        F.max("last_ts").alias("last_ts"),
        F.sum("n_tx").alias("n_tx"),
        F.count(F.lit(1)).cast("double").alias("n_days"),
        F.sum("spend").alias("spend"),
        F.max("max_amount").alias("max_amount"),
        F.sum("quantity").alias("quantity"),
        F.sum("weekend_tx").alias("weekend_tx"),
        F.sum("_gap_sq").alias("gap_sq"),
        *[F.sum(channel_column(i)).alias(channel_column(i)) for i in range(len(channels))],
    )
    return state.select(*state_columns(channels))


def merge_states(before: DataFrame, after: DataFrame) -> DataFrame:
    """``lib.history.merge_states``: two consecutive stretches of history, ``before`` wholly earlier than ``after``."""
    bounds = before.agg(F.max("last_ts").alias("last")).first()
    first = after.agg(F.min("first_ts").alias("first")).first()
    last_before = bounds["last"] if bounds else None
    first_after = first["first"] if first else None
    if first_after is None:
        return before
    if last_before is None:
        return after
    if first_after.date() <= last_before.date():
        raise ValueError(
            f"merge_states: the later stretch starts on {first_after.date()}, not after the earlier one's last day {last_before.date()}"
        )
    columns = before.columns
    sums = [c for c in columns if c in _SUMS or c.startswith("ch_")]
    b = after.select("customer_id", *[F.col(c).alias(f"{c}_b") for c in columns if c != "customer_id"])
    joined = before.join(b, on="customer_id", how="full_outer")
    both = F.col("last_ts").isNotNull() & F.col("first_ts_b").isNotNull()
    bridge = F.coalesce(F.datediff(F.to_date("first_ts_b"), F.to_date("last_ts")).cast("double") ** 2, F.lit(0.0))
    merged = joined.select(
        "customer_id",
        F.coalesce("first_ts", "first_ts_b").alias("first_ts"),
        F.coalesce("last_ts_b", "last_ts").alias("last_ts"),
        *[(F.coalesce(F.col(c), F.lit(0.0)) + F.coalesce(F.col(f"{c}_b"), F.lit(0.0))).alias(c) for c in sums if c != "gap_sq"],
        (
            F.coalesce(F.col("gap_sq"), F.lit(0.0)) + F.coalesce(F.col("gap_sq_b"), F.lit(0.0)) + F.when(both, bridge).otherwise(F.lit(0.0))
        ).alias("gap_sq"),
        F.greatest("max_amount", "max_amount_b").alias("max_amount"),
    )
    return merged.select(*columns)


def _windowed(window: DataFrame, cutoff: dt.datetime, extras: tuple[str, ...]) -> DataFrame:
    """``lib.features._windowed``: per customer, the 7/30/90-day counts, spend, active days and distinct values."""

    def since(days: int) -> Column:
        return F.col("ts") >= instant(cutoff - dt.timedelta(days=days))

    category = F.col("category") if "category" in window.columns else None
    flagged = window.select(
        "customer_id",
        "amount",
        *([F.col("category")] if category is not None else []),
        *[F.col(e) for e in extras],
        since(7).cast("double").alias("_in7"),
        since(30).cast("double").alias("_in30"),
        since(90).cast("double").alias("_in90"),
        F.when(since(90), F.to_date("ts")).alias("_day90"),
    )
    return flagged.groupBy("customer_id").agg(
        F.sum("_in7").alias("tx_count_7d"),
        F.sum("_in30").alias("tx_count_30d"),
        F.sum("_in90").alias("tx_count_90d"),
        F.sum(F.col("amount") * F.col("_in7")).alias("spend_7d"),
        F.sum(F.col("amount") * F.col("_in30")).alias("spend_30d"),
        F.sum(F.col("amount") * F.col("_in90")).alias("spend_90d"),
        F.count_distinct("_day90").cast("double").alias("active_days_90d"),
        (F.count_distinct("category") if category is not None else F.lit(0)).cast("double").alias("n_categories"),
        *[F.count_distinct(e).cast("double").alias(values_feature(e)) for e in extras],
    )


def features_from_state(
    state: DataFrame,
    window: DataFrame,
    snapshot_date: dt.date,
    columns: tuple[str, ...],
    channels: tuple[str, ...],
    extras: tuple[str, ...] = (),
    population_days: int | None = None,
) -> DataFrame:
    """``lib.features.features_from_state``: the snapshot of ``snapshot_date`` from the state as of its end and its window."""
    cutoff = cutoff_for(snapshot_date)
    people = state
    if population_days is not None:
        people = people.filter(F.col("last_ts") >= instant(cutoff - dt.timedelta(days=population_days)))
    windowed = ["tx_count_7d", "tx_count_30d", "tx_count_90d", "spend_7d", "spend_30d", "spend_90d", "active_days_90d", "n_categories"]
    windowed += [values_feature(e) for e in extras]
    recency = _seconds_between(instant(cutoff), F.col("last_ts")) / _DAY_SECONDS
    age = _seconds_between(instant(cutoff), F.col("first_ts")) / _DAY_SECONDS
    span = F.datediff(F.to_date("last_ts"), F.to_date("first_ts")).cast("double")
    repeats = F.col("n_days") - 1
    mean_gap = F.when(repeats > 0, span / repeats).otherwise(F.lit(0.0))
    joined = people.join(_windowed(window, cutoff, extras), on="customer_id", how="left").fillna(0.0, subset=windowed)
    values = {
        "recency_days": recency,
        "tenure_days": age,
        "lifetime_tx": F.col("n_tx"),
        "repeat_days": repeats,
        "active_span_days": span,
        "lifetime_spend": F.col("spend"),
        **{c: F.col(c) for c in windowed},
        "avg_basket": F.col("spend") / F.col("n_tx"),
        "max_amount": F.col("max_amount"),
        "avg_quantity": F.col("quantity") / F.col("n_tx"),
        "spend_trend": F.log(F.col("spend_30d") + 1) - F.log((F.col("spend_90d") - F.col("spend_30d")) / 2 + 1),
        "frequency_trend": F.col("tx_count_30d") - (F.col("tx_count_90d") - F.col("tx_count_30d")) / 2,
        "mean_gap_days": mean_gap,
        "gap_std_days": F.when(repeats > 0, F.sqrt(F.greatest(F.col("gap_sq") / repeats - mean_gap**2, F.lit(0.0)))).otherwise(F.lit(0.0)),
        "overdue_ratio": F.when(repeats > 0, recency / F.greatest(mean_gap, F.lit(1.0))).otherwise(F.lit(0.0)),
        **{share_column(v): F.col(channel_column(i)) / F.col("n_tx") for i, v in enumerate(channels) if i > 0},
        "weekend_share": F.col("weekend_tx") / F.col("n_tx"),
    }
    return joined.select(
        "customer_id",
        F.lit(snapshot_date).alias("snapshot_date"),
        *[values[c].cast("double").alias(c) for c in columns],
        instant(cutoff).alias(AUX_COLUMNS[0]),
        F.col("last_ts").alias(AUX_COLUMNS[1]),
    )


def fold_snapshots(
    state: DataFrame,
    transactions: DataFrame,
    snapshot_dates: list[dt.date],
    columns: tuple[str, ...],
    channels: tuple[str, ...],
    extras: tuple[str, ...] = (),
    population_days: int | None = None,
    write_day: Callable[[dt.date, DataFrame], None] | None = None,
) -> tuple[list[DataFrame], DataFrame]:
    """``lib.features.fold_snapshots``: one frame per day and the state after the last.

    The state of each day is checkpointed on the executors before the next is
    folded in, so a range of days never builds one ever-deeper plan. With
    ``write_day``, each day's frame is handed to it as soon as it is defined
    (written while the state is still cached) and not kept.
    """
    days = sorted(snapshot_dates)
    tx = transactions.withColumn("ts", F.col("ts").cast("timestamp_ntz"))
    frames: list[DataFrame] = []
    folded = cutoff_for(days[0] - dt.timedelta(days=1))
    for day in days:
        cutoff = cutoff_for(day)
        today = tx.filter((F.col("ts") >= instant(folded)) & (F.col("ts") < instant(cutoff)))
        state = merge_states(state, state_from_history(today, channels)).localCheckpoint()
        folded = cutoff
        window = tx.filter((F.col("ts") < instant(cutoff)) & (F.col("ts") >= instant(cutoff - dt.timedelta(days=WINDOW_DAYS))))
        frame = features_from_state(state, window, day, columns, channels, extras, population_days)
        if write_day is not None:
            write_day(day, frame)
        else:
            frames.append(frame)
    return frames, state
