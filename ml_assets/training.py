"""Training: labelled snapshots and the LightGBM churn model."""

import datetime as dt
from typing import Any

import dagster as dg
import polars as pl
from pydantic import Field

from ml_assets.lib.features import FEATURE_COLUMNS, churn_labels
from ml_assets.lib.training import classification_metrics, plan_snapshots, train_lgbm
from ml_assets.metadata import figure_markdown, frame_metadata, markdown_table
from resources import ArtifactStore, Lake

CUSTOMER_FEATURES = dg.AssetKey("customer_features")


class TrainingSetConfig(dg.Config):
    horizon_days: int = Field(default=30, description="A customer has churned when they buy nothing for this many days after the snapshot.")
    snapshot_every_days: int = Field(default=7, description="Days between two labelled snapshots.")
    max_snapshots: int = Field(default=26, description="Newest labelled snapshots to use (train + validation).")
    valid_fraction: float = Field(default=0.25, description="Share of the newest snapshots held out for validation.")
    min_history_days: int = Field(default=180, description="Skip snapshots with fewer days of history before them (windows not yet full).")
    latest_snapshot: str | None = Field(
        default=None, description="Ignore feature partitions after this day (YYYY-MM-DD); default: all materialized."
    )


class LgbmConfig(dg.Config):
    learning_rate: float = Field(default=0.05, description="Boosting learning rate.")
    num_leaves: int = Field(default=31, description="Maximum leaves per tree.")
    min_data_in_leaf: int = Field(default=50, description="Minimum rows in a leaf.")
    feature_fraction: float = Field(default=0.9, description="Share of features sampled per tree.")
    num_boost_round: int = Field(default=600, description="Upper bound on boosting rounds.")
    early_stopping_rounds: int = Field(default=40, description="Stop when validation log loss has not improved for this many rounds.")
    min_roc_auc: float = Field(default=0.7, description="Fail the run when holdout ROC-AUC is below this floor.")


@dg.asset(
    deps=[CUSTOMER_FEATURES],
    group_name="training",
    kinds={"polars", "parquet"},
    owners=["team:data-science"],
)
def training_set(context: dg.AssetExecutionContext, config: TrainingSetConfig, lake: Lake) -> pl.DataFrame:
    """Labelled customer snapshots the models learn from.

    Each row is one customer's features on a snapshot day plus `churned`: 1 when
    they bought nothing in the following `horizon_days`. Only snapshots whose
    horizon has fully passed are labelled. The newest snapshots form the
    validation split (`split = valid`); train snapshots end a full horizon before
    them, so no training label peeks into the validation period.
    """
    materialized = context.instance.get_materialized_partitions(CUSTOMER_FEATURES)
    available = sorted(dt.date.fromisoformat(k) for k in materialized)
    if config.latest_snapshot:
        latest = dt.date.fromisoformat(config.latest_snapshot)
        available = [d for d in available if d <= latest]
    plan = plan_snapshots(
        available, config.horizon_days, config.snapshot_every_days, config.max_snapshots, config.valid_fraction, config.min_history_days
    )
    if len(plan.train_dates) < 1 or len(plan.valid_dates) < 1:
        span = f"{available[0]}..{available[-1]}" if available else "none"
        raise dg.Failure(
            f"training_set: not enough labelled snapshots (train {len(plan.train_dates)}, valid {len(plan.valid_dates)}). "
            f"customer_features partitions materialized: {len(available)} ({span}). A snapshot needs {config.min_history_days} days "
            f"of history before it and its partition + {config.horizon_days} days materialized; materialize more customer_features days."
        )
    needed = sorted(
        {*plan.train_dates, *plan.valid_dates}
        | {d + dt.timedelta(days=config.horizon_days) for d in [*plan.train_dates, *plan.valid_dates]}
    )
    frames = lake.read_partitions(CUSTOMER_FEATURES, [d.isoformat() for d in needed], needed_by=" (needed by training_set)")
    by_day = {k[0]: g for k, g in frames.partition_by("snapshot_date", as_dict=True).items()}
    empty = frames.clear()
    parts = []
    for split, days in (("train", plan.train_dates), ("valid", plan.valid_dates)):
        for day in days:
            later = by_day.get(day + dt.timedelta(days=config.horizon_days), empty)
            parts.append(churn_labels(by_day.get(day, empty), later, day).with_columns(pl.lit(split).alias("split")))
    frame = pl.concat(parts, how="vertical")
    stats = frame.group_by("split").agg(pl.len().alias("rows"), pl.col("churned").mean().alias("churn_rate")).sort("split")
    context.add_output_metadata(
        {
            **frame_metadata(frame.drop("last_tx_ts")),
            "train_snapshots": dg.MetadataValue.json([d.isoformat() for d in plan.train_dates]),
            "valid_snapshots": dg.MetadataValue.json([d.isoformat() for d in plan.valid_dates]),
            "split_stats": dg.MetadataValue.md(markdown_table(stats)),
            "churn_rate": float(frame["churned"].mean()),
            "horizon_days": config.horizon_days,
        }
    )
    return frame


