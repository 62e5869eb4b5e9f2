"""The training set: labelled customer snapshots, features served by Feast, split by time and by customer."""

import datetime as dt
import time

import dagster as dg
import polars as pl
from pydantic import Field

from lib.backtest import backtest_folds
from lib.features import model_features
from lib.frames import split_by_day
from lib.labels import (
    LABEL_INPUTS,
    LabelError,
    LabelPlan,
    finish_training_set,
    label_snapshots,
    missing_features,
    plan_labels,
    sample_customers,
    shuffle_train_labels,
    split_stats,
)
from ml_assets.metadata import frame_metadata, markdown_table
from ml_assets.run_config import default_of
from resources import ComputeResource, FeatureStoreResource, Lake

CUSTOMER_FEATURES = dg.AssetKey("customer_features")


class TrainingSetConfig(dg.Config):
    # Jobs, schedules and the sensor fill the settings' values in (ml_assets/run_config.py).
    horizon_days: int = Field(
        default=default_of("training_set", "horizon_days"),
        description="A customer has churned when they buy nothing for this many days after the snapshot (label_horizon_days). "
        "Recorded on every model trained on this set: drift maturity and batch scoring read it from the model.",
    )
    snapshot_every_days: int = Field(default=7, description="Days between two labelled snapshots.")
    max_snapshots: int = Field(default=26, description="Newest labelled snapshots to use (train + held out).")
    valid_fraction: float = Field(default=0.25, description="Share of the newest snapshots held out (validation + test).")
    test_share: float = Field(
        default=0.5,
        description="Share of held-out customers whose rows form the test split (reported metrics, champion comparison); "
        "the others form the validation split (early stopping, hyperparameter search).",
    )
    min_history_days: int = Field(
        default=default_of("training_set", "min_history_days"),
        description="Skip snapshots with fewer days of history before them (min_history_days).",
    )
    backtest_cutoffs: int = Field(
        default=default_of("training_set", "backtest_cutoffs"),
        description="Out-of-time backtest: cutoffs each model is trained before and scored at (backtest_cutoffs).",
    )
    backtest_every_days: int = Field(
        default=default_of("training_set", "backtest_every_days"),
        description="Out-of-time backtest: days between two cutoffs (backtest_every_days).",
    )
    latest_snapshot: str | None = Field(
        default=None, description="Ignore feature partitions after this day (YYYY-MM-DD); default: all materialized."
    )
    max_customers: int | None = Field(
        default=None,
        ge=1,
        description="Train on at most this many customers' labelled snapshots, a stable hash sample of ids (every snapshot of a "
        "kept customer); none: every customer. What bounds the models' single-node training when features run on Spark.",
    )
    drill_shuffle_train_labels: bool = Field(
        default=False,
        description="Drills only (churn scenario rollback): shuffle the train split's labels, so the models learn nothing while "
        "the held-out splits keep the truth. Never set it for a model you mean to use.",
    )


