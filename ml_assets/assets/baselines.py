"""The classical baselines every candidate must beat out of time; BG/NBD registered as a model version."""

import datetime as dt
import json
from typing import Any

import dagster as dg
import polars as pl

from lib.backtest import Backtest, backtest_folds, label_horizon
from lib.features import model_features
from lib.records import Artifact, BaselineRecord
from lib.training import feature_matrix
from ml_assets.assets.candidates import evaluate, splits, store_and_register, track_candidate
from ml_assets.metadata import markdown_table
from resources import ArtifactStore, ExperimentTracker, ModelRegistry


@dg.asset(
    group_name="training",
    kinds={"scipy"},
    owners=["team:data-science"],
)
def baseline_model(
    context: dg.AssetExecutionContext,
    training_set: pl.DataFrame,
    artifacts: ArtifactStore,
    registry: ModelRegistry,
    tracker: ExperimentTracker,
) -> BaselineRecord:
    """The classical baselines every candidate must beat, judged out of time on the same cutoffs.

    `recency`: the longer since the last purchase, the likelier churn.
    `bgnbd`: the BG/NBD model (Fader, Hardie and Lee, 2005), fitted at each
    cutoff on the customers' (purchase days, last purchase, age) as of that day
    (no label is used, so fitting on the cutoff's own customers is fair) and
    ranked the strongest of its standard ways on these cutoffs (fewest expected
    purchases in the horizon, lowest P(alive), or highest P(no purchase in the
    horizon); `bgnbd_ranking` names it). The promotion gate refuses a
    candidate whose backtest ROC-AUC does not beat the best of them by
    `baseline_margin`.

    BG/NBD fitted on the newest labelled snapshot is also registered as a
    model version (kind `bgnbd`, parameters as JSON): exported to ONNX like the
    others, it becomes champion when no learned model beats the baselines, so
    scoring always has the best model there is and never a worse one.
    """
    from lib.backtest import baseline_backtests, bgnbd_fits
    from lib.baselines import bgnbd_from_dict, bgnbd_inputs, bgnbd_matrix_scores, fit_bgnbd

    folds = backtest_folds(training_set)
    horizon = label_horizon(training_set)
    fits = bgnbd_fits(training_set, folds)
    results, rankings = baseline_backtests(training_set, folds, horizon, fits)
    scored = [r for r in results if r.folds]
    best = max(scored, key=lambda r: r.roc_auc) if scored else None

    features = list(model_features(training_set))
    newest_day = training_set["snapshot_date"].max()
    newest = training_set.filter(pl.col("snapshot_date") == newest_day)
    # The newest snapshot is usually the last backtest cutoff: the same customers, so the same (deterministic) fit.
    newest_fit = fits.get(newest_day.isoformat()) if isinstance(newest_day, dt.date) else None
    fitted = bgnbd_from_dict(newest_fit) if newest_fit else fit_bgnbd(*bgnbd_inputs(newest))
    _, _, test = splits(training_set)
    bgnbd = next(r for r in results if r.name == "bgnbd")
    test_metrics, evaluation = evaluate(
        "baseline_model (BG/NBD)", test, bgnbd_matrix_scores(fitted, features, horizon, feature_matrix(test, tuple(features))), 0.0
    )
    # The horizon is the training set's (label_date), recorded on the record and the registry version, not in the artifact.
    params = {**fitted.as_dict(), "fitted_on": str(newest["snapshot_date"].max())}
    ref, version = store_and_register(
        context,
        "bgnbd",
        "bgnbd",
        json.dumps(params, sort_keys=True).encode(),
        ".json",
        training_set,
        params,
        {**bgnbd.metrics(), **test_metrics},
        artifacts,
        registry,
    )
    metadata = _metadata(version, params, evaluation, results, rankings, best, fits, horizon)
    metrics = {**bgnbd.metrics(), **test_metrics}
    # MLflow gets BG/NBD's test-split plots too (the UI shows its backtest table instead), like every candidate's.
    tracked = (version, "bgnbd", ref.sha256)
    metadata.update(track_candidate(context, tracker, registry, tracked, params, metrics, training_set, {**evaluation, **metadata}))
    context.add_output_metadata(metadata)
    return BaselineRecord(
        cutoffs=tuple(f.cutoff.isoformat() for f in folds),
        baselines={r.name: {**r.metrics(), "folds": r.folds, **({"ranking": r.variant} if r.variant else {})} for r in results},
        best=best.name if best else None,
        best_backtest_roc_auc=best.roc_auc if best else None,
        bgnbd_fits=fits,
        # The BG/NBD model version, exported to ONNX by bgnbd_onnx like the learned models.
        model_version=version,
        kind="bgnbd",
        format="bgnbd-json",
        artifact=Artifact(**ref.as_dict()),
        features=features,
        horizon_days=horizon,
        metrics={**bgnbd.metrics(), **test_metrics},
    )


def _metadata(
    version: str,
    params: dict[str, Any],
    evaluation: dict[str, Any],
    results: list[Backtest],
    rankings: dict[str, float],
    best: Backtest | None,
    fits: dict[str, dict[str, float]],
    horizon: int,
) -> dict[str, object]:
    """What the UI shows: the BG/NBD fit, every baseline's backtest, the ranking BG/NBD was judged by."""
    from lib.backtest import comparison_table

    scored = [r for r in results if r.folds]
    bgnbd = next(r for r in results if r.name == "bgnbd")
    return {
        "model_version": version,
        "bgnbd_parameters": dg.MetadataValue.json(params),
        **{f"bgnbd_{k}": v for k, v in evaluation.items() if k.startswith("test_")},
        **{f"{r.name}_backtest_roc_auc": r.roc_auc for r in scored},
        **{f"{r.name}_backtest_pr_auc": r.pr_auc for r in scored},
        "bgnbd_ranking": bgnbd.variant,
        "bgnbd_rankings_backtest_roc_auc": dg.MetadataValue.json({k: round(v, 4) for k, v in rankings.items()}),
        "best_baseline": best.name if best else "none",
        "best_backtest_roc_auc": best.roc_auc if best else float("nan"),
        "backtest": dg.MetadataValue.md(markdown_table(comparison_table(results)) if scored else "_no cutoff with matured labels_"),
        "bgnbd_parameters_by_cutoff": dg.MetadataValue.json({c: {k: round(v, 4) for k, v in p.items()} for c, p in fits.items()}),
        "horizon_days": horizon,
    }
