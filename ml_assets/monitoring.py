"""Monitoring: daily data and prediction drift against the training reference."""

import dagster as dg
import polars as pl
from pydantic import Field

from ml_assets.inference import champion_session
from ml_assets.lib.drift import compute_drift, sample_rows
from ml_assets.lib.export import onnx_churn_probability
from ml_assets.partitions import daily_partitions, partition_days
from resources import ArtifactStore, ModelRegistry


class DriftConfig(dg.Config):
    column_threshold: float = Field(default=0.1, description="A column drifts when its normed Wasserstein distance reaches this.")
    drift_share_threshold: float = Field(default=0.5, description="The day shows dataset drift when this share of feature columns drift.")
    max_reference_rows: int = Field(default=5_000, description="Rows sampled (seeded) from the training set as the reference.")
    max_current_rows: int = Field(default=5_000, description="Rows sampled (seeded) from the day's features.")


@dg.asset(
    partitions_def=daily_partitions,
    backfill_policy=dg.BackfillPolicy.single_run(),
    group_name="monitoring",
    kinds={"evidently", "parquet"},
    owners=["team:ml-platform"],
    metadata={"partition_expr": "snapshot_date"},
    deps=["champion_model"],
)
def drift_report(
    context: dg.AssetExecutionContext,
    config: DriftConfig,
    customer_features: pl.DataFrame,
    batch_predictions: pl.DataFrame,
    training_set: pl.DataFrame,
    artifacts: ArtifactStore,
    registry: ModelRegistry,
) -> pl.DataFrame:
    """How far this day's customers and churn scores have moved from what the model was trained on.

    One row per monitored column with its drift score (normed Wasserstein
    distance: how far the distributions are apart in reference standard
    deviations) and whether it crossed the threshold; `prediction` is the churn
    score itself. The metadata carries the share of drifted features, the
    dataset-level verdict (plotted across days in the UI) and a link to the full
    evidently HTML report.
    """
    champion, session = champion_session(registry, artifacts, "drift_report")
    features = list(champion.features)
    ref_frame = sample_rows(training_set.select(features).to_pandas(), config.max_reference_rows, seed=11)
    ref_frame["prediction"] = onnx_churn_probability(session, ref_frame[features].to_numpy())
    columns = [*features, "prediction"]

    scored = customer_features.join(
        batch_predictions.select("customer_id", "snapshot_date", "churn_probability"), on=["customer_id", "snapshot_date"], how="inner"
    )
    if scored.height != customer_features.height:
        raise dg.Failure(
            f"drift_report: {customer_features.height - scored.height} customers have features but no prediction; "
            "re-materialize batch_predictions for these days"
        )
    by_day = {k[0]: g for k, g in scored.partition_by("snapshot_date", as_dict=True).items()}
    rows = []
    for day in partition_days(context):
        key = day.isoformat()
        part = by_day.get(day)
        if part is None or part.is_empty():
            raise dg.Failure(f"drift_report {key}: no scored customers on this day; there is nothing to compare")
        current = sample_rows(
            part.select(*features, pl.col("churn_probability").alias("prediction")).to_pandas(), config.max_current_rows, seed=13
        )
        result = compute_drift(ref_frame, current, columns, config.column_threshold, config.drift_share_threshold)
        report = artifacts.put_named("drift_reports", f"{key}.html", result.html)
        for column in columns:
            score = result.column_scores[column]
            rows.append((day, column, score, score >= config.column_threshold))
        context.add_asset_metadata(
            {
                "drift_share": result.drift_share,
                "dataset_drift": result.dataset_drift,
                "drifted_columns": dg.MetadataValue.json(result.drifted_columns),
                "n_drifted_columns": len(result.drifted_columns),
                "prediction_drift_score": float(result.prediction_score or 0.0),
                "prediction_drift": result.prediction_drift,
                "column_scores": dg.MetadataValue.json({c: round(s, 4) for c, s in result.column_scores.items()}),
                "report_path": dg.MetadataValue.path(report.uri),
                "report_url": dg.MetadataValue.url(_file_url(report.uri)),
                "current_rows": len(current),
                "reference_rows": len(ref_frame),
                "model_version": champion.version,
            },
            partition_key=key,
        )
        if result.dataset_drift:
            context.log.warning(
                f"drift_report {key}: dataset drift, {len(result.drifted_columns)} columns drifted: {result.drifted_columns}"
            )
    return pl.DataFrame(
        rows, schema={"snapshot_date": pl.Date, "column": pl.String, "drift_score": pl.Float64, "drifted": pl.Boolean}, orient="row"
    )


def _file_url(uri: str) -> str:
    return uri if "://" in uri else f"file://{uri}"
