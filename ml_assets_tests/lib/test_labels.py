"""The training set's labels and splits as pure functions, on hand-built snapshots."""

from __future__ import annotations

import datetime as dt

import polars as pl
import pytest

from lib.backtest import backtest_folds, label_horizon, plan_backtest
from lib.features import cutoff_for
from lib.labels import LABEL_INPUTS, LabelError, LabelPlan, finish_training_set, label_snapshots, missing_features, plan_labels

FIRST = dt.date(2025, 1, 1)
DAYS = [FIRST + dt.timedelta(days=i) for i in range(200)]
HORIZON = 14
CUSTOMERS = [f"C{i:03d}" for i in range(40)]


def _snapshot(day: dt.date) -> pl.DataFrame:
    """Even customers buy every day; odd ones stopped on day 100."""
    stop = FIRST + dt.timedelta(days=100)
    rows = []
    for i, c in enumerate(CUSTOMERS):
        last = day if i % 2 == 0 else min(day, stop)
        rows.append((c, day, cutoff_for(day), dt.datetime.combine(last, dt.time(12))))
    return pl.DataFrame(
        rows, schema=dict(zip(LABEL_INPUTS, (pl.String, pl.Date, pl.Datetime("us"), pl.Datetime("us")), strict=True)), orient="row"
    )


def _labels(plan: LabelPlan) -> pl.DataFrame:
    by_day = {d: _snapshot(d) for d in plan.needed_days()}
    return label_snapshots(plan, by_day, next(iter(by_day.values())).clear())


def test_too_few_days_names_the_days_the_history_and_the_horizon() -> None:
    # A calendar too short for the settings: the real cause and the smallest change that works (checked to work).
    with pytest.raises(
        LabelError,
        match=r"2025-01-01\.\.2025-01-30 \(30 days\) cannot give a training set.*min_history_days 60.*CHURN_MIN_HISTORY_DAYS=1\b",
    ):
        plan_labels(DAYS[:30], HORIZON, 7, 26, 0.25, 60)
    assert plan_labels(DAYS[:30], HORIZON, 7, 26, 0.25, 1).snapshots.train_dates
    # Days missing between materialized ones: that is the cause named.
    with pytest.raises(LabelError, match=r"days missing between them.*materialize the missing days"):
        plan_labels([*DAYS[:5], *DAYS[20:30]], HORIZON, 7, 26, 0.25, 60)


def test_labels_are_who_bought_nothing_within_the_horizon_and_splits_do_not_overlap() -> None:
    plan = plan_labels(DAYS, HORIZON, 7, 26, 0.25, 60)
    assert plan.needed_days() == sorted({*plan.labelled, *(d + dt.timedelta(days=HORIZON) for d in plan.labelled)})
    labels = _labels(plan)
    assert plan.snapshots.gap_dates and set(labels["split"]) == {"train", "gap", "holdout"}
    stopped = labels.filter(pl.col("customer_id").str.slice(1).cast(pl.Int32) % 2 == 1)
    # Odd customers churned exactly on the snapshots after their last purchase day.
    assert (stopped.filter(pl.col("snapshot_date") >= FIRST + dt.timedelta(days=100))["churned"] == 1).all()
    assert (stopped.filter(pl.col("snapshot_date") < FIRST + dt.timedelta(days=100 - HORIZON))["churned"] == 0).all()
    assert (labels.filter(pl.col("customer_id").str.slice(1).cast(pl.Int32) % 2 == 0)["churned"] == 0).all()
    # No train label window reaches into the held-out snapshots.
    assert max(plan.snapshots.train_dates) + dt.timedelta(days=HORIZON) <= min(plan.snapshots.valid_dates)


def test_the_finished_set_carries_its_horizon_and_its_backtest_cutoffs() -> None:
    plan = plan_labels(DAYS, HORIZON, 7, 26, 0.25, 60)
    labels = _labels(plan).rename({"feature_timestamp": "event_timestamp"})
    served = labels.select("customer_id", "event_timestamp", pl.lit(1.0).alias("recency_days"))
    joined = labels.join(served, on=["customer_id", "event_timestamp"], how="left")
    assert missing_features(labels, joined, ("recency_days",)) is None
    frame = finish_training_set(joined, ("recency_days",), plan, 0.5, 3, 28)
    assert label_horizon(frame) == HORIZON and set(frame["split"]) <= {"train", "gap", "valid", "test"}
    expected = plan_backtest(plan.labelled, HORIZON, 3, 28)
    assert backtest_folds(frame) == expected and len(expected) == 3
    assert sorted(frame.filter(pl.col("backtest_cutoff"))["snapshot_date"].unique().to_list()) == [f.cutoff for f in expected]
    # A feature the store did not serve for one row is named, with the counts.
    holes = joined.with_columns(pl.when(pl.int_range(pl.len()) == 0).then(None).otherwise(pl.col("recency_days")).alias("recency_days"))
    assert "no features for 1 of" in (missing_features(labels, holes, ("recency_days",)) or "")


def test_a_holdout_without_both_classes_is_refused_with_the_fix() -> None:
    plan = plan_labels(DAYS[:80], HORIZON, 7, 26, 0.25, 20)  # everyone still buying: no churn in the held-out days
    labels = _labels(plan).rename({"feature_timestamp": "event_timestamp"})
    joined = labels.with_columns(pl.lit(1.0).alias("recency_days"))
    with pytest.raises(LabelError, match="test split with both classes.*test_share"):
        finish_training_set(joined, ("recency_days",), plan, 0.5, 3, 28)
