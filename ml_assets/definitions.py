"""The code location: every asset, check, job, schedule and resource of the churn pipeline.

Loading this module must stay fast: the ML libraries (torch, lightgbm, onnx,
onnxruntime, evidently, ...) are imported inside the functions that use them.
"""

from __future__ import annotations

import dagster as dg

from lib.settings import Settings, settings
from ml_assets.assets.baselines import baseline_model
from ml_assets.assets.export import (
    bgnbd_onnx,
    bgnbd_onnx_parity,
    lgbm_onnx,
    lgbm_onnx_parity,
    stacked_onnx,
    stacked_onnx_parity,
    torch_onnx,
    torch_onnx_parity,
)
from ml_assets.assets.feature_store import feature_definitions, online_features
from ml_assets.assets.features import customer_features
from ml_assets.assets.inference import batch_predictions
from ml_assets.assets.ingest import raw_transactions, unplaceable_transactions
from ml_assets.assets.models import lgbm_model, torch_model
from ml_assets.assets.monitoring import drift_report
from ml_assets.assets.promotion import champion_model
from ml_assets.assets.rollout import rollout_evaluation
from ml_assets.assets.stacked import stacked_model
from ml_assets.assets.training_set import training_set
from ml_assets.assets.validation import validated_transactions
from ml_assets.jobs import build_jobs
from resources import build_resources
from sensors import build_schedules, drift_retraining_sensor, pipeline_failure_sensor

ALL_ASSETS = [
    unplaceable_transactions,
    raw_transactions,
    validated_transactions,
    customer_features,
    feature_definitions,
    online_features,
    training_set,
    baseline_model,
    lgbm_model,
    torch_model,
    stacked_model,
    lgbm_onnx,
    torch_onnx,
    stacked_onnx,
    bgnbd_onnx,
    champion_model,
    batch_predictions,
    rollout_evaluation,
    drift_report,
]
ALL_CHECKS = [lgbm_onnx_parity, torch_onnx_parity, stacked_onnx_parity, bgnbd_onnx_parity]


def build_executor(settings: Settings) -> dg.ExecutorDefinition:
    """`deployment.mode` (`CHURN_DEPLOYMENT`) `local` (default): every step in the run's process. `kubernetes`: one pod per step.

    Locally the ML steps already use both cores, and a process per step would
    pay the heavy imports (lightgbm, GX, evidently) again in every step.
    Measured for one day of the daily job: 7.1 s in process, 42.4 s with a
    process per step (benchmarks/bench_steps.py). On Kubernetes each step gets
    its own pod: the base config below for all, GPU placement from the
    `torch_model` op tags (ml_assets/k8s.py).
    """
    mode = settings.deployment.mode
    if mode == "local":
        return dg.in_process_executor
    if mode == "kubernetes":
        # Imported only here: a local load must not pay for the kubernetes client.
        from dagster_k8s import k8s_job_executor

        from ml_assets.k8s import executor_config

        return k8s_job_executor.configured(executor_config(settings.deployment.k8s), name="churn_k8s_job_executor")
    raise ValueError(f"deployment.mode must be local or kubernetes, not {mode!r}")


def build_definitions(settings: Settings) -> dg.Definitions:
    """The code location for these settings: every setting reaches it here, once (jobs' run config, resources, executor)."""
    jobs = build_jobs(settings)
    return dg.Definitions(
        assets=ALL_ASSETS,
        asset_checks=ALL_CHECKS,
        executor=build_executor(settings),
        jobs=list(jobs),
        schedules=build_schedules(jobs, settings),
        sensors=[drift_retraining_sensor, pipeline_failure_sensor],
        resources=build_resources(settings),
    )


# The settings are read once per process (the partition calendar reads the same cached object).
defs = build_definitions(settings())
