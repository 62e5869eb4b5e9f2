"""The learned candidates: the LightGBM classifier and the PyTorch network, each registered with its figures."""

import dataclasses
from typing import Any

import dagster as dg
import polars as pl
from pydantic import Field

from lib.backtest import label_horizon
from lib.features import model_features
from lib.records import Artifact, BaselineRecord, ModelRecord
from lib.torch_net import TorchTrainConfig
from lib.training import feature_matrix, search_grid, train_lgbm
from ml_assets.assets.candidates import backtest_figures, evaluate, splits, store_and_register, track_candidate
from ml_assets.k8s import step_tags
from ml_assets.metadata import figure_markdown, markdown_table
from ml_assets.run_config import default_of
from resources import ArtifactStore, ExperimentTracker, ModelRegistry


class LgbmConfig(dg.Config):
    learning_rate: float = Field(default=0.05, description="Boosting learning rate.")
    feature_fraction: float = Field(default=0.9, description="Share of features sampled per tree.")
    num_boost_round: int = Field(default=600, description="Upper bound on boosting rounds.")
    early_stopping_rounds: int = Field(default=40, description="Stop when validation log loss has not improved for this many rounds.")
    search_num_leaves: list[int] = Field(default=[7, 15, 31], description="Hyperparameter search: maximum leaves per tree.")
    search_min_data_in_leaf: list[int] = Field(default=[20, 100], description="Hyperparameter search: minimum rows in a leaf.")
    max_trials: int = Field(default=6, description="Upper bound on models trained by the search (grid points beyond it are skipped).")
    min_roc_auc: float = Field(
        default=default_of("lgbm_model", "min_roc_auc"), description="Fail the run when test ROC-AUC is below this floor (min_roc_auc)."
    )


_NET = TorchTrainConfig()


class TorchConfig(dg.Config):
    # The defaults are the network's own (lib/torch_net.TorchTrainConfig); the run config can change each.
    hidden: list[int] = Field(default=list(_NET.hidden), description="Widths of the hidden layers.")
    dropout: float = Field(default=_NET.dropout, description="Dropout after each hidden layer.")
    learning_rate: float = Field(default=_NET.learning_rate, description="AdamW learning rate.")
    weight_decay: float = Field(default=_NET.weight_decay, description="AdamW weight decay.")
    batch_size: int = Field(default=_NET.batch_size, description="Rows per optimizer step.")
    max_epochs: int = Field(default=_NET.max_epochs, description="Upper bound on epochs.")
    patience: int = Field(default=_NET.patience, description="Stop after this many epochs without a better validation log loss.")
    seed: int = Field(default=_NET.seed, description="Seed for weights, shuffling and dropout: the same data and seed give the same model.")
    device: str = Field(default=_NET.device, description="auto (CUDA when the node has a GPU, else CPU), cuda (fail without a GPU) or cpu.")

    def train_config(self) -> TorchTrainConfig:
        return TorchTrainConfig(
            **{f.name: getattr(self, f.name) for f in dataclasses.fields(TorchTrainConfig)} | {"hidden": tuple(self.hidden)}
        )

    min_roc_auc: float = Field(
        default=default_of("torch_model", "min_roc_auc"), description="Fail the run when test ROC-AUC is below this floor (min_roc_auc)."
    )