@dg.asset(
    group_name="training",
    kinds={"lightgbm"},
    owners=["team:data-science"],
    tags={"ml/compute": "cpu"},
)
def lgbm_model(
    context: dg.AssetExecutionContext, config: LgbmConfig, training_set: pl.DataFrame, artifacts: ArtifactStore
) -> dict[str, Any]:
    """The gradient-boosted churn classifier (LightGBM), trained on the train split with early stopping on
    the validation split.

    The model file is stored in LightGBM's own text format, named by its sha256,
    and verified against that checksum before anything loads it. Holdout metrics
    (ROC-AUC, PR-AUC, log loss, Brier) and ROC and feature-importance plots are on
    each materialization.
    """
    train = training_set.filter(pl.col("split") == "train")
    valid = training_set.filter(pl.col("split") == "valid")
    params = {
        "learning_rate": config.learning_rate,
        "num_leaves": config.num_leaves,
        "min_data_in_leaf": config.min_data_in_leaf,
        "feature_fraction": config.feature_fraction,
    }
    model = train_lgbm(train, valid, params, config.num_boost_round, config.early_stopping_rounds)
    metrics = model.metrics
    if metrics["roc_auc"] < config.min_roc_auc:
        raise dg.Failure(
            f"lgbm_model: holdout ROC-AUC {metrics['roc_auc']:.3f} is below the floor {config.min_roc_auc}; the model is not saved. "
            "Check the training_set (label rate, snapshot count) before lowering the floor."
        )
    ref = artifacts.put("models/lgbm", model.model_text.encode(), ".txt")
    version = f"lgbm-{ref.sha256[:12]}"
    importance = _importance(model.model_text)
    context.add_output_metadata(
        {
            "model_version": version,
            "artifact_uri": dg.MetadataValue.path(ref.uri),
            "sha256": ref.sha256,
            "best_iteration": model.best_iteration,
            "train_rows": train.height,
            "valid_rows": valid.height,
            **{k: float(v) for k, v in metrics.items() if k != "rows"},
            "params": dg.MetadataValue.json(params),
            "roc_curve": _roc_plot(valid["churned"].to_numpy(), model.valid_scores),
            "feature_importance": _importance_plot(importance),
        }
    )
    return {
        "model_version": version,
        "format": "lightgbm-text",
        "artifact": ref.as_dict(),
        "features": list(FEATURE_COLUMNS),
        "metrics": metrics,
        "best_iteration": model.best_iteration,
        "params": model.params,
        "trained_at": dt.datetime.now(dt.UTC).isoformat(),
    }


def _importance(model_text: str) -> dict[str, float]:
    from ml_assets.lib.training import load_booster

    booster = load_booster(model_text)
    gains = booster.feature_importance(importance_type="gain")
    return dict(sorted(zip(booster.feature_name(), map(float, gains), strict=True), key=lambda kv: -kv[1]))


def _roc_plot(y, scores) -> dg.MetadataValue:  # noqa: ANN001
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from sklearn.metrics import roc_curve

    fpr, tpr, _ = roc_curve(y, scores)
    fig, ax = plt.subplots(figsize=(4, 4))
    ax.plot(fpr, tpr, label=f"AUC {classification_metrics(y, scores)['roc_auc']:.3f}")
    ax.plot([0, 1], [0, 1], linestyle="--", color="grey")
    ax.set_xlabel("false positive rate")
    ax.set_ylabel("true positive rate")
    ax.set_title("ROC, validation split")
    ax.legend(loc="lower right")
    return figure_markdown(fig, "ROC curve")


def _importance_plot(importance: dict[str, float]) -> dg.MetadataValue:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(importance)[:15][::-1]
    fig, ax = plt.subplots(figsize=(5, 4))
    ax.barh(names, [importance[n] for n in names])
    ax.set_xlabel("total gain")
    ax.set_title("LightGBM feature importance")
    return figure_markdown(fig, "feature importance")
