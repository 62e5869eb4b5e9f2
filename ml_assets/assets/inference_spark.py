"""batch_predictions and shadow_scores on the Spark engine (compute.engine: spark): the same files, scored on the cluster.

Imported only by a run on the Spark engine: it imports pyspark. The features
are the day's customer_features file, the rows Feast's point-in-time join
returns for each snapshot at its own timestamp (the join is on that very
timestamp), read by the executors instead of through the driver.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from typing import Any

import dagster as dg
import polars as pl
from pyspark.sql import functions as F

from lib.rollout import CANARY_ARM
from lib.spark.lake import read_days, write_day
from lib.spark.scoring import ShippedModel, score_features
from ml_assets.assets.inference import (
    BATCH,
    FEATURES,
    SHADOW,
    SHADOW_DESCRIPTIONS,
    list_unscored,
    prediction_descriptions,
)
from ml_assets.champion import Champion
from ml_assets.metadata import frame_metadata
from ml_assets.partitions import partition_days
from resources import ArtifactStore, ComputeResource, Lake


def ship(model: Champion, artifacts: ArtifactStore) -> ShippedModel:
    """The model's ONNX bytes, read and checked against the registry's sha256 (again on every executor)."""
    uri, sha = model.model.onnx_uri, model.model.onnx_sha256
    if not uri or not sha:
        raise ValueError(f"model version {model.version} has no ONNX artifact in the registry; export it first")
    return ShippedModel(model.version, sha, artifacts.get(uri, sha), model.features, model.explainer)


def spark_batch_predictions(
    context: dg.AssetExecutionContext,
    compute: ComputeResource,
    lake: Lake,
    artifacts: ArtifactStore,
    champion: Champion,
    challengers: list[Champion],
    canary: Champion | None,
    canary_share: float,
    reasons_share: float,
) -> Iterator[Any]:
    days = partition_days(context)
    paths = lake.partition_paths(FEATURES, [d.isoformat() for d in days], needed_by=" (needed by batch_predictions)")
    spark = compute.session()
    features = read_days(spark, paths)
    unknown = [f for f in champion.features if f not in features.columns]
    if unknown:
        raise dg.Failure(f"batch_predictions: the champion {champion.version} needs features the lake has not got: {unknown}")
    nulls = features.filter(F.greatest(*[F.col(f).isNull() for f in champion.features])).count()
    if nulls:
        raise dg.Failure(
            f"batch_predictions: {nulls} feature rows have a null feature the champion needs; re-materialize customer_features"
        )
    scorable = [c for c in challengers if all(f in features.columns for f in c.features)]
    models = [ship(champion, artifacts), *[ship(c, artifacts) for c in scorable]]
    canary_index = next((i for i, c in enumerate(scorable, start=1) if canary is not None and c.version == canary.version), None)
    context.log.info(f"batch_predictions: {len(days)} days, {len(models)} models on {compute.describe()}")
    served, shadow = score_features(features, models, canary_index, canary_share, reasons_share)
    for day in days:
        write_day(served.filter(F.col("snapshot_date") == F.lit(day)), lake.path_for(BATCH, day.isoformat(), ".parquet"))
        write_day(shadow.filter(F.col("snapshot_date") == F.lit(day)), lake.path_for(SHADOW, day.isoformat(), ".parquet"))
    _metadata(context, lake, served, shadow, days, champion, [c.version for c in challengers], canary)
    list_unscored(context, lake, lambda day, ids: _scored_among(spark, features, day, ids))
    yield dg.Output(None, output_name="batch_predictions")
    yield dg.Output(None, output_name="shadow_scores")


def _scored_among(spark: Any, features: Any, day: dt.date, ids: pl.Series) -> pl.Series:
    """Which of ``ids`` (few: customers with a quarantined row) have a feature row on ``day``: only they come back."""
    if ids.is_empty():
        return ids
    wanted = spark.createDataFrame([(str(i),) for i in ids.to_list()], "customer_id string")
    found = features.filter(F.col("snapshot_date") == F.lit(day)).select("customer_id").join(wanted, on="customer_id", how="left_semi")
    return pl.Series(ids.name, [r["customer_id"] for r in found.collect()], dtype=pl.String)


def _metadata(
    context: dg.AssetExecutionContext,
    lake: Lake,
    served: Any,
    shadow: Any,
    days: list[dt.date],
    champion: Champion,
    challengers: list[str],
    canary: Champion | None,
) -> None:
    """The figures the polars path records per day, aggregated on the cluster."""
    figures = {
        r["snapshot_date"]: r
        for r in served.groupBy("snapshot_date")
        .agg(
            F.count(F.lit(1)).alias("rows"),
            F.sum((F.col("arm") == CANARY_ARM).cast("int")).alias("canary_rows"),
            F.mean("churn_probability").alias("mean"),
            F.mean((F.col("churn_probability") > 0.5).cast("double")).alias("above"),
        )
        .collect()
    }
    shadow_rows = {r["snapshot_date"]: r["rows"] for r in shadow.groupBy("snapshot_date").agg(F.count(F.lit(1)).alias("rows")).collect()}
    descriptions = prediction_descriptions(champion.horizon_days)
    for day in days:
        key = day.isoformat()
        row = figures.get(day)
        context.add_asset_metadata(
            {
                **frame_metadata(lake.head(lake.path_for(BATCH, key, ".parquet")), descriptions),
                "dagster/row_count": int(row["rows"]) if row else 0,
                "label_horizon_days": champion.horizon_days or 0,
                "model_version": champion.version,
                "model_kind": champion.kind,
                "canary_version": canary.version if canary else "none",
                "canary_rows": int(row["canary_rows"] or 0) if row else 0,
                "mean_churn_probability": float(row["mean"]) if row else 0.0,
                "share_above_0_5": float(row["above"]) if row else 0.0,
            },
            asset_key=BATCH,
            partition_key=key,
        )
        context.add_asset_metadata(
            {
                **frame_metadata(lake.head(lake.path_for(SHADOW, key, ".parquet")), SHADOW_DESCRIPTIONS),
                "dagster/row_count": int(shadow_rows.get(day, 0)),
                "champion": champion.version,
                "challengers": dg.MetadataValue.json(challengers),
            },
            asset_key=SHADOW,
            partition_key=key,
        )
