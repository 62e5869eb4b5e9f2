"""The training set's labels and splits, as pure functions: which snapshots, who churned, which split, which cutoffs.

`training_set` (ml_assets/assets/training_set.py) only reads the lake and the
feature store and hands their frames to these. The frame they build carries
every fact a model trained on it needs: `label_date` (when each label became
known, hence the horizon) and `backtest_cutoff` (the snapshots the
out-of-time backtest scores), so no model re-reads a setting to agree with it.
"""

from __future__ import annotations

import datetime as dt
import hashlib
from collections.abc import Mapping
from dataclasses import dataclass

import polars as pl

from lib.backtest import plan_backtest
from lib.features import churn_labels
from lib.training import SplitPlan, plan_snapshots, split_holdout

LABEL_INPUTS = ("customer_id", "snapshot_date", "feature_timestamp", "last_tx_ts")


class LabelError(ValueError):
    """The materialized days cannot give the labelled snapshots the settings ask for (the message names the fix)."""


@dataclass(frozen=True)
class LabelPlan:
    horizon_days: int
    snapshots: SplitPlan

    @property
    def labelled(self) -> list[dt.date]:
        return [*self.snapshots.train_dates, *self.snapshots.gap_dates, *self.snapshots.valid_dates]

    def needed_days(self) -> list[dt.date]:
        """Every feature day the labels read: each snapshot and the day a horizon after it."""
        later = {d + dt.timedelta(days=self.horizon_days) for d in self.labelled}
        return sorted({*self.labelled} | later)


def plan_labels(
    available: list[dt.date],
    horizon_days: int,
    every_days: int,
    max_snapshots: int,
    valid_fraction: float,
    min_history_days: int,
) -> LabelPlan:
    """The labelled snapshot days; raises `LabelError` naming the days and settings when there are too few."""
    plan = plan_snapshots(available, horizon_days, every_days, max_snapshots, valid_fraction, min_history_days)
    if len(plan.train_dates) < 1 or len(plan.valid_dates) < 1:
        raise LabelError(_too_few(available, plan, horizon_days, every_days, max_snapshots, valid_fraction, min_history_days))
    return LabelPlan(horizon_days, plan)


def _too_few(
    available: list[dt.date], plan: SplitPlan, horizon_days: int, every_days: int, max_snapshots: int, valid_fraction: float, history: int
) -> str:
    """The real cause: the calendar is too short for the settings (with the smallest change that works), or days are missing."""
    from lib.feasibility import Plan, days_between, refusal

    if available and available == days_between(available[0], available[-1]):
        settings = Plan(horizon_days, history, every_days, max_snapshots, valid_fraction)
        why = refusal(available[0], available[-1], settings, "training_set")
        if why:
            return why
    span = f"{available[0]}..{available[-1]}" if available else "none"
    return (
        f"training_set: not enough labelled snapshots (train {len(plan.train_dates)}, held out {len(plan.valid_dates)}): "
        f"{len(available)} customer_features days are materialized ({span}) with days missing between them; a snapshot needs "
        f"{history} days of history before it and its day + {horizon_days} days materialized: materialize the missing days."
    )


def label_snapshots(plan: LabelPlan, by_day: Mapping[dt.date, pl.DataFrame], empty: pl.DataFrame) -> pl.DataFrame:
    """One row per (customer, snapshot) with `churned` and the coarse split (train, gap, holdout).

    ``by_day`` holds each needed day's `LABEL_INPUTS`; a customer absent from
    the day a horizon later is outside its population, so bought nothing.
    """
    parts = []
    horizon = dt.timedelta(days=plan.horizon_days)
    splits = (("train", plan.snapshots.train_dates), ("gap", plan.snapshots.gap_dates), ("holdout", plan.snapshots.valid_dates))
    for split, days in splits:
        for day in days:
            later = by_day.get(day + horizon, empty)
            parts.append(churn_labels(by_day.get(day, empty), later, day).with_columns(pl.lit(split).alias("split")))
    return pl.concat(parts, how="vertical")


