"""Each customer's whole purchase history as a small carried state, folded in one day at a time.

The state holds, per customer, the sums a full-history feature needs: first and
last purchase, purchases, purchase days, spend, largest purchase, items, weekend
purchases, purchases per channel and the sum of squared gaps between purchase
days. Every one of them combines exactly: the state of days ``..D`` merged with
the state of day ``D + 1`` alone is the state of days ``..D + 1``. So a daily run
costs one day's transactions plus one pass over the customers, however long the
history is; ``state_from_history`` builds the same state from scratch (the first
run, or after a gap) and is what the folded state is tested against.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable
from typing import cast

import polars as pl

# Columns of a state without the per-channel counts (``ch_<i>``, one per channel value).
STATE_COLUMNS: dict[str, pl.DataType] = {
    "customer_id": pl.String(),
    "first_ts": pl.Datetime("us"),
    "last_ts": pl.Datetime("us"),
    "n_tx": pl.Float64(),
    "n_days": pl.Float64(),
    "spend": pl.Float64(),
    "max_amount": pl.Float64(),
    "quantity": pl.Float64(),
    "weekend_tx": pl.Float64(),
    # Sum over consecutive purchase days of (days between them)^2: with n_days and
    # the first and last day it gives the mean and spread of the gaps.
    "gap_sq": pl.Float64(),
}


def channel_column(i: int) -> str:
    return f"ch_{i}"


def state_schema(channels: tuple[str, ...]) -> dict[str, pl.DataType]:
    return {**STATE_COLUMNS, **{channel_column(i): pl.Float64() for i in range(len(channels))}}


def empty_state(channels: tuple[str, ...]) -> pl.DataFrame:
    return pl.DataFrame(schema=state_schema(channels))


def fits(state: pl.DataFrame, channels: tuple[str, ...]) -> bool:
    """Whether a stored state was built for this channel vocabulary (else it is rebuilt from history)."""
    return dict(state.schema) == state_schema(channels)


# The transaction columns a state is built from; quantity and channel only where the source has them.
STATE_INPUTS = ("customer_id", "ts", "amount", "quantity", "channel")


def state_from_history(transactions: pl.DataFrame | pl.LazyFrame, channels: tuple[str, ...]) -> pl.DataFrame:
    """The state of every customer in ``transactions`` (columns customer_id, ts, amount; quantity and channel when present)."""
    lf = transactions.lazy()
    names = lf.collect_schema().names()
    quantity = pl.col("quantity").cast(pl.Float64) if "quantity" in names else pl.lit(None, dtype=pl.Float64)
    channel = pl.col("channel") if "channel" in names else pl.lit(None, dtype=pl.String)
    per_day = (
        lf.with_columns(pl.col("ts").cast(pl.Datetime("us")), pl.col("ts").dt.date().alias("_day"))
        .group_by("customer_id", "_day")
        .agg(
            pl.col("ts").min().alias("first_ts"),
            pl.col("ts").max().alias("last_ts"),
            pl.len().cast(pl.Float64).alias("n_tx"),
            pl.col("amount").sum().alias("spend"),
            pl.col("amount").max().alias("max_amount"),
            quantity.sum().alias("quantity"),
            (pl.col("ts").dt.weekday() >= 6).sum().cast(pl.Float64).alias("weekend_tx"),
            *[(channel == v).sum().cast(pl.Float64).alias(channel_column(i)) for i, v in enumerate(channels)],
        )
        .sort("customer_id", "_day")
        .with_columns((pl.col("_day").diff().over("customer_id").dt.total_days().cast(pl.Float64) ** 2).fill_null(0.0).alias("_gap_sq"))
    )
    state = per_day.group_by("customer_id").agg(
        pl.col("first_ts").min(),
        pl.col("last_ts").max(),
        pl.col("n_tx").sum(),
        pl.len().cast(pl.Float64).alias("n_days"),
        pl.col("spend").sum(),
        pl.col("max_amount").max(),
        pl.col("quantity").sum(),
        pl.col("weekend_tx").sum(),
        pl.col("_gap_sq").sum().alias("gap_sq"),
        *[pl.col(channel_column(i)).sum() for i in range(len(channels))],
    )
    return state.select(list(state_schema(channels))).sort("customer_id").collect()


def merge_states(before: pl.DataFrame, after: pl.DataFrame) -> pl.DataFrame:
    """The state of two consecutive stretches of history, ``before`` wholly earlier than ``after`` (whole days)."""
    if before.is_empty():
        return after
    if after.is_empty():
        return before
    last_before = cast("dt.datetime | None", before["last_ts"].max())
    first_after = cast("dt.datetime | None", after["first_ts"].min())
    if last_before is not None and first_after is not None and first_after.date() <= last_before.date():
        raise ValueError(
            f"merge_states: the later stretch starts on {first_after.date()}, not after the earlier one's last day {last_before.date()}"
        )
    sums = [c for c in before.columns if c in ("n_tx", "n_days", "spend", "quantity", "weekend_tx", "gap_sq") or c.startswith("ch_")]
    joined = before.join(after, on="customer_id", how="full", coalesce=True, suffix="_b")
    both = pl.col("last_ts").is_not_null() & pl.col("first_ts_b").is_not_null()
    bridge = ((pl.col("first_ts_b").dt.date() - pl.col("last_ts").dt.date()).dt.total_days().cast(pl.Float64) ** 2).fill_null(0.0)
    merged = joined.select(
        "customer_id",
        pl.coalesce("first_ts", "first_ts_b").alias("first_ts"),
        pl.coalesce("last_ts_b", "last_ts").alias("last_ts"),
        *[(pl.col(c).fill_null(0.0) + pl.col(f"{c}_b").fill_null(0.0)).alias(c) for c in sums if c != "gap_sq"],
        (pl.col("gap_sq").fill_null(0.0) + pl.col("gap_sq_b").fill_null(0.0) + pl.when(both).then(bridge).otherwise(0.0)).alias("gap_sq"),
        pl.max_horizontal("max_amount", "max_amount_b").alias("max_amount"),
    )
    return merged.select(before.columns).sort("customer_id")


def fold_day(state: pl.DataFrame, day_transactions: pl.DataFrame, channels: tuple[str, ...]) -> pl.DataFrame:
    """The state after one more day: ``day_transactions`` are that day's (and later than everything in ``state``)."""
    if day_transactions.is_empty():
        return state
    return merge_states(state, state_from_history(day_transactions, channels))


def state_in_stretches(stretches: Iterable[tuple[dt.date | None, pl.DataFrame]], channels: tuple[str, ...]) -> pl.DataFrame | None:
    """The state of a history read a stretch at a time, oldest first: the same as ``state_from_history`` of it all,
    holding one stretch at a time (a first run at 10 M transactions a year read 335 days at once).

    Each stretch comes with the first day of the next one (None for the last): its rows dated on or after that day
    wait for the next stretch, so every merge is of whole, consecutive days. None when a stretch holds a row dated
    before a day already folded (files that do not follow the days): the caller builds the state from all of it.
    """
    state, carried, folded_until = empty_state(channels), None, None
    for next_first, frame in stretches:
        frame = frame.with_columns(pl.col("ts").cast(pl.Datetime("us")))
        if carried is not None:
            frame = pl.concat([carried, frame], how="diagonal_relaxed")
        day = pl.col("ts").dt.date()
        if folded_until is not None and frame.filter(day < folded_until).height:
            return None
        now, carried = (frame, None) if next_first is None else (frame.filter(day < next_first), frame.filter(day >= next_first))
        state = merge_states(state, state_from_history(now, channels))
        folded_until = next_first
    return state
