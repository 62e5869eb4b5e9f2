"""Training: labelled snapshots, the LightGBM model and the PyTorch network, each registered as a candidate."""

import dataclasses
import datetime as dt
import time
from typing import Any

import dagster as dg
import polars as pl
from pydantic import Field

from lib.features import churn_labels, model_features
from lib.frames import split_by_day
from lib.records import Artifact, BaselineRecord, ModelRecord
from lib.settings import settings
from lib.torch_net import TorchTrainConfig
from lib.training import feature_matrix, plan_snapshots, search_grid, split_holdout, train_lgbm
from ml_assets.k8s import step_tags
from ml_assets.metadata import figure_markdown, frame_metadata, markdown_table
from resources import ArtifactStore, FeatureStoreResource, Lake, ModelRegistry

CUSTOMER_FEATURES = dg.AssetKey("customer_features")


class TrainingSetConfig(dg.Config):
    # Defaults from the settings file: runs launched by schedules and the drift sensor use the user's problem.
    horizon_days: int = Field(
        default=settings().label_horizon_days,
        description="A customer has churned when they buy nothing for this many days after the snapshot (label_horizon_days).",
    )
    snapshot_every_days: int = Field(default=7, description="Days between two labelled snapshots.")
    max_snapshots: int = Field(default=26, description="Newest labelled snapshots to use (train + held out).")
    valid_fraction: float = Field(default=0.25, description="Share of the newest snapshots held out (validation + test).")
    test_share: float = Field(
        default=0.5,
        description="Share of held-out customers whose rows form the test split (reported metrics, champion comparison); "
        "the others form the validation split (early stopping, hyperparameter search).",
    )
    min_history_days: int = Field(
        default=settings().min_history_days, description="Skip snapshots with fewer days of history before them (min_history_days)."
    )
    latest_snapshot: str | None = Field(
        default=None, description="Ignore feature partitions after this day (YYYY-MM-DD); default: all materialized."
    )


class LgbmConfig(dg.Config):
    learning_rate: float = Field(default=0.05, description="Boosting learning rate.")
    feature_fraction: float = Field(default=0.9, description="Share of features sampled per tree.")
    num_boost_round: int = Field(default=600, description="Upper bound on boosting rounds.")
    early_stopping_rounds: int = Field(default=40, description="Stop when validation log loss has not improved for this many rounds.")
    search_num_leaves: list[int] = Field(default=[7, 15, 31], description="Hyperparameter search: maximum leaves per tree.")
    search_min_data_in_leaf: list[int] = Field(default=[20, 100], description="Hyperparameter search: minimum rows in a leaf.")
    max_trials: int = Field(default=6, description="Upper bound on models trained by the search (grid points beyond it are skipped).")
    min_roc_auc: float = Field(
        default=settings().min_roc_auc, description="Fail the run when test ROC-AUC is below this floor (min_roc_auc)."
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
        default=settings().min_roc_auc, description="Fail the run when test ROC-AUC is below this floor (min_roc_auc)."
    )


