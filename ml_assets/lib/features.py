"""Point-in-time customer features, computed with polars.

A snapshot for day ``D`` describes each customer as of the end of that day: it
only ever looks at transactions with ``ts < D + 1 day`` (the *cutoff*) and no
older than the lookback window.  Every windowed feature is measured back from
the cutoff, so the same code gives the same value for a snapshot no matter how
much later data exists: that is what makes training rows leakage-free.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Iterable

import polars as pl

# How far back any feature looks.  Also the span of validated partitions the
# features asset loads, so it is fixed at definition time.
LOOKBACK_DAYS = 180

FEATURE_COLUMNS: tuple[str, ...] = (
    "recency_days",
    "tenure_days",
    "tx_count_7d",
    "tx_count_30d",
    "tx_count_90d",
    "spend_7d",
    "spend_30d",
    "spend_90d",
    "spend_lookback",
    "avg_basket",
    "max_amount",
    "avg_quantity",
    "spend_trend",
    "frequency_trend",
    "mean_gap_days",
    "active_days_90d",
    "mobile_share",
    "store_share",
    "weekend_share",
    "n_categories",
)

# Features that need an optional source column: they exist only when the source has it (no constant features).
NEEDS_COLUMN: dict[str, str] = {"avg_quantity": "quantity", "mobile_share": "channel", "store_share": "channel", "n_categories": "category"}


# The channel vocabulary: the first value is the reference; every other value
# gets a share feature ("<value>_share"). The generator's by default; `churn init`
# proposes the source's most frequent values.
DEFAULT_CHANNELS: tuple[str, ...] = ("web", "mobile", "store")
_CHANNEL_SLOT = ("mobile_share", "store_share")


def share_column(value: str) -> str:
    """The feature name of one channel value's share: lower-case letters, digits and underscores."""
    slug = re.sub(r"[^a-z0-9]+", "_", value.lower()).strip("_")
    return f"{slug or 'blank'}_share"


def extra_name(column: str) -> str:
    """The lake name of a further categorical column of the user's table."""
    return "cat_" + re.sub(r"[^a-z0-9]+", "_", column.lower()).strip("_")


def values_feature(extra: str) -> str:
    """The feature of a further categorical column: distinct values a customer bought (cat_country -> n_country_values)."""
    return f"n_{extra.removeprefix('cat_')}_values"


def check_channels(values: Iterable[str]) -> list[str]:
    """A channel vocabulary whose share features have distinct names that no other feature uses."""
    values = list(values)
    names = [share_column(v) for v in values[1:]]
    clash = sorted({n for n in names if names.count(n) > 1 or n in FEATURE_COLUMNS and n not in _CHANNEL_SLOT})
    if not values or len(set(values)) != len(values) or clash:
        raise ValueError(
            f"channels {values!r}: need distinct values whose share features have distinct names not used by another feature"
            + (f" ({clash} clash)" if clash else "")
        )
    return values


def feature_columns(present: Iterable[str], channels: Iterable[str] = DEFAULT_CHANNELS, extras: Iterable[str] = ()) -> tuple[str, ...]:
    """The model inputs for a source whose optional columns ``present`` exist, in model order.

    Features that need an optional column exist only when the source has it;
    the channel shares follow the declared channel vocabulary.
    """
    present = set(present)
    out: list[str] = []
    for c in FEATURE_COLUMNS:
        if c in _CHANNEL_SLOT:
            if c == _CHANNEL_SLOT[0] and "channel" in present:
                out += [share_column(v) for v in list(channels)[1:]]
            continue
        if c not in NEEDS_COLUMN or NEEDS_COLUMN[c] in present:
            out.append(c)
    return tuple(out) + tuple(values_feature(e) for e in extras)


def model_features(frame: pl.DataFrame) -> tuple[str, ...]:
    """The feature columns a frame carries (a training set, a feature snapshot, what Feast served), in the frame's order."""
    return tuple(
        c
        for c, dtype in frame.schema.items()
        if c in FEATURE_COLUMNS or (dtype == pl.Float64 and (c.endswith("_share") or (c.startswith("n_") and c.endswith("_values"))))
    )


