"""Point-in-time customer features, computed with polars.

A snapshot for day ``D`` describes each customer as of the end of that day: it
only ever looks at transactions with ``ts < D + 1 day`` (the *cutoff*). Two
kinds of feature sit side by side:

- *whole-history* features (recency, customer age, lifetime purchases and spend,
  purchase days and the gaps between them: the quantities a BG/NBD model uses)
  come from each customer's carried state (``lib.history``), so a
  one-time buyer from two years ago is still a customer with a row;
- *windowed* features (purchases and spend in the last 7/30/90 days, trends,
  categories bought) look back ``WINDOW_DAYS`` from the cutoff and are 0 for a
  customer who bought nothing in the window.

The population of a snapshot is every customer with a purchase in the last
``population_days`` (default: all of history). The same code gives the same
value for a snapshot no matter how much later data exists: that is what makes
training rows leakage-free.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Callable, Iterable

import polars as pl

from lib.history import channel_column, empty_state, fold_day, state_from_history

# How far back the windowed features look: also the span of validated
# partitions the features asset loads beside the carried state.
WINDOW_DAYS = 90

# Whole-history features: what BG/NBD sees (recency, age, repeat purchases, span) and lifetime spend.
LIFETIME_COLUMNS: tuple[str, ...] = ("recency_days", "tenure_days", "lifetime_tx", "repeat_days", "active_span_days", "lifetime_spend")

FEATURE_COLUMNS: tuple[str, ...] = (
    *LIFETIME_COLUMNS,
    "tx_count_7d",
    "tx_count_30d",
    "tx_count_90d",
    "spend_7d",
    "spend_30d",
    "spend_90d",
    "avg_basket",
    "max_amount",
    "avg_quantity",
    "spend_trend",
    "frequency_trend",
    "mean_gap_days",
    "gap_std_days",
    "overdue_ratio",
    "active_days_90d",
    "mobile_share",
    "store_share",
    "weekend_share",
    "n_categories",
)

# What each feature means, in the words of a retention analyst: the reasons batch scores and the service give
# (`lib.explain.top_reasons`) and the model card's overall reasons. Kept beside the definitions, one per feature.
FEATURE_LABELS: dict[str, str] = {
    "recency_days": "days since the last purchase",
    "tenure_days": "days since the first purchase",
    "lifetime_tx": "purchases ever",
    "repeat_days": "days with a repeat purchase",
    "active_span_days": "days between first and last purchase",
    "lifetime_spend": "spend ever",
    "tx_count_7d": "purchases in the last 7 days",
    "tx_count_30d": "purchases in the last 30 days",
    "tx_count_90d": "purchases in the last 90 days",
    "spend_7d": "spend in the last 7 days",
    "spend_30d": "spend in the last 30 days",
    "spend_90d": "spend in the last 90 days",
    "avg_basket": "average purchase amount",
    "max_amount": "largest purchase",
    "avg_quantity": "average items per purchase",
    "spend_trend": "spend in the last 30 days against the 60 before",
    "frequency_trend": "purchases in the last 30 days against the 60 before",
    "mean_gap_days": "usual days between purchases",
    "gap_std_days": "irregularity of the days between purchases",
    "overdue_ratio": "time since the last purchase against the usual gap",
    "active_days_90d": "days with a purchase in the last 90 days",
    "weekend_share": "share of purchases at weekends",
    "n_categories": "categories bought in the last 90 days",
}


def window_in_history(window: list[str], ingested: list[str]) -> tuple[list[str], list[str]]:
    """(the window's days to read, the days before the history starts) for one features run.

    History starts at the first ingested day: a day of the 90-day window before it holds no transactions of the
    ingested history (the demo's year, or `churn run --start` later than the calendar's start), so it is skipped and
    reported. A missing day after it is a hole and stays in the list, so reading it fails and names it.
    """
    first = min(ingested) if ingested else None
    before = [d for d in window if first is None or d < first]
    return [d for d in window if d not in before], before


def feature_label(name: str) -> str:
    """The analyst's words for a feature, including the share and distinct-values features named after the user's data."""
    if name in FEATURE_LABELS:
        return FEATURE_LABELS[name]
    if name.endswith("_share"):
        return f"share of purchases through {name.removesuffix('_share').replace('_', ' ')}"
    if name.startswith("n_") and name.endswith("_values"):
        return f"distinct {name.removeprefix('n_').removesuffix('_values').replace('_', ' ')} values in the last 90 days"
    return name.replace("_", " ")


# Features that move by construction as customers and the observed history age:
# recency and age grow by a day a day, and cumulative counts, spend, largest
# purchase and gap statistics only grow while the log gets longer. Scored, and
# in drift reports reported but never counted in the drift share.
AGEING_FEATURES = frozenset({*LIFETIME_COLUMNS, "max_amount", "mean_gap_days", "gap_std_days", "overdue_ratio"})

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
    columns: tuple[str, ...] = FEATURE_COLUMNS,
    channels: tuple[str, ...] = DEFAULT_CHANNELS,
    extras: tuple[str, ...] = (),
    population_days: int | None = None,
) -> pl.DataFrame:
    """One row per customer with a purchase before the cutoff (and within ``population_days`` when set).

    ``transactions`` is the whole history up to the snapshot (later rows are
    ignored); it needs ``customer_id, ts, amount`` and whichever of quantity,
    channel and category the columns use.
    """
    return snapshots_features(transactions.lazy().collect(), [snapshot_date], columns, channels, extras, population_days)


def snapshots_features(
    transactions: pl.DataFrame,
    snapshot_dates: list[dt.date],
    columns: tuple[str, ...] = FEATURE_COLUMNS,
    channels: tuple[str, ...] = DEFAULT_CHANNELS,
    extras: tuple[str, ...] = (),
    population_days: int | None = None,
) -> pl.DataFrame:
    """Features for several snapshot days from the whole history in ``transactions``: the state up to
    the first day is built at once, then folded one day at a time (what the daily asset does)."""
    if not snapshot_dates:
        return empty_features(columns)
    days = sorted(snapshot_dates)
    state = state_from_history(transactions.filter(pl.col("ts") < cutoff_for(days[0] - _DAY)), channels)
    frames, _ = fold_snapshots(state, transactions, days, columns, channels, extras, population_days)
    return pl.concat(frames, how="vertical")


def fold_snapshots(
    state: pl.DataFrame | None,
    transactions: pl.DataFrame,
    snapshot_dates: list[dt.date],
    columns: tuple[str, ...] = FEATURE_COLUMNS,
    channels: tuple[str, ...] = DEFAULT_CHANNELS,
    extras: tuple[str, ...] = (),
    population_days: int | None = None,
    on_day: Callable[[int, int], None] | None = None,
    write_day: Callable[[dt.date, pl.DataFrame], None] | None = None,
) -> tuple[list[pl.DataFrame], pl.DataFrame]:
    """Snapshot days from ``state`` (the history up to the day before the first one) and ``transactions``
    (every day from the first to the last, and the ``WINDOW_DAYS`` before each): one frame per day, and the state after the last.

    Each day costs that day's transactions, its window and one pass over the customers. ``on_day(days done, feature
    rows so far)`` is called after each day (progress lines, ``lib.progress.Ticker``). With ``write_day``, each day's
    frame is handed to it as soon as it is computed and not kept (the list comes back empty): a range run then holds
    one day of features, not 30 days of every customer (8.4 M rows at 10 M transactions a year).
    """
    state = empty_state(channels) if state is None else state
    days = sorted(snapshot_dates)
    tx = transactions.with_columns(pl.col("ts").cast(pl.Datetime("us")))
    frames, rows = [], 0
    folded = cutoff_for(days[0] - _DAY)
    for done, day in enumerate(days, start=1):
        cutoff = cutoff_for(day)
        # The days since the last fold (one, in a daily run): ``transactions`` must hold them.
        state = fold_day(state, tx.filter((pl.col("ts") >= folded) & (pl.col("ts") < cutoff)), channels)
        folded = cutoff
        window = tx.filter((pl.col("ts") < cutoff) & (pl.col("ts") >= cutoff - dt.timedelta(days=WINDOW_DAYS)))
        frame = features_from_state(state, window, day, columns, channels, extras, population_days)
        rows += frame.height
        if write_day is None:
            frames.append(frame)
        else:
            write_day(day, frame)
        if on_day is not None:
            on_day(done, rows)
    return frames, state


def features_from_state(
    state: pl.DataFrame,
    window: pl.DataFrame,
    snapshot_date: dt.date,
    columns: tuple[str, ...] = FEATURE_COLUMNS,
    channels: tuple[str, ...] = DEFAULT_CHANNELS,
    extras: tuple[str, ...] = (),
    population_days: int | None = None,
) -> pl.DataFrame:
    """The snapshot of ``snapshot_date``: whole-history features from the state as of its end, windowed ones from ``window``."""
    cutoff = cutoff_for(snapshot_date)
    people = state.lazy()
    if population_days is not None:
        people = people.filter(pl.col("last_ts") >= cutoff - dt.timedelta(days=population_days))

    recent = _windowed(window, cutoff, extras)
    windowed = ["tx_count_7d", "tx_count_30d", "tx_count_90d", "spend_7d", "spend_30d", "spend_90d", "active_days_90d", "n_categories"]
    windowed += [values_feature(e) for e in extras]
    day = 86_400.0
    recency = (pl.lit(cutoff) - pl.col("last_ts")).dt.total_seconds() / day
    age = (pl.lit(cutoff) - pl.col("first_ts")).dt.total_seconds() / day
    span = (pl.col("last_ts").dt.date() - pl.col("first_ts").dt.date()).dt.total_days().cast(pl.Float64)
    repeats = pl.col("n_days") - 1
    mean_gap = pl.when(repeats > 0).then(span / repeats).otherwise(0.0)
    every = (
        people.join(recent, on="customer_id", how="left")
        .with_columns(pl.col(windowed).fill_null(0.0))
        .select(
            pl.col("customer_id"),
            pl.lit(snapshot_date).alias("snapshot_date"),
            recency.alias("recency_days"),
            age.alias("tenure_days"),
            pl.col("n_tx").alias("lifetime_tx"),
            repeats.alias("repeat_days"),
            span.alias("active_span_days"),
            pl.col("spend").alias("lifetime_spend"),
            *[pl.col(c) for c in windowed if c != "n_categories" and not c.endswith("_values")],
            (pl.col("spend") / pl.col("n_tx")).alias("avg_basket"),
            pl.col("max_amount"),
            (pl.col("quantity") / pl.col("n_tx")).alias("avg_quantity"),
            # Last 30 days against the monthly average of the 60 days before them:
            # log-scale, so it stays finite when either side is zero.
            ((pl.col("spend_30d") + 1).log() - ((pl.col("spend_90d") - pl.col("spend_30d")) / 2 + 1).log()).alias("spend_trend"),
            (pl.col("tx_count_30d") - (pl.col("tx_count_90d") - pl.col("tx_count_30d")) / 2).alias("frequency_trend"),
            mean_gap.alias("mean_gap_days"),
            pl.when(repeats > 0)
            .then((pl.col("gap_sq") / repeats - mean_gap**2).clip(lower_bound=0.0).sqrt())
            .otherwise(0.0)
            .alias("gap_std_days"),
            # How many typical gaps have passed since the last purchase (0 for one purchase day).
            pl.when(repeats > 0).then(recency / pl.max_horizontal(mean_gap, pl.lit(1.0))).otherwise(0.0).alias("overdue_ratio"),
            *[(pl.col(channel_column(i)) / pl.col("n_tx")).alias(share_column(v)) for i, v in enumerate(channels) if i > 0],
            (pl.col("weekend_tx") / pl.col("n_tx")).alias("weekend_share"),
            pl.col("n_categories"),
            *[pl.col(values_feature(e)) for e in extras],
            pl.lit(cutoff).dt.cast_time_unit("us").alias("feature_timestamp"),
            pl.col("last_ts").dt.cast_time_unit("us").alias("last_tx_ts"),
        )
    )
    return every.select("customer_id", "snapshot_date", *columns, *AUX_COLUMNS).sort("customer_id").collect()


def _windowed(window: pl.DataFrame, cutoff: dt.datetime, extras: tuple[str, ...]) -> pl.LazyFrame:
    """Per customer, the 7/30/90-day counts, spend, active days and distinct values of the window's purchases."""

    def since(days: int) -> pl.Expr:
        return pl.col("ts") >= cutoff - dt.timedelta(days=days)

    category = pl.col("category") if "category" in window.columns else pl.lit(None, dtype=pl.String)
    return (
        window.lazy()
        .with_columns(
            since(7).cast(pl.Float64).alias("_in7"),
            since(30).cast(pl.Float64).alias("_in30"),
            since(90).cast(pl.Float64).alias("_in90"),
            pl.when(since(90)).then(pl.col("ts").dt.date().cast(pl.Int32)).alias("_day90"),
        )
        .group_by("customer_id")
        .agg(
            pl.col("_in7").sum().alias("tx_count_7d"),
            pl.col("_in30").sum().alias("tx_count_30d"),
            pl.col("_in90").sum().alias("tx_count_90d"),
            (pl.col("amount") * pl.col("_in7")).sum().alias("spend_7d"),
            (pl.col("amount") * pl.col("_in30")).sum().alias("spend_30d"),
            (pl.col("amount") * pl.col("_in90")).sum().alias("spend_90d"),
            pl.col("_day90").drop_nulls().n_unique().cast(pl.Float64).alias("active_days_90d"),
            # Distinct values as bought in the window: an open vocabulary, no value folded into another.
            category.drop_nulls().n_unique().cast(pl.Float64).alias("n_categories"),
            *[pl.col(e).drop_nulls().n_unique().cast(pl.Float64).alias(values_feature(e)) for e in extras],
        )
    )


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
    ``later`` is outside its population (no purchase in population_days), so bought nothing in the horizon.
    """
    cutoff = cutoff_for(snapshot_date)
    last = later.select("customer_id", pl.col("last_tx_ts").alias("_later_last"))
    return (
        snapshot.join(last, on="customer_id", how="left")
        .with_columns((pl.col("_later_last").is_null() | (pl.col("_later_last") < cutoff)).cast(pl.Int8).alias("churned"))
        .drop("_later_last")
    )