@dg.asset(
    deps=[CUSTOMER_FEATURES, "feature_definitions"],
    group_name="training",
    kinds={"polars", "parquet"},
    owners=["team:data-science"],
)
def training_set(
    context: dg.AssetExecutionContext, config: TrainingSetConfig, lake: Lake, feature_store: FeatureStoreResource
) -> pl.DataFrame:
    """Labelled customer snapshots the models learn from and are judged on.

    Each row is one customer's features on a snapshot day plus `churned`: 1 when
    they bought nothing in the following `horizon_days`. Only snapshots whose
    horizon has fully passed are labelled. The newest snapshots are held out;
    train snapshots end a full horizon before them, so no training label peeks
    into the held-out period. Held-out customers are split in two by a stable
    hash: `valid` rows steer early stopping and the hyperparameter search,
    `test` rows give the metrics every model reports and the champion
    comparison, so the reported figures are not the ones the search optimized.
    Every labelled snapshot also serves the out-of-time backtest (see
    `lgbm_model`): `label_date` says when each label became known.

    Features come from the Feast feature service `churn_model` by a
    point-in-time join on (customer, snapshot timestamp): the same definition
    batch and online scoring read. Labels are derived from the lake's
    snapshots (who bought again), never from a feature column.
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
            f"training_set: not enough labelled snapshots (train {len(plan.train_dates)}, held out {len(plan.valid_dates)}). "
            f"customer_features partitions materialized: {len(available)} ({span}). A snapshot needs {config.min_history_days} days "
            f"of history before it and its partition + {config.horizon_days} days materialized; materialize more customer_features days."
        )
    labelled = [*plan.train_dates, *plan.gap_dates, *plan.valid_dates]
    needed = sorted({*labelled} | {d + dt.timedelta(days=config.horizon_days) for d in labelled})
    frames = lake.read_partitions(CUSTOMER_FEATURES, [d.isoformat() for d in needed], needed_by=" (needed by training_set)")
    # Only who was active when, and when they last bought: enough for labels.
    # The model inputs themselves come through Feast below.
    frames = frames.select("customer_id", "snapshot_date", "feature_timestamp", "last_tx_ts")
    by_day = split_by_day(frames, "snapshot_date")
    empty = frames.clear()
    parts = []
    for split, days in (("train", plan.train_dates), ("gap", plan.gap_dates), ("holdout", plan.valid_dates)):
        for day in days:
            later = by_day.get(day + dt.timedelta(days=config.horizon_days), empty)
            parts.append(churn_labels(by_day.get(day, empty), later, day).with_columns(pl.lit(split).alias("split")))
    labels = pl.concat(parts, how="vertical").rename({"feature_timestamp": "event_timestamp"})
    started = time.perf_counter()
    features = feature_store.historical(labels)
    feast_seconds = time.perf_counter() - started
    # The columns the feature service serves: the source's optional columns decide which exist.
    columns = model_features(features)
    frame = labels.join(features.select("customer_id", "event_timestamp", *columns), on=["customer_id", "event_timestamp"], how="left")
    missing = frame.filter(pl.any_horizontal(pl.col(columns).is_null())).height
    if missing or frame.height != labels.height:
        raise dg.Failure(
            f"training_set: Feast returned no features for {missing} of {labels.height} labelled snapshots (rows in: {labels.height}, "
            f"out: {frame.height}). The feature view must cover every snapshot: re-materialize feature_definitions and check its source path."
        )
    frame = frame.rename({"event_timestamp": "feature_timestamp"}).select(
        "customer_id",
        "snapshot_date",
        *columns,
        "feature_timestamp",
        "last_tx_ts",
        "churned",
        "split",
        # The day the label became known: the out-of-time backtest trains only on labels known by its cutoff.
        (pl.col("snapshot_date") + pl.duration(days=config.horizon_days)).alias("label_date"),
    )
    frame = frame.with_columns(
        pl.when(pl.col("split") == "holdout").then(split_holdout(frame, config.test_share)).otherwise(pl.col("split")).alias("split")
    )
    test = frame.filter(pl.col("split") == "test")
    if test["churned"].n_unique() < 2 or frame.filter(pl.col("split") == "valid").is_empty():
        raise dg.Failure(
            f"training_set: the held-out snapshots ({plan.valid_dates[0]}..{plan.valid_dates[-1]}) do not give a validation split and a "
            f"test split with both classes (test_share={config.test_share}); materialize more customer_features days or change test_share."
        )
    stats = frame.group_by("split").agg(pl.len().alias("rows"), pl.col("churned").mean().alias("churn_rate")).sort("split")
    context.add_output_metadata(
        {
            **frame_metadata(frame.drop("last_tx_ts")),
            "train_snapshots": dg.MetadataValue.json([d.isoformat() for d in plan.train_dates]),
            "holdout_snapshots": dg.MetadataValue.json([d.isoformat() for d in plan.valid_dates]),
            "backtest_only_snapshots": dg.MetadataValue.json([d.isoformat() for d in plan.gap_dates]),
            "backtest_cutoffs": dg.MetadataValue.json([f.cutoff.isoformat() for f in backtest_folds(frame)]),
            "split_stats": dg.MetadataValue.md(markdown_table(stats)),
            "churn_rate": float(frame["churned"].mean()),
            "horizon_days": config.horizon_days,
            "features_from": f"Feast feature service churn_model ({feature_store.offline_store} offline store, point-in-time join)",
            "feast_seconds": round(feast_seconds, 2),
        }
    )
    return frame


def data_window(training_set: pl.DataFrame) -> dict[str, Any]:
    """What a model was trained and evaluated on, for the registry."""
    window: dict[str, Any] = {}
    for split in ("train", "valid", "test"):
        part = training_set.filter(pl.col("split") == split)
        window[split] = {
            "first_snapshot": str(part["snapshot_date"].min()),
            "last_snapshot": str(part["snapshot_date"].max()),
            "rows": part.height,
        }
    return window


REFERENCE_ROWS = 5_000


def store_reference(training_set: pl.DataFrame, artifacts: ArtifactStore) -> Any:
    """A seeded sample of the train split's features: the drift reference of every model trained on it."""
    import io

    train = training_set.filter(pl.col("split") == "train").select(model_features(training_set))
    sample = train.sample(n=min(REFERENCE_ROWS, train.height), seed=11) if train.height else train
    buf = io.BytesIO()
    sample.write_parquet(buf, compression="zstd", statistics=False)
    return artifacts.put("references", buf.getvalue(), ".parquet")


