"""Monitoring: daily data, prediction and (once labels mature) performance drift against the champion's training reference."""

import datetime as dt
from typing import Any

import dagster as dg
import polars as pl
from pydantic import Field

from lib.drift import compute_drift, judged, sample_rows
from lib.export import onnx_churn_probability
from lib.features import WINDOW_DAYS
from lib.frames import split_by_day
from lib.settings import settings
from ml_assets.models import champion_session
from ml_assets.partitions import daily_partitions, partition_days
from resources import ArtifactStore, Lake, ModelRegistry
from resources.registry import ModelVersion, RegistryError

CUSTOMER_FEATURES = dg.AssetKey("customer_features")


class DriftConfig(dg.Config):
    column_threshold: float = Field(default=0.1, description="A column drifts when its normed Wasserstein distance reaches this.")
    drift_share_threshold: float = Field(
        default=settings().drift_share_threshold,
        description="The day shows dataset drift when this share of feature columns (ageing features excluded) drift (drift_share_threshold).",
    )
    reference_lag_days: int = Field(
        default=settings().drift_reference_lag_days,
        description="The reference is the population this many days earlier (drift_reference_lag_days); the champion's training "
        "sample until that day exists.",
    )
    max_reference_rows: int = Field(default=5_000, description="Rows (seeded sample) of the reference.")
    max_current_rows: int = Field(default=5_000, description="Rows sampled (seeded) from the day's features.")
    label_horizon_days: int = Field(
        default=settings().label_horizon_days,
        description="Labels of a day's scores mature this many days later (the training label horizon, label_horizon_days).",
    )
    max_roc_auc_drop: float = Field(
        default=0.05, description="Performance drift when matured ROC-AUC falls this far below the scoring model's backtest ROC-AUC."
    )


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
    artifacts: ArtifactStore,
    registry: ModelRegistry,
    lake: Lake,
) -> pl.DataFrame:
    """How far this day's customers and churn scores have moved from the same population a few weeks earlier.

    One row per monitored column with its drift score (normed Wasserstein
    distance: how far the distributions are apart in reference standard
    deviations) and whether it crossed the threshold; `prediction` is the churn
    score itself. The metadata carries the share of drifted features, the
    dataset-level verdict (plotted across days in the UI) and a link to the full
    evidently HTML report.

    Compared are the day's active customers (a purchase within the windows)
    and the active customers `reference_lag_days` (28) earlier, scored by the
    same champion: a change in behaviour shows within days and stops counting
    once the reference has caught up with it, while the ageing of a
    whole-history population (more dormant customers every day) does not
    count. Features that move by construction as customers and the log age
    are scored but never counted in the drift share, and no verdict is given
    while the reference day's windows are still filling. Until the lagged day
    exists, the champion's own training sample is the reference. Slow decay of quality is caught by matured
    performance, below. Once a day's scores are
    `label_horizon_days` old, their outcomes are known: the metadata then also
    carries ROC-AUC and calibration error of the scores made that earlier day
    against the scoring model's test figures (performance drift).
    """
    champion, session = champion_session(registry, artifacts, "drift_report")
    features = list(champion.features)
    if not champion.reference_uri or not champion.reference_sha256:
        raise dg.Failure(
            f"drift_report: champion {champion.version} has no stored training reference; retrain (training_job) to create one"
        )
    import io

    training_reference = pl.read_parquet(io.BytesIO(artifacts.get(champion.reference_uri, champion.reference_sha256)))

    def reference_for(day: dt.date) -> tuple[Any, str]:
        lagged = (day - dt.timedelta(days=config.reference_lag_days)).isoformat()
        frame, name = training_reference, f"training sample of {champion.version}"
        if lagged in existing:
            frame, name = lake.read_partitions(CUSTOMER_FEATURES, [lagged], columns=features), f"active customers on {lagged}"
        ref = sample_rows(_active(frame).select(features).to_pandas(), config.max_reference_rows, seed=11)
        ref["prediction"] = onnx_churn_probability(session, ref[features].to_numpy())
        return ref, name

    existing = set(lake.existing_partitions(CUSTOMER_FEATURES))
    validated = lake.existing_partitions(dg.AssetKey("validated_transactions"))
    first_day = dt.date.fromisoformat(validated[0]) if validated else None
    columns = [*features, "prediction"]

    keys = ["customer_id", "snapshot_date"]
    unscored = customer_features.select(keys).join(batch_predictions.select(keys), on=keys, how="anti").height
    if unscored:
        raise dg.Failure(
            f"drift_report: {unscored} customers have features but no prediction; re-materialize batch_predictions for these days"
        )
    # Joined a day at a time: a range run never holds a second copy of every day's features.
    features_by_day = split_by_day(customer_features, "snapshot_date")
    scores_by_day = split_by_day(batch_predictions.select(*keys, "churn_probability"), "snapshot_date")
    rows = []
    for day in partition_days(context):
        key = day.isoformat()
        if day not in features_by_day or day not in scores_by_day:
            raise dg.Failure(f"drift_report {key}: no scored customers on this day; there is nothing to compare")
        part = _active(features_by_day[day].join(scores_by_day[day], on=keys, how="inner"))
        current = sample_rows(
            part.select(*features, pl.col("churn_probability").alias("prediction")).to_pandas(), config.max_current_rows, seed=13
        )
        ref_frame, reference_name = reference_for(day)
        verdict = judged(first_day, day - dt.timedelta(days=config.reference_lag_days), WINDOW_DAYS)
        result = compute_drift(ref_frame, current, columns, config.column_threshold, config.drift_share_threshold, verdict)
        report = artifacts.put_named("drift_reports", f"{key}.html", result.html)
        # Labels need every customer scored that day, not only the active ones.
        performance = _matured_performance(day, features_by_day[day], config, lake, registry)
        for column in columns:
            score = result.column_scores[column]
            rows.append((day, column, score, score >= config.column_threshold))
        context.add_asset_metadata(
            {
                "drift_share": result.drift_share,
                "dataset_drift": result.dataset_drift,
                "drifted_columns": dg.MetadataValue.json(result.drifted_columns),
                "ageing_drifted_columns": dg.MetadataValue.json(result.ageing_drifted),
                "reference": reference_name,
                "drift_status": "judged" if verdict else f"warming up: the {WINDOW_DAYS}-day windows of the reference day are not full yet",
                "n_drifted_columns": len(result.drifted_columns),
                "prediction_drift_score": float(result.prediction_score or 0.0),
                "prediction_drift": result.prediction_drift,
                "column_scores": dg.MetadataValue.json({c: round(s, 4) for c, s in result.column_scores.items()}),
                "report_path": dg.MetadataValue.path(report.uri),
                "report_url": dg.MetadataValue.url(_file_url(report.uri)),
                "current_rows": len(current),
                "reference_rows": len(ref_frame),
                "model_version": champion.version,
                **performance,
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


def _matured_performance(day: dt.date, today: pl.DataFrame, config: DriftConfig, lake: Lake, registry: ModelRegistry) -> dict[str, Any]:
    """ROC-AUC and calibration of the scores made `label_horizon_days` ago, now that their outcomes are known.

    A customer scored on day S churned when they bought nothing after S's
    cutoff up to this day's cutoff: exactly the training label, read from this
    day's features (their last purchase).
    """
    from lib.evaluation import classification_metrics
    from lib.features import churn_labels

    scored_day = day - dt.timedelta(days=config.label_horizon_days)
    key = dg.AssetKey("batch_predictions")
    if scored_day.isoformat() not in set(lake.existing_partitions(key)):
        return {"performance_status": f"no scores on {scored_day} to evaluate yet"}
    scored = lake.read_partitions(key, [scored_day.isoformat()])
    if scored.is_empty():
        return {"performance_status": f"no scores on {scored_day}"}
    labelled = churn_labels(scored, today.select("customer_id", "last_tx_ts"), scored_day)
    y = labelled["churned"].to_numpy()
    if len(set(y.tolist())) < 2:
        return {"performance_status": f"scores of {scored_day} have a single outcome class; ROC-AUC undefined"}
    metrics = classification_metrics(y, labelled["churn_probability"].to_numpy())
    versions = labelled["model_version"].unique().to_list()
    scoring_model: ModelVersion | None = None
    if len(versions) == 1:
        try:
            scoring_model = registry.get(versions[0])
        except RegistryError:  # scored by a version this registry never saw: nothing to compare with
            scoring_model = None
    out: dict[str, Any] = {
        "performance_status": "evaluated",
        "matured_scores_day": scored_day.isoformat(),
        "matured_rows": int(metrics["rows"]),
        "matured_roc_auc": metrics["roc_auc"],
        "matured_ece": metrics["ece"],
        "matured_churn_rate": metrics["positive_rate"],
    }
    if scoring_model is not None:
        # The out-of-time figure is what the model promised for later days; older records only have the test split's.
        split = "backtest" if "backtest_roc_auc" in scoring_model.metrics else "test"
        promised = float(scoring_model.metrics.get(f"{split}_roc_auc", scoring_model.metrics.get("roc_auc", float("nan"))))
        drop = promised - metrics["roc_auc"]
        out.update(
            {
                f"scoring_model_{split}_roc_auc": promised,
                "roc_auc_drop": drop,
                "performance_drift": drop >= config.max_roc_auc_drop,
            }
        )
    return out


def _file_url(uri: str) -> str:
    return uri if "://" in uri else f"file://{uri}"


def _active(frame: pl.DataFrame) -> pl.DataFrame:
    """Customers with a purchase inside the windows: the population whose behaviour drift is about.

    Dormant customers' features only age; counting them would make the
    drift of a whole-history population a measure of how many customers
    have gone quiet, which the churn score itself reports.
    """
    return frame.filter(pl.col("recency_days") <= WINDOW_DAYS) if "recency_days" in frame.columns else frame