def missing_features(labels: pl.DataFrame, joined: pl.DataFrame, columns: tuple[str, ...]) -> str | None:
    """Why the served features do not cover every labelled snapshot, or None when they do."""
    missing = joined.filter(pl.any_horizontal(pl.col(list(columns)).is_null())).height
    if not missing and joined.height == labels.height:
        return None
    return (
        f"training_set: Feast returned no features for {missing} of {labels.height} labelled snapshots (rows in: {labels.height}, "
        f"out: {joined.height}). The feature view must cover every snapshot: re-materialize feature_definitions and check its source path."
    )


def finish_training_set(
    joined: pl.DataFrame,
    columns: tuple[str, ...],
    plan: LabelPlan,
    test_share: float,
    backtest_cutoffs: int,
    backtest_every_days: int,
) -> pl.DataFrame:
    """The training set's final columns: keys, features, label facts, the fine split (train, gap, valid, test), cutoffs.

    ``joined`` is the labels joined with the served features on
    (customer_id, event_timestamp). Held-out customers are split by a stable
    hash into `valid` and `test`; raises `LabelError` when that leaves no
    validation rows or a test split with one class.
    """
    frame = joined.rename({"event_timestamp": "feature_timestamp"}).select(
        "customer_id",
        "snapshot_date",
        *columns,
        "feature_timestamp",
        "last_tx_ts",
        "churned",
        "split",
        # The day the label became known: the out-of-time backtest trains only on labels known by its cutoff.
        (pl.col("snapshot_date") + pl.duration(days=plan.horizon_days)).alias("label_date"),
    )
    frame = frame.with_columns(
        pl.when(pl.col("split") == "holdout").then(split_holdout(frame, test_share)).otherwise(pl.col("split")).alias("split")
    )
    test = frame.filter(pl.col("split") == "test")
    if test["churned"].n_unique() < 2 or frame.filter(pl.col("split") == "valid").is_empty():
        valid = plan.snapshots.valid_dates
        raise LabelError(
            f"training_set: the held-out snapshots ({valid[0]}..{valid[-1]}) do not give a validation split and a "
            f"test split with both classes (test_share={test_share}); materialize more customer_features days or change test_share."
        )
    cutoffs = [f.cutoff for f in plan_backtest(plan.labelled, plan.horizon_days, backtest_cutoffs, backtest_every_days)]
    return frame.with_columns(pl.col("snapshot_date").is_in(cutoffs).alias("backtest_cutoff"))


SAMPLE_SALT = "churn-training-sample"


def kept_customer(customer_id: str, share: float) -> bool:
    """Whether a customer is in a sample of ``share`` of customers (a hash of the id: the same customers on every run)."""
    digest = hashlib.sha256(f"{SAMPLE_SALT}:{customer_id}".encode()).digest()
    return int.from_bytes(digest[:8], "big") < share * 2**64


def sample_customers(labels: pl.DataFrame, max_customers: int | None) -> tuple[pl.DataFrame, int]:
    """At most ``max_customers`` customers' labelled snapshots (every snapshot of a kept customer), and how many there were."""
    customers = labels["customer_id"].n_unique()
    if max_customers is None or customers <= max_customers:
        return labels, customers
    share = max_customers / customers
    ids = labels["customer_id"].unique()
    kept = ids.filter(pl.Series([kept_customer(str(c), share) for c in ids.to_list()], dtype=pl.Boolean))
    return labels.filter(pl.col("customer_id").is_in(kept.implode())), customers


def split_stats(frame: pl.DataFrame) -> pl.DataFrame:
    return frame.group_by("split").agg(pl.len().alias("rows"), pl.col("churned").mean().alias("churn_rate")).sort("split")


def shuffle_train_labels(frame: pl.DataFrame, seed: int) -> pl.DataFrame:
    """The train split's `churned` permuted (seeded), the other splits untouched: a model that learns nothing, for drills."""
    train = frame["split"] == "train"
    shuffled = frame.filter(train)["churned"].shuffle(seed=seed)
    positions = train.arg_true()
    labels = frame["churned"].clone().scatter(positions, shuffled)
    return frame.with_columns(labels.alias("churned"))
