"""Inference: daily churn scores for every active customer."""

import dagster as dg
import polars as pl

from lib.export import score_frame
from lib.frames import split_by_day
from ml_assets.champion import current_champion
from ml_assets.metadata import frame_metadata
from ml_assets.partitions import daily_partitions, partition_days
from resources import ArtifactStore, FeatureStoreResource, ModelRegistry


def prediction_descriptions(horizon_days: int | None) -> dict[str, str]:
    """Column descriptions; the score's horizon is the scoring model's own (its registry version), not a setting read again."""
    horizon = f"{horizon_days} days" if horizon_days else "label horizon of the scoring model"
    return {
        "customer_id": "Customer identifier.",
        "snapshot_date": "Day whose end-of-day features were scored.",
        "churn_probability": f"Probability that the customer buys nothing in the next {horizon} (the horizon the model was trained on).",
        "model_version": "Version of the model that produced the score.",
    }


@dg.asset(
    partitions_def=daily_partitions,
    backfill_policy=dg.BackfillPolicy.single_run(),
    group_name="inference",
    kinds={"onnx", "parquet"},
    owners=["team:ml-platform"],
    metadata={"partition_expr": "snapshot_date"},
    # online_features carries the blocking training/serving skew check: a
    # skewed feature store stops the run before anything is scored.
    deps=["champion_model", "online_features"],
    # Only the keys: the feature values themselves come through Feast.
    ins={"customer_features": dg.AssetIn(metadata={"columns": ["customer_id", "snapshot_date", "feature_timestamp"]})},
)
def batch_predictions(
    context: dg.AssetExecutionContext,
    customer_features: pl.DataFrame,
    artifacts: ArtifactStore,
    registry: ModelRegistry,
    feature_store: FeatureStoreResource,
) -> pl.DataFrame:
    """Churn probability for every active customer on this day, scored by the champion model's ONNX artifact in onnxruntime.

    This is the daily list retention teams work from: sort by
    `churn_probability` to find who to contact. `model_version` says which
    model produced each score: always the registry's champion at the time of
    the run, its artifact verified against the registered sha256 before load.
    The scored feature values are read through the Feast feature service
    `churn_model` (offline, at each snapshot's timestamp): the same definition
    the models were trained on.
    """
    champion = current_champion(registry, artifacts, "batch_predictions")
    session = champion.session
    version = champion.version
    entities = customer_features.select("customer_id", "snapshot_date", pl.col("feature_timestamp").alias("event_timestamp"))
    # Scored a chunk of Feast rows at a time (in time order): a range run holds
    # its predictions, not every day's feature values at once.
    scored, missing = [], 0
    for chunk, served in feature_store.historical_chunks(entities):
        features = chunk.join(served.drop("snapshot_date", strict=False), on=["customer_id", "event_timestamp"], how="left")
        missing += features.filter(pl.any_horizontal(pl.col(list(champion.features)).is_null())).height
        if not missing:
            scored.append(score_frame(session, features, tuple(champion.features), version))
        del features, served
    if missing:
        raise dg.Failure(
            f"batch_predictions: the feature store returned no features for {missing} of {entities.height} customers; "
            "re-materialize feature_definitions and online_features for these days"
        )
    empty = (
        entities.clear()
        .select("customer_id", "snapshot_date")
        .with_columns(pl.lit(None, dtype=pl.Float64).alias("churn_probability"), pl.lit(version).alias("model_version"))
    )
    frame = pl.concat(scored, how="vertical") if scored else empty
    by_day = split_by_day(frame, "snapshot_date")
    descriptions = prediction_descriptions(champion.horizon_days)
    for day in partition_days(context):
        part = by_day.get(day, frame.clear())
        context.add_asset_metadata(
            {
                **frame_metadata(part, descriptions),
                "label_horizon_days": champion.horizon_days or 0,
                "model_version": version,
                "model_kind": champion.kind,
                "mean_churn_probability": float(part["churn_probability"].mean()) if part.height else 0.0,
                "share_above_0_5": float((part["churn_probability"] > 0.5).mean()) if part.height else 0.0,
            },
            partition_key=day.isoformat(),
        )
    return frame