KEY_COLUMNS: tuple[str, ...] = ("customer_id", "snapshot_date")
# Kept beside the features but never fed to a model: labels are derived from it.
AUX_COLUMNS: tuple[str, ...] = ("feature_timestamp", "last_tx_ts")

_DAY = dt.timedelta(days=1)


def cutoff_for(snapshot_date: dt.date) -> dt.datetime:
    """First instant after ``snapshot_date``: features see only ``ts < cutoff``."""
    return dt.datetime.combine(snapshot_date + _DAY, dt.time())


def snapshot_features(
    transactions: pl.DataFrame | pl.LazyFrame,
    snapshot_date: dt.date,
    lookback_days: int = LOOKBACK_DAYS,
    columns: tuple[str, ...] = FEATURE_COLUMNS,
    channels: tuple[str, ...] = DEFAULT_CHANNELS,
    extras: tuple[str, ...] = (),
) -> pl.DataFrame:
    """One row per customer with at least one transaction in the lookback window.

    ``transactions`` needs ``customer_id, ts, amount, quantity, channel,
    category``; rows after the cutoff are ignored, so passing more history than
    needed is safe.
    """
    cutoff = cutoff_for(snapshot_date)
    window_start = cutoff - dt.timedelta(days=lookback_days)
    lf = transactions.lazy().filter((pl.col("ts") < cutoff) & (pl.col("ts") >= window_start))
    return _aggregate(lf, cutoff, snapshot_date, columns, channels, extras).collect()


def snapshots_features(
    transactions: pl.DataFrame,
    snapshot_dates: list[dt.date],
    lookback_days: int = LOOKBACK_DAYS,
    columns: tuple[str, ...] = FEATURE_COLUMNS,
    channels: tuple[str, ...] = DEFAULT_CHANNELS,
    extras: tuple[str, ...] = (),
) -> pl.DataFrame:
    """Features for several snapshot days, concatenated in day order.

    One day at a time: each aggregation is already parallel inside polars, and
    running all days at once (``collect_all``) was 25% slower on 2 cores for
    30 days at 10 M transactions a year (68 s against 51 s) for the same peak.
    """
    if not snapshot_dates:
        return empty_features(columns)
    frames = []
    tx = transactions.lazy()
    for day in sorted(snapshot_dates):
        cutoff = cutoff_for(day)
        window_start = cutoff - dt.timedelta(days=lookback_days)
        lf = tx.filter((pl.col("ts") < cutoff) & (pl.col("ts") >= window_start))
        frames.append(_aggregate(lf, cutoff, day, columns, channels, extras).collect())
    return pl.concat(frames, how="vertical")