def _store_and_register(
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


def _splits(training_set: pl.DataFrame) -> tuple[pl.DataFrame, pl.DataFrame, pl.DataFrame]:
    return tuple(training_set.filter(pl.col("split") == s) for s in ("train", "valid", "test"))  # type: ignore[return-value]


def backtest_folds(training_set: pl.DataFrame) -> list[Any]:
    """The out-of-time folds of a training set: the same for every model and baseline trained on it."""
    from lib.backtest import plan_backtest

    s = settings()
    days = training_set["snapshot_date"].unique().to_list()
    return plan_backtest(days, label_horizon(training_set), s.backtest_cutoffs, s.backtest_every_days)


def label_horizon(training_set: pl.DataFrame) -> int:
    """The label horizon a training set was built with: the days from a snapshot to the day its label became known."""
    if training_set.is_empty():
        return 0
    return int((training_set["label_date"] - training_set["snapshot_date"]).dt.total_days().max())


def _backtest(name: str, training_set: pl.DataFrame, scorer: Any) -> tuple[dict[str, float], dict[str, Any]]:
    """The headline: mean ROC-AUC and PR-AUC over the out-of-time cutoffs, and the per-cutoff table."""
    from lib.backtest import comparison_table, run_backtest

    result = run_backtest(name, training_set, backtest_folds(training_set), scorer)
    metadata: dict[str, Any] = {k: v for k, v in result.metrics().items()}
    metadata["backtest"] = dg.MetadataValue.md(
        markdown_table(comparison_table([result])) if result.folds else "_no cutoff with matured labels_"
    )
    return result.metrics(), metadata


def _evaluate(name: str, test: pl.DataFrame, scores: Any, floor: float) -> tuple[dict[str, float], dict[str, Any]]:
    """Test-split figures (held-out customers of the newest snapshots), the same for every model kind; fails under the floor."""
    from lib.evaluation import evaluate

    evaluation = evaluate(test["churned"].to_numpy(), scores, name, split="test")
    if why := evaluation.refusal(floor):
        raise dg.Failure(f"{name}: {why}")
    metrics = evaluation.named()
    metadata: dict[str, Any] = {k: float(v) for k, v in metrics.items() if k != "test_rows"}
    metadata["test_rows"] = evaluation.rows
    metadata.update({key: figure_markdown(fig, caption) for key, (caption, fig) in evaluation.figures.items()})
    return metrics, metadata


@dg.asset(
    group_name="training",
    kinds={"lightgbm"},
    owners=["team:data-science"],
    tags={"ml/compute": "cpu"},
)
def lgbm_model(
    context: dg.AssetExecutionContext, config: LgbmConfig, training_set: pl.DataFrame, artifacts: ArtifactStore, registry: ModelRegistry
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
    train, valid, test = _splits(training_set)
    grid = search_grid(config.search_num_leaves, config.search_min_data_in_leaf, config.max_trials)
    params = {"learning_rate": config.learning_rate, "feature_fraction": config.feature_fraction}
    model = train_lgbm(train, valid, params, config.num_boost_round, config.early_stopping_rounds, grid)
    from lib.training import load_booster

    scores = load_booster(model.model_text).predict(feature_matrix(test))
    metrics, evaluation = _evaluate("lgbm_model", test, scores, config.min_roc_auc)
    chosen = {k: model.params[k] for k in ("num_leaves", "min_data_in_leaf", "learning_rate", "feature_fraction") if k in model.params}

    def fold_model(fit: pl.DataFrame, valid: pl.DataFrame, scored: pl.DataFrame) -> Any:
        # The chosen parameters, retrained on what each cutoff knew.
        m = train_lgbm(fit, valid, params, config.num_boost_round, config.early_stopping_rounds, [chosen])
        return load_booster(m.model_text).predict(feature_matrix(scored))

    backtest, backtest_md = _backtest("lgbm_model", training_set, fold_model)
    metrics = {**backtest, **metrics}
    ref, version = _store_and_register(
        context,
        "lightgbm",
        "lgbm",
        model.model_text.encode(),
        ".txt",
        training_set,
        {**chosen, "best_iteration": model.best_iteration},
        metrics,
        artifacts,
        registry,
    )
    importance = _importance(model.model_text)
    context.add_output_metadata(
        {
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
    )
    return ModelRecord(
        model_version=version,
        kind="lightgbm",
        format="lightgbm-text",
        artifact=Artifact(**ref.as_dict()),
        features=model_features(training_set),
        metrics=metrics,
        details={"best_iteration": model.best_iteration, "params": model.params},
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
    context: dg.AssetExecutionContext, config: TorchConfig, training_set: pl.DataFrame, artifacts: ArtifactStore, registry: ModelRegistry
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
    from lib.torch_net import EpochLog, load_net, predict_proba, train_net

    train, valid, test = _splits(training_set)
    torch.set_num_threads(2)

    def log_epoch(e: EpochLog) -> None:
        context.log.info(
            f"torch_model epoch {e.epoch}: train loss {e.train_loss:.4f}, valid loss {e.valid_loss:.4f}, valid ROC-AUC {e.valid_auc:.4f} ({e.seconds:.2f}s)"
        )

    settings = config.train_config()
    net = train_net(
        feature_matrix(train), train["churned"].to_numpy(), feature_matrix(valid), valid["churned"].to_numpy(), settings, on_epoch=log_epoch
    )
    scores = predict_proba(load_net(net.state, net.architecture), feature_matrix(test))
    metrics, evaluation = _evaluate("torch_model", test, scores, config.min_roc_auc)

    def fold_model(fit: pl.DataFrame, valid: pl.DataFrame, scored: pl.DataFrame) -> Any:
        fold = train_net(feature_matrix(fit), fit["churned"].to_numpy(), feature_matrix(valid), valid["churned"].to_numpy(), settings)
        return predict_proba(load_net(fold.state, fold.architecture), feature_matrix(scored))

    backtest, backtest_md = _backtest("torch_model", training_set, fold_model)
    metrics = {**backtest, **metrics}
    params = {**net.architecture, **{k: getattr(settings, k) for k in ("learning_rate", "weight_decay", "batch_size", "seed")}}
    params["best_epoch"] = net.best_epoch
    ref, version = _store_and_register(context, "torch", "torch", net.state, ".pt", training_set, params, metrics, artifacts, registry)
    device_name = torch.cuda.get_device_name(0) if net.device == "cuda" else "cpu"
    context.add_output_metadata(
        {
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
    )
    return ModelRecord(
        model_version=version,
        kind="torch",
        format="torch-state-dict",
        artifact=Artifact(**ref.as_dict()),
        architecture=net.architecture,
        features=model_features(training_set),
        metrics=metrics,
        details={"device": net.device, "best_epoch": net.best_epoch},
    )


def _importance(model_text: str) -> dict[str, float]:
    from lib.training import load_booster

    booster = load_booster(model_text)
    gains = booster.feature_importance(importance_type="gain")
    return dict(sorted(zip(booster.feature_name(), map(float, gains), strict=True), key=lambda kv: -kv[1]))


def _importance_figure(importance: dict[str, float]) -> Any:
    from lib.evaluation import importance_figure

    return importance_figure(importance, "LightGBM feature importance")


@dg.asset(
    group_name="training",
    kinds={"scipy"},
    owners=["team:data-science"],
)
def baseline_model(
    context: dg.AssetExecutionContext, training_set: pl.DataFrame, artifacts: ArtifactStore, registry: ModelRegistry
) -> BaselineRecord:
    """The classical baselines every candidate must beat, judged out of time on the same cutoffs.

    `recency`: the longer since the last purchase, the likelier churn.
    `bgnbd`: the BG/NBD model (Fader, Hardie and Lee, 2005), fitted at each
    cutoff on the customers' (purchase days, last purchase, age) as of that day
    (no label is used, so fitting on the cutoff's own customers is fair) and
    scored as P(no purchase in the horizon). The promotion gate refuses a
    candidate whose backtest ROC-AUC does not beat the best of them by
    `baseline_margin`.

    BG/NBD fitted on the newest labelled snapshot is also registered as a
    model version (kind `bgnbd`, parameters as JSON): exported to ONNX like the
    others, it becomes champion when no learned model beats the baselines, so
    scoring always has the best model there is and never a worse one.
    """
    from lib.backtest import baseline_scorers, comparison_table, run_backtest
    from lib.baselines import bgnbd_inputs, fit_bgnbd

    folds = backtest_folds(training_set)
    horizon = label_horizon(training_set)
    results = [run_backtest(name, training_set, folds, scorer) for name, scorer in baseline_scorers(horizon).items()]
    scored = [r for r in results if r.folds]
    best = max(scored, key=lambda r: r.roc_auc) if scored else None
    fits = {}
    for fold in folds:
        cutoff = training_set.filter(pl.col("snapshot_date") == fold.cutoff)
        if cutoff.height:
            fits[fold.cutoff.isoformat()] = {k: round(v, 4) for k, v in fit_bgnbd(*bgnbd_inputs(cutoff)).as_dict().items()}
    import json

    from lib.baselines import bgnbd_matrix_scores

    features = list(model_features(training_set))
    newest = training_set.filter(pl.col("snapshot_date") == training_set["snapshot_date"].max())
    fitted = fit_bgnbd(*bgnbd_inputs(newest))
    _, _, test = _splits(training_set)
    bgnbd = next(r for r in results if r.name == "bgnbd")
    test_metrics, evaluation = _evaluate(
        "baseline_model (BG/NBD)", test, bgnbd_matrix_scores(fitted, features, horizon, feature_matrix(test, tuple(features))), 0.0
    )
    params = {**fitted.as_dict(), "horizon_days": horizon, "fitted_on": str(newest["snapshot_date"].max())}
    ref, version = _store_and_register(
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
    context.add_output_metadata(
        {
            "model_version": version,
            "bgnbd_parameters": dg.MetadataValue.json(params),
            **{f"bgnbd_{k}": v for k, v in evaluation.items() if k.startswith("test_")},
            **{f"{r.name}_backtest_roc_auc": r.roc_auc for r in scored},
            **{f"{r.name}_backtest_pr_auc": r.pr_auc for r in scored},
            "best_baseline": best.name if best else "none",
            "best_backtest_roc_auc": best.roc_auc if best else float("nan"),
            "backtest": dg.MetadataValue.md(markdown_table(comparison_table(results)) if scored else "_no cutoff with matured labels_"),
            "bgnbd_parameters_by_cutoff": dg.MetadataValue.json(fits),
            "horizon_days": horizon,
        }
    )
    return BaselineRecord(
        cutoffs=tuple(f.cutoff.isoformat() for f in folds),
        baselines={r.name: {**r.metrics(), "folds": r.folds} for r in results},
        best=best.name if best else None,
        best_backtest_roc_auc=best.roc_auc if best else None,
        # The BG/NBD model version, exported to ONNX by bgnbd_onnx like the learned models.
        model_version=version,
        kind="bgnbd",
        format="bgnbd-json",
        artifact=Artifact(**ref.as_dict()),
        features=features,
        architecture={"horizon_days": horizon},
        metrics={**bgnbd.metrics(), **test_metrics},
    )