@dg.asset(
    group_name="training",
    kinds={"lightgbm"},
    owners=["team:data-science"],
    tags={"ml/compute": "cpu"},
)
def lgbm_model(
    context: dg.AssetExecutionContext,
    config: LgbmConfig,
    training_set: pl.DataFrame,
    baseline_model: BaselineRecord,
    artifacts: ArtifactStore,
    registry: ModelRegistry,
    tracker: ExperimentTracker,
) -> ModelRecord:
    """The gradient-boosted churn classifier (LightGBM), registered as a candidate model version.

    Headline figures are out of time (`backtest_roc_auc`, `backtest_pr_auc`):
    at each backtest cutoff the chosen parameters are retrained on the
    snapshots whose labels were known by then and scored on the cutoff's
    customers; the mean over cutoffs is what the promotion gate compares with
    the baselines. `test_*` figures (held-out customers of the newest
    snapshots) are secondary.

    A small, bounded hyperparameter search (leaves per tree x rows per leaf)
    trains one model per grid point with early stopping on the validation
    split and keeps the lowest validation log loss; the chosen parameters and
    every trial are in the metadata. Longer recency can only raise the churn
    score (a monotone constraint). Test-split metrics (ROC-AUC, PR-AUC, log
    loss, Brier, calibration error) with ROC/PR, calibration and
    feature-importance plots are on each materialization. The model file is
    LightGBM's text format, named by its sha256 and verified before any load.
    """
    train, valid, test = splits(training_set)
    grid = search_grid(config.search_num_leaves, config.search_min_data_in_leaf, config.max_trials)
    params = {"learning_rate": config.learning_rate, "feature_fraction": config.feature_fraction}
    model = train_lgbm(train, valid, params, config.num_boost_round, config.early_stopping_rounds, grid)
    from lib.training import load_booster

    scores = load_booster(model.model_text).predict(feature_matrix(test))
    metrics, evaluation = evaluate("lgbm_model", test, scores, config.min_roc_auc)
    chosen = {k: model.params[k] for k in ("num_leaves", "min_data_in_leaf", "learning_rate", "feature_fraction") if k in model.params}

    def fold_model(fit: pl.DataFrame, valid: pl.DataFrame, scored: pl.DataFrame) -> Any:
        # The chosen parameters, retrained on what each cutoff knew.
        m = train_lgbm(fit, valid, params, config.num_boost_round, config.early_stopping_rounds, [chosen])
        return load_booster(m.model_text).predict(feature_matrix(scored))

    backtest, backtest_md = backtest_figures("lgbm_model", training_set, fold_model, baseline_model)
    metrics = {**backtest, **metrics}
    registered = {**chosen, "best_iteration": model.best_iteration}
    ref, version = store_and_register(
        context, "lightgbm", "lgbm", model.model_text.encode(), ".txt", training_set, registered, metrics, artifacts, registry
    )
    importance = _importance(model.model_text)
    metadata: dict[str, Any] = {
        "model_version": version,
        "artifact_uri": dg.MetadataValue.path(ref.uri),
        "sha256": ref.sha256,
        "best_iteration": model.best_iteration,
        "chosen_params": dg.MetadataValue.json(chosen),
        "search_trials": dg.MetadataValue.md(markdown_table(pl.DataFrame(model.trials))),
        "train_rows": train.height,
        "valid_rows": valid.height,
        **backtest_md,
        **evaluation,
        "feature_importance": figure_markdown(_importance_figure(importance), "feature importance"),
    }
    tracked = (version, "lightgbm", ref.sha256)
    metadata.update(track_candidate(context, tracker, registry, tracked, registered, metrics, training_set, metadata, trials=model.trials))
    context.add_output_metadata(metadata)
    return ModelRecord(
        model_version=version,
        kind="lightgbm",
        format="lightgbm-text",
        artifact=Artifact(**ref.as_dict()),
        features=model_features(training_set),
        horizon_days=label_horizon(training_set),
        metrics=metrics,
        # The rounds settings travel with the record: the stacked model's backtest retrains these parameters at each cutoff.
        details={"best_iteration": model.best_iteration, "params": model.params, "chosen": chosen, **_rounds(config)},
    )


