"""What every trained candidate shares: its registry entry, its drift reference, its test and backtest figures."""

from __future__ import annotations

import io
from typing import Any

import dagster as dg
import polars as pl

from lib.backtest import backtest_folds, label_horizon
from lib.features import model_features
from lib.records import BaselineRecord, ModelRecord
from ml_assets.metadata import figure_markdown, markdown_table, plots_of
from resources import ArtifactStore, ExperimentTracker, ModelRegistry, TrackedModel

REFERENCE_ROWS = 5_000


def data_window(training_set: pl.DataFrame) -> dict[str, Any]:
    """What a model was trained and evaluated on, for the registry: each split's snapshots and rows, and the label horizon."""
    window: dict[str, Any] = {"horizon_days": label_horizon(training_set)}
    for split in ("train", "valid", "test"):
        part = training_set.filter(pl.col("split") == split)
        window[split] = {
            "first_snapshot": str(part["snapshot_date"].min()),
            "last_snapshot": str(part["snapshot_date"].max()),
            "rows": part.height,
        }
    return window


def store_reference(training_set: pl.DataFrame, artifacts: ArtifactStore) -> Any:
    """A seeded sample of the train split's features: the drift reference of every model trained on it."""
    train = training_set.filter(pl.col("split") == "train").select(model_features(training_set))
    sample = train.sample(n=min(REFERENCE_ROWS, train.height), seed=11) if train.height else train
    buf = io.BytesIO()
    sample.write_parquet(buf, compression="zstd", statistics=False)
    return artifacts.put("references", buf.getvalue(), ".parquet")


def store_and_register(
    context: dg.AssetExecutionContext,
    kind: str,
    prefix: str,
    data: bytes,
    suffix: str,
    training_set: pl.DataFrame,
    params: dict[str, Any],
    metrics: dict[str, float],
    artifacts: ArtifactStore,
    registry: ModelRegistry,
) -> tuple[Any, str]:
    """Write the model and its drift reference (atomically, by sha256), then register it as a candidate."""
    ref = artifacts.put(f"models/{prefix}", data, suffix)
    reference = store_reference(training_set, artifacts)
    version = f"{prefix}-{ref.sha256[:12]}"
    registry.register(
        version=version,
        kind=kind,
        run_id=context.run.run_id,
        data_window=data_window(training_set),
        features=list(model_features(training_set)),
        params=params,
        metrics=metrics,
        artifact_uri=ref.uri,
        artifact_sha256=ref.sha256,
        reference_uri=reference.uri,
        reference_sha256=reference.sha256,
    )
    return ref, version


def track_candidate(
    context: dg.AssetExecutionContext,
    tracker: ExperimentTracker,
    registry: ModelRegistry,
    record: tuple[str, str, str],
    params: dict[str, Any],
    metrics: dict[str, float],
    training_set: pl.DataFrame,
    metadata: dict[str, Any],
    trials: list[dict[str, Any]] | None = None,
    curve: list[dict[str, float]] | None = None,
) -> dict[str, Any]:
    """Log the registered candidate (``record``: version, kind, artifact sha256) to MLflow when tracking is on: the
    figures and plots its materialization carries, nothing recomputed. The metadata it returns says what was logged,
    or what was not and why (resources/tracking.py)."""
    if not tracker.enabled:
        return {}
    version, kind, sha256 = record
    model = TrackedModel(version, kind, params, metrics, data_window(training_set), sha256, plots_of(metadata), trials or [], curve or [])
    return tracker.log_candidate(context, model, registry)


def splits(training_set: pl.DataFrame) -> tuple[pl.DataFrame, pl.DataFrame, pl.DataFrame]:
    train, valid, test = (training_set.filter(pl.col("split") == s) for s in ("train", "valid", "test"))
    return train, valid, test


def backtest_figures(
    name: str, training_set: pl.DataFrame, scorer: Any, baseline: BaselineRecord
) -> tuple[dict[str, float], dict[str, Any]]:
    """The headline: mean ROC-AUC and PR-AUC over the out-of-time cutoffs, the per-cutoff table, and the margin over
    BG/NBD (its strongest ranking, as the gate sees it) with a paired bootstrap interval on the same scored rows.

    BG/NBD is the baseline's own: its ranking and its fit at each cutoff come from ``baseline`` (``baseline_model``),
    so it is re-scored here, not refitted."""
    from lib.backtest import bgnbd_backtest, comparison_table, run_backtest
    from lib.margin import paired_margin

    folds = backtest_folds(training_set)
    result = run_backtest(name, training_set, folds, scorer)
    ranking = baseline.baselines.get("bgnbd", {}).get("ranking")
    bgnbd = bgnbd_backtest(training_set, folds, label_horizon(training_set), ranking, baseline.bgnbd_fits)
    margin = paired_margin([(y, s, b) for (y, s), (_, b) in zip(result.scored, bgnbd.scored, strict=True)])
    metrics = {**result.metrics(), **margin.as_metrics("backtest_margin_vs_bgnbd")}
    metadata: dict[str, Any] = dict(metrics)
    metadata["backtest_margin_vs_bgnbd_text"] = f"{margin.text()} over BG/NBD ranked by {bgnbd.variant}"
    metadata["backtest"] = dg.MetadataValue.md(
        markdown_table(comparison_table([result, bgnbd])) if result.folds else "_no cutoff with matured labels_"
    )
    return metrics, metadata


def evaluate(name: str, test: pl.DataFrame, scores: Any, floor: float) -> tuple[dict[str, float], dict[str, Any]]:
    """Test-split figures (held-out customers of the newest snapshots), the same for every model kind; fails under the floor."""
    from lib.evaluation import evaluate as evaluate_scores

    evaluation = evaluate_scores(test["churned"].to_numpy(), scores, name, split="test")
    if why := evaluation.refusal(floor):
        raise dg.Failure(f"{name}: {why}")
    metrics = evaluation.named()
    metadata: dict[str, Any] = {k: float(v) for k, v in metrics.items() if k != "test_rows"}
    metadata["test_rows"] = evaluation.rows
    metadata.update({key: figure_markdown(fig, caption) for key, (caption, fig) in evaluation.figures.items()})
    return metrics, metadata


def native_artifact(record: ModelRecord, registry: ModelRegistry, artifacts: ArtifactStore) -> bytes:
    """The native model the record names, located and checked by the registry (the authority), not by the lake record:
    a record that disagrees with its registry version is refused."""
    version = registry.get(record.model_version)
    if (version.artifact_uri, version.artifact_sha256) != (record.artifact.uri, record.artifact.sha256):
        raise dg.Failure(
            f"{record.model_version}: the lake record points at {record.artifact.uri} ({record.artifact.sha256[:12]}), the registry at "
            f"{version.artifact_uri} ({version.artifact_sha256[:12]}); the record was changed after training. Retrain, or check who "
            "can write the lake."
        )
    return artifacts.get(version.artifact_uri, version.artifact_sha256)
