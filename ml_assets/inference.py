"""Inference: daily churn scores for every active customer."""

from typing import Any

import dagster as dg
import polars as pl

from ml_assets.lib.export import onnx_churn_probability, onnx_session
from ml_assets.lib.training import feature_matrix
from ml_assets.metadata import frame_metadata
from ml_assets.partitions import daily_partitions, partition_days
from resources import ArtifactStore

PREDICTION_DESCRIPTIONS = {
    "customer_id": "Customer identifier.",
    "snapshot_date": "Day whose end-of-day features were scored.",
    "churn_probability": "Probability that the customer buys nothing in the next 30 days.",
    "model_version": "Version of the model that produced the score.",
}


@dg.asset(
    partitions_def=daily_partitions,
    backfill_policy=dg.BackfillPolicy.single_run(),
    group_name="inference",
    kinds={"onnx", "parquet"},
    owners=["team:ml-platform"],
    metadata={"partition_expr": "snapshot_date"},
)
def batch_predictions(
    context: dg.AssetExecutionContext, customer_features: pl.DataFrame, lgbm_onnx: dict[str, Any], artifacts: ArtifactStore
) -> pl.DataFrame:
    """Churn probability for every active customer on this day, scored by the ONNX model with onnxruntime.

    This is the daily list retention teams work from: sort by
    `churn_probability` to find who to contact. `model_version` says which
    model produced each score.
    """
    ref = lgbm_onnx["artifact"]
    session = onnx_session(artifacts.get(ref["uri"], ref["sha256"]))
    version = lgbm_onnx["model_version"]
    scores = onnx_churn_probability(session, feature_matrix(customer_features, tuple(lgbm_onnx["features"])))
    frame = customer_features.select("customer_id", "snapshot_date").with_columns(
        pl.Series("churn_probability", scores, dtype=pl.Float64),
        pl.lit(version).alias("model_version"),
    )
    by_day = {k[0]: g for k, g in frame.partition_by("snapshot_date", as_dict=True).items()}
    for day in partition_days(context):
        part = by_day.get(day, frame.clear())
        context.add_asset_metadata(
            {
                **frame_metadata(part, PREDICTION_DESCRIPTIONS),
                "model_version": version,
                "mean_churn_probability": float(part["churn_probability"].mean()) if part.height else 0.0,
                "share_above_0_5": float((part["churn_probability"] > 0.5).mean()) if part.height else 0.0,
            },
            partition_key=day.isoformat(),
        )
    return frame
