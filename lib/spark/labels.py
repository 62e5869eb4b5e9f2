"""The training set's labelled snapshots on Spark: ``lib.labels.label_snapshots`` and the point-in-time join, as one plan.

Each labelled snapshot is a customer's feature row on the snapshot day; the
label is whether their last purchase as of the day a horizon later falls after
the snapshot's cutoff (absent that day: outside the population, so no
purchase). Features are the day files themselves: Feast's point-in-time join
at each snapshot's own timestamp returns exactly those rows. Only the
labelled rows come back to the driver, where the models train: with
``max_customers`` set, a stable hash of the id keeps that many customers'
whole histories (every snapshot of a kept customer, none of the others).
"""

from __future__ import annotations

import datetime as dt
from typing import TYPE_CHECKING

import polars as pl
from pyspark.sql import functions as F

from lib.labels import LabelPlan, kept_customer
from lib.spark.lake import read_days

if TYPE_CHECKING:
    from collections.abc import Callable

    from pyspark.sql import DataFrame, SparkSession
    from upath import UPath


def labelled_snapshots(spark: SparkSession, plan: LabelPlan, day_path: Callable[[dt.date], UPath], columns: tuple[str, ...]) -> DataFrame:
    """One row per (customer, labelled snapshot): keys, ``columns``, event_timestamp, last_tx_ts, churned (int8), split."""
    days = read_days(spark, [day_path(d) for d in plan.needed_days()])
    splits = [
        (day, split)
        for split, chosen in (
            ("train", plan.snapshots.train_dates),
            ("gap", plan.snapshots.gap_dates),
            ("holdout", plan.snapshots.valid_dates),
        )
        for day in chosen
    ]
    which = spark.createDataFrame(splits, "snapshot_date date, split string")
    snapshots = days.join(F.broadcast(which), on="snapshot_date", how="inner")
    later = days.select(
        "customer_id",
        F.date_sub("snapshot_date", plan.horizon_days).alias("snapshot_date"),
        F.col("last_tx_ts").alias("_later_last"),
    )
    cutoff = F.to_timestamp_ntz(F.date_add("snapshot_date", 1).cast("string"))
    labelled = snapshots.join(later, on=["customer_id", "snapshot_date"], how="left")
    return labelled.select(
        "customer_id",
        "snapshot_date",
        *columns,
        F.col("feature_timestamp").alias("event_timestamp"),
        "last_tx_ts",
        (F.col("_later_last").isNull() | (F.col("_later_last") < cutoff)).cast("tinyint").alias("churned"),
        "split",
    )


def collect_training_rows(labelled: DataFrame, max_customers: int | None = None) -> tuple[pl.DataFrame, int]:
    """The labelled rows on the driver, in the single-node path's order (snapshot day, then customer), and the number
    of distinct customers before sampling."""
    customers = labelled.select("customer_id").distinct().count()
    if max_customers is not None and customers > max_customers:
        share = max_customers / customers
        keep = F.udf(lambda c: kept_customer(str(c), share), "boolean")
        labelled = labelled.filter(keep(F.col("customer_id")))
    frame = pl.DataFrame(labelled.orderBy("snapshot_date", "customer_id").toArrow())
    return frame, customers