@dg.asset(
    group_name="training",
    kinds={"pytorch"},
    owners=["team:data-science"],
    # The one step that wants a GPU. The placement (GPU limits, node selector,
    # tolerations, security context) goes in *op* tags: the k8s executor reads
    # those per step however the run was launched. The `gpu` pool caps
    # concurrent GPU steps.
    tags={"ml/compute": "gpu"},
    op_tags=step_tags("gpu"),
    pool="gpu",
)
def torch_model(
    context: dg.AssetExecutionContext,
    config: TorchConfig,
    training_set: pl.DataFrame,
    baseline_model: BaselineRecord,
    artifacts: ArtifactStore,
    registry: ModelRegistry,
    tracker: ExperimentTracker,
) -> ModelRecord:
    """A neural-network churn classifier (PyTorch MLP), registered as a candidate model version.

    Inputs are log-scaled and standardized with statistics fitted on the train
    split; that transform is part of the network, so it is saved and exported
    with the weights. Training stops when validation log loss has not improved
    for `patience` epochs and keeps the best epoch; seeds make it repeatable.
    It runs on CUDA when the node has a GPU and on the CPU otherwise: `device`
    in the metadata says which. Loss and validation AUC per epoch are in the
    run log and plotted here, with the same test-split metrics and plots as
    LightGBM, and the same out-of-time backtest (the same settings retrained
    at each cutoff). Weights are stored as tensors only (loaded with
    `weights_only=True`), named by sha256.
    """
    import torch

    from lib.evaluation import learning_curve_figure
    from lib.torch_net import load_net, predict_proba, train_net

    train, valid, test = splits(training_set)
    torch.set_num_threads(2)
    settings = config.train_config()
    x_train, x_valid = feature_matrix(train), feature_matrix(valid)
    net = train_net(x_train, train["churned"].to_numpy(), x_valid, valid["churned"].to_numpy(), settings, on_epoch=_epoch_logger(context))
    scores = predict_proba(load_net(net.state, net.architecture), feature_matrix(test))
    metrics, evaluation = evaluate("torch_model", test, scores, config.min_roc_auc)

    def fold_model(fit: pl.DataFrame, valid: pl.DataFrame, scored: pl.DataFrame) -> Any:
        fold = train_net(feature_matrix(fit), fit["churned"].to_numpy(), feature_matrix(valid), valid["churned"].to_numpy(), settings)
        return predict_proba(load_net(fold.state, fold.architecture), feature_matrix(scored))

    backtest, backtest_md = backtest_figures("torch_model", training_set, fold_model, baseline_model)
    metrics = {**backtest, **metrics}
    params = {**net.architecture, **{k: getattr(settings, k) for k in ("learning_rate", "weight_decay", "batch_size", "seed")}}
    params["best_epoch"] = net.best_epoch
    ref, version = store_and_register(context, "torch", "torch", net.state, ".pt", training_set, params, metrics, artifacts, registry)
    device_name = torch.cuda.get_device_name(0) if net.device == "cuda" else "cpu"
    metadata: dict[str, Any] = {
        "model_version": version,
        "device": net.device,
        "device_name": device_name,
        "torch_version": torch.__version__,
        "artifact_uri": dg.MetadataValue.path(ref.uri),
        "sha256": ref.sha256,
        "best_epoch": net.best_epoch,
        "epochs_run": len(net.history),
        "train_seconds": round(sum(e.seconds for e in net.history), 2),
        "architecture": dg.MetadataValue.json(net.architecture),
        "train_rows": train.height,
        "valid_rows": valid.height,
        **backtest_md,
        **evaluation,
        "learning_curve": figure_markdown(learning_curve_figure(net.history), "learning curve"),
    }
    curve = [{"train_loss": e.train_loss, "valid_loss": e.valid_loss, "valid_roc_auc": e.valid_auc} for e in net.history]
    metadata.update(
        track_candidate(context, tracker, registry, (version, "torch", ref.sha256), params, metrics, training_set, metadata, curve=curve)
    )
    context.add_output_metadata(metadata)
    return ModelRecord(
        model_version=version,
        kind="torch",
        format="torch-state-dict",
        artifact=Artifact(**ref.as_dict()),
        architecture=net.architecture,
        features=model_features(training_set),
        horizon_days=label_horizon(training_set),
        metrics=metrics,
        details={"device": net.device, "best_epoch": net.best_epoch},
    )


def _epoch_logger(context: dg.AssetExecutionContext) -> Any:
    """One run-log line per epoch of the network (loss, validation ROC-AUC, seconds)."""

    def log_epoch(e: Any) -> None:
        context.log.info(
            f"torch_model epoch {e.epoch}: train loss {e.train_loss:.4f}, valid loss {e.valid_loss:.4f}, valid ROC-AUC {e.valid_auc:.4f} ({e.seconds:.2f}s)"
        )

    return log_epoch


def _rounds(config: LgbmConfig) -> dict[str, int]:
    return {"num_boost_round": config.num_boost_round, "early_stopping_rounds": config.early_stopping_rounds}


def _importance(model_text: str) -> dict[str, float]:
    from lib.training import load_booster

    booster = load_booster(model_text)
    gains = booster.feature_importance(importance_type="gain")
    return dict(sorted(zip(booster.feature_name(), map(float, gains), strict=True), key=lambda kv: -kv[1]))


def _importance_figure(importance: dict[str, float]) -> Any:
    from lib.evaluation import importance_figure

    return importance_figure(importance, "LightGBM feature importance")