def _aggregate(
    lf: pl.LazyFrame,
    cutoff: dt.datetime,
    snapshot_date: dt.date,
    columns: tuple[str, ...] = FEATURE_COLUMNS,
    channels: tuple[str, ...] = DEFAULT_CHANNELS,
    extras: tuple[str, ...] = (),
) -> pl.LazyFrame:
    def since(days: int) -> pl.Expr:
        return pl.col("ts") >= cutoff - dt.timedelta(days=days)

    # Per-row window flags and masked amounts are computed once, before the
    # group-by, so each aggregation is a plain sum instead of a filter + sum.
    days_before = (pl.lit(cutoff) - pl.col("ts")).dt.total_seconds() / 86_400.0
    prepared = lf.with_columns(
        days_before.alias("_days_before"),
        since(7).cast(pl.Float64).alias("_in7"),
        since(30).cast(pl.Float64).alias("_in30"),
        since(90).cast(pl.Float64).alias("_in90"),
        pl.when(since(90)).then(pl.col("ts").dt.date().cast(pl.Int32)).alias("_day90"),
        *[(pl.col("channel") == v).cast(pl.Float64).alias(f"_channel{i}") for i, v in enumerate(channels)],
        (pl.col("ts").dt.weekday() >= 6).cast(pl.Float64).alias("_weekend"),
    )
    agg = prepared.group_by("customer_id").agg(
        pl.col("ts").max().alias("last_tx_ts"),
        pl.col("_days_before").min().alias("recency_days"),
        pl.col("_days_before").max().alias("tenure_days"),
        pl.col("_in7").sum().alias("tx_count_7d"),
        pl.col("_in30").sum().alias("tx_count_30d"),
        pl.col("_in90").sum().alias("tx_count_90d"),
        (pl.col("amount") * pl.col("_in7")).sum().alias("spend_7d"),
        (pl.col("amount") * pl.col("_in30")).sum().alias("spend_30d"),
        (pl.col("amount") * pl.col("_in90")).sum().alias("spend_90d"),
        pl.col("amount").sum().alias("spend_lookback"),
        pl.col("amount").mean().alias("avg_basket"),
        pl.col("amount").max().alias("max_amount"),
        pl.col("quantity").cast(pl.Float64).mean().alias("avg_quantity"),
        pl.len().cast(pl.Float64).alias("_n"),
        pl.col("_day90").drop_nulls().n_unique().cast(pl.Float64).alias("active_days_90d"),
        *[pl.col(f"_channel{i}").mean().alias(share_column(v)) for i, v in enumerate(channels) if i > 0],
        pl.col("_weekend").mean().alias("weekend_share"),
        # Distinct values as bought: an open vocabulary, no value folded into another.
        pl.col("category").drop_nulls().n_unique().cast(pl.Float64).alias("n_categories"),
        *[pl.col(e).drop_nulls().n_unique().cast(pl.Float64).alias(values_feature(e)) for e in extras],
    )
    every = agg.select(
        pl.col("customer_id"),
        pl.lit(snapshot_date).alias("snapshot_date"),
        pl.col("recency_days"),
        pl.col("tenure_days"),
        pl.col("tx_count_7d"),
        pl.col("tx_count_30d"),
        pl.col("tx_count_90d"),
        pl.col("spend_7d"),
        pl.col("spend_30d"),
        pl.col("spend_90d"),
        pl.col("spend_lookback"),
        pl.col("avg_basket"),
        pl.col("max_amount"),
        pl.col("avg_quantity"),
        # Last 30 days against the monthly average of the 60 days before them:
        # log-scale, so it stays finite when either side is zero.
        ((pl.col("spend_30d") + 1).log() - ((pl.col("spend_90d") - pl.col("spend_30d")) / 2 + 1).log()).alias("spend_trend"),
        (pl.col("tx_count_30d") - (pl.col("tx_count_90d") - pl.col("tx_count_30d")) / 2).alias("frequency_trend"),
        ((pl.col("tenure_days") - pl.col("recency_days")) / pl.max_horizontal(pl.col("_n") - 1, pl.lit(1.0))).alias("mean_gap_days"),
        pl.col("active_days_90d"),
        *[pl.col(share_column(v)) for v in channels[1:]],
        pl.col("weekend_share"),
        pl.col("n_categories"),
        *[pl.col(values_feature(e)) for e in extras],
        pl.lit(cutoff).dt.cast_time_unit("us").alias("feature_timestamp"),
        pl.col("last_tx_ts").dt.cast_time_unit("us"),
    )
    return every.select("customer_id", "snapshot_date", *columns, *AUX_COLUMNS).sort("customer_id")


def empty_features(columns: tuple[str, ...] = FEATURE_COLUMNS) -> pl.DataFrame:
    schema: dict[str, pl.DataType] = {"customer_id": pl.String(), "snapshot_date": pl.Date()}
    schema.update({c: pl.Float64() for c in columns})
    schema.update({"feature_timestamp": pl.Datetime("us"), "last_tx_ts": pl.Datetime("us")})
    return pl.DataFrame(schema=schema)


def churn_labels(snapshot: pl.DataFrame, later: pl.DataFrame, snapshot_date: dt.date) -> pl.DataFrame:
    """Label each customer of ``snapshot``: churned = no purchase in the horizon.

    ``later`` is the feature snapshot at ``snapshot_date + horizon``: a
    customer bought within the horizon exactly when their last purchase as of
    that later day falls after this snapshot's cutoff.  A customer missing from
    ``later`` bought nothing in its lookback window, so nothing in the horizon.
    """
    cutoff = cutoff_for(snapshot_date)
    last = later.select("customer_id", pl.col("last_tx_ts").alias("_later_last"))
    return (
        snapshot.join(last, on="customer_id", how="left")
        .with_columns((pl.col("_later_last").is_null() | (pl.col("_later_last") < cutoff)).cast(pl.Int8).alias("churned"))
        .drop("_later_last")
    )
