"""The stacked candidate: the chosen LightGBM and the fitted BG/NBD, combined by weights fitted out of time."""

import json
from typing import Any

import dagster as dg
import polars as pl
from pydantic import Field

from lib.backtest import label_horizon
from lib.features import model_features
from lib.records import Artifact, BaselineRecord, ModelRecord
from ml_assets.assets.candidates import backtest_figures, evaluate, native_artifact, splits, store_and_register, track_candidate
from ml_assets.run_config import default_of
from resources import ArtifactStore, ExperimentTracker, ModelRegistry


class StackConfig(dg.Config):
    min_roc_auc: float = Field(
        default=default_of("stacked_model", "min_roc_auc"), description="Fail the run when test ROC-AUC is below this floor (min_roc_auc)."
    )


@dg.asset(
    group_name="training",
    kinds={"lightgbm", "scipy"},
    owners=["team:data-science"],
    tags={"ml/compute": "cpu"},
)
def stacked_model(
    context: dg.AssetExecutionContext,
    config: StackConfig,
    training_set: pl.DataFrame,
    lgbm_model: ModelRecord,
    baseline_model: BaselineRecord,
    artifacts: ArtifactStore,
    registry: ModelRegistry,
    tracker: ExperimentTracker,
) -> ModelRecord:
    """LightGBM stacked with BG/NBD: P(churn) = sigmoid(w_m * LightGBM's logit + w_b * logit(BG/NBD's P(no purchase)) + c).

    Where the learned model alone is weakest (short logs, most customers
    buying once, one ageing cohort) BG/NBD's closed form knows what a few
    thousand customers cannot teach the trees; the weights, fitted on the
    validation split (the newest snapshots, after the trees' training rows),
    say how much each adds to the other. The parts are the versions this run
    registered (`lgbm_model`'s trees, `baseline_model`'s BG/NBD parameters),
    read back through the registry and verified by sha256; the artifact packs
    all three in one JSON document under one sha256 (`lib/stacking.py`).

    The headline backtest refits every part at each cutoff from what that
    cutoff knew (the chosen LightGBM parameters, BG/NBD on the newest training
    snapshot, the weights on the fold's validation rows), so the gate judges
    the stack exactly as it judges the others, against the same baselines.
    """
    from lib.baselines import bgnbd_from_dict
    from lib.stacking import fit_and_score, pack, stack_scorer
    from lib.training import load_booster

    features = model_features(training_set)
    if tuple(lgbm_model.features) != features or tuple(baseline_model.features) != features:
        raise dg.Failure("stacked_model: the LightGBM and BG/NBD versions were trained on other features than this training set; retrain")
    horizon = label_horizon(training_set)
    model_text = native_artifact(lgbm_model, registry, artifacts).decode()
    bgnbd_params = json.loads(native_artifact(baseline_model, registry, artifacts))
    booster, bgnbd = load_booster(model_text), bgnbd_from_dict(bgnbd_params)
    _, valid, test = splits(training_set)

    stack, how, scores = fit_and_score(lambda x: booster.predict(x, raw_score=True), bgnbd, features, horizon, valid, test)
    if stack.bgnbd_weight == 0.0:
        context.log.warning(f"stacked_model: {how}")
    metrics, evaluation = evaluate("stacked_model", test, scores, config.min_roc_auc)

    backtest, backtest_md = backtest_figures(
        "stacked_model", training_set, stack_scorer(_fold_learner(lgbm_model), horizon), baseline_model
    )
    metrics = {**backtest, **metrics}
    component = {"lightgbm": lgbm_model.model_version, "bgnbd": baseline_model.model_version}
    data = pack(model_text, bgnbd_params, stack, horizon, features, component)
    params = {**stack.as_dict(), **{f"{k}_version": v for k, v in component.items()}}
    ref, version = store_and_register(context, "stack", "stack", data, ".json", training_set, params, metrics, artifacts, registry)
    metadata: dict[str, Any] = {
        "model_version": version,
        "artifact_uri": dg.MetadataValue.path(ref.uri),
        "sha256": ref.sha256,
        "weights": dg.MetadataValue.json(stack.as_dict()),
        "weights_fitted": how,
        "lightgbm_version": lgbm_model.model_version,
        "bgnbd_version": baseline_model.model_version,
        "valid_rows": valid.height,
        **backtest_md,
        **evaluation,
    }
    metadata.update(track_candidate(context, tracker, registry, (version, "stack", ref.sha256), params, metrics, training_set, metadata))
    context.add_output_metadata(metadata)
    return ModelRecord(
        model_version=version,
        kind="stack",
        format="churn-stack-json",
        artifact=Artifact(**ref.as_dict()),
        features=features,
        horizon_days=horizon,
        metrics=metrics,
        details={"weights": stack.as_dict(), "weights_fitted": how, "parts": component},
    )


def _fold_learner(lgbm_model: ModelRecord) -> Any:
    """The chosen LightGBM parameters, retrained on what each backtest cutoff knew; its raw score (the logit)."""
    from lib.training import load_booster, train_lgbm

    details = lgbm_model.details
    chosen, rounds, patience = details.get("chosen"), details.get("num_boost_round"), details.get("early_stopping_rounds")
    if not chosen or not rounds or not patience:
        raise dg.Failure(f"stacked_model: {lgbm_model.model_version} does not record its chosen parameters; rematerialize lgbm_model")

    def learned(fit: pl.DataFrame, valid: pl.DataFrame) -> Any:
        fold = load_booster(train_lgbm(fit, valid, {}, int(rounds), int(patience), [dict(chosen)]).model_text)
        return lambda x: fold.predict(x, raw_score=True)

    return learned