@dg.asset(
    deps=[CUSTOMER_FEATURES, "feature_definitions"],
    group_name="training",
    kinds={"polars", "parquet"},
    owners=["team:data-science"],
)
def training_set(
    context: dg.AssetExecutionContext, config: TrainingSetConfig, lake: Lake, feature_store: FeatureStoreResource, compute: ComputeResource
) -> pl.DataFrame:
    """Labelled customer snapshots the models learn from and are judged on.

    Each row is one customer's features on a snapshot day plus `churned`: 1 when
    they bought nothing in the following `horizon_days`. Only snapshots whose
    horizon has fully passed are labelled. The newest snapshots are held out;
    train snapshots end a full horizon before them, so no training label peeks
    into the held-out period. Held-out customers are split in two by a stable
    hash: `valid` rows steer early stopping and the hyperparameter search,
    `test` rows give the metrics every model reports and the champion
    comparison, so the reported figures are not the ones the search optimized.
    Every labelled snapshot also serves the out-of-time backtest (see
    `lgbm_model`): `label_date` says when each label became known, and
    `backtest_cutoff` marks the snapshots the backtest scores.

    Features come from the Feast feature service `churn_model` by a
    point-in-time join on (customer, snapshot timestamp): the same definition
    batch and online scoring read. Labels are derived from the lake's
    snapshots (who bought again), never from a feature column.
    """
    available = sorted(dt.date.fromisoformat(k) for k in context.instance.get_materialized_partitions(CUSTOMER_FEATURES))
    if config.latest_snapshot:
        latest = dt.date.fromisoformat(config.latest_snapshot)
        available = [d for d in available if d <= latest]
    try:
        plan = plan_labels(
            available, config.horizon_days, config.snapshot_every_days, config.max_snapshots, config.valid_fraction, config.min_history_days
        )
        started = time.perf_counter()
        if compute.spark:
            joined, columns, customers = _spark_rows(compute, lake, plan, config.max_customers)
            labels = joined
        else:
            needed = [d.isoformat() for d in plan.needed_days()]
            # Only who was active when, and when they last bought: enough for labels. The model inputs come through Feast below.
            frames = lake.read_partitions(CUSTOMER_FEATURES, needed, needed_by=" (needed by training_set)").select(*LABEL_INPUTS)
            labels = label_snapshots(plan, split_by_day(frames, "snapshot_date"), frames.clear())
            labels, customers = sample_customers(labels.rename({"feature_timestamp": "event_timestamp"}), config.max_customers)
            features = feature_store.historical(labels)
            # The columns the feature service serves: the source's optional columns decide which exist.
            columns = model_features(features)
            joined = labels.join(
                features.select("customer_id", "event_timestamp", *columns), on=["customer_id", "event_timestamp"], how="left"
            )
        feast_seconds = time.perf_counter() - started
        if why := missing_features(labels, joined, columns):
            raise LabelError(why)
        frame = finish_training_set(joined, columns, plan, config.test_share, config.backtest_cutoffs, config.backtest_every_days)
    except LabelError as exc:
        raise dg.Failure(str(exc)) from None
    if config.drill_shuffle_train_labels:
        context.log.warning("training_set: drill: the train split's labels are shuffled; models trained on this set learn nothing")
        frame = shuffle_train_labels(frame, seed=5)
    context.add_output_metadata(
        {
            **frame_metadata(frame.drop("last_tx_ts")),
            "train_snapshots": dg.MetadataValue.json([d.isoformat() for d in plan.snapshots.train_dates]),
            "holdout_snapshots": dg.MetadataValue.json([d.isoformat() for d in plan.snapshots.valid_dates]),
            "backtest_only_snapshots": dg.MetadataValue.json([d.isoformat() for d in plan.snapshots.gap_dates]),
            "backtest_cutoffs": dg.MetadataValue.json([f.cutoff.isoformat() for f in backtest_folds(frame)]),
            "split_stats": dg.MetadataValue.md(markdown_table(split_stats(frame))),
            "churn_rate": float(frame["churned"].mean()),
            "horizon_days": config.horizon_days,
            "features_from": (
                f"customer_features day files on {compute.describe()} (the rows of Feast's point-in-time join at each snapshot's timestamp)"
                if compute.spark
                else f"Feast feature service churn_model ({feature_store.offline_store} offline store, point-in-time join)"
            ),
            "feast_seconds": round(feast_seconds, 2),
            "customers": customers,
            "customers_trained_on": int(frame["customer_id"].n_unique()),
        }
    )
    return frame


def _spark_rows(
    compute: ComputeResource, lake: Lake, plan: LabelPlan, max_customers: int | None
) -> tuple[pl.DataFrame, tuple[str, ...], int]:
    """The labelled snapshots with their features, computed on Spark (compute.engine: spark); only they reach the driver."""
    from lib.spark.labels import collect_training_rows, labelled_snapshots

    needed = plan.needed_days()
    paths = dict(
        zip(needed, lake.partition_paths(CUSTOMER_FEATURES, [d.isoformat() for d in needed], " (needed by training_set)"), strict=True)
    )
    session = compute.session()
    # The feature columns of the newest day: what the source's optional columns give (what the feature service serves).
    columns = model_features(lake.head(paths[needed[-1]], rows=0))
    joined, customers = collect_training_rows(labelled_snapshots(session, plan, paths.__getitem__, columns), max_customers)
    return joined, columns, customers
