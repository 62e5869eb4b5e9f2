"""The stages of the graph, once, and the jobs made of them.

The demo, `churn run`, the drift sensor's in-process run and the tests
materialize these same selections (ml_assets/pipeline.py); the jobs are their
unions.
"""

from __future__ import annotations

from typing import NamedTuple

import dagster as dg

from lib.settings import Settings
from ml_assets.partitions import daily_partitions
from ml_assets.run_config import defaults

# Daily, per partition: the source to features, then online store, scoring and drift.
INGEST_TO_FEATURES = dg.AssetSelection.groups("ingest", "validation", "features")
SCORING = dg.AssetSelection.assets("online_features") | dg.AssetSelection.groups("inference", "monitoring")
# Unpartitioned: Feast definitions, training set, models, ONNX export with parity checks, champion.
TRAINING = dg.AssetSelection.groups("training", "export", "registry") | dg.AssetSelection.assets("feature_definitions")
# The ops of each job whose config a setting decides (ml_assets/run_config.py); tests check them against the selections.
DAILY_OPS = ("validated_transactions", "customer_features", "batch_predictions", "rollout_evaluation", "drift_report")
TRAINING_OPS = ("training_set", "lgbm_model", "torch_model", "stacked_model", "champion_model")

# With run monitoring on (dagster.yaml, Helm values) a run past this is canceled and its
# pool slots freed. One day takes about a minute at the demo size and a 30-day range at
# 10 M transactions a year about 7 minutes; training about 2 minutes on CPU at that size.
DAILY_MAX_RUNTIME_S = 4 * 3600
TRAINING_MAX_RUNTIME_S = 6 * 3600

DAILY_JOB, TRAINING_JOB, RETENTION_JOB = "daily_pipeline_job", "training_job", "retention_job"


class Jobs(NamedTuple):
    daily: dg.UnresolvedAssetJobDefinition
    training: dg.UnresolvedAssetJobDefinition
    retention: dg.JobDefinition


def build_jobs(settings: Settings) -> Jobs:
    """The jobs, each carrying the settings' values as its default run config (a launch may still override each)."""
    from ml_assets.governance.retention import retention_graph

    daily = dg.define_asset_job(
        DAILY_JOB,
        selection=INGEST_TO_FEATURES | SCORING,
        partitions_def=daily_partitions,
        description="Ingest, validate, build features, load them into the online store, score and report drift for one day.",
        tags={"dagster/max_runtime": str(DAILY_MAX_RUNTIME_S)},
        config=defaults(settings, DAILY_OPS),
    )
    training = dg.define_asset_job(
        TRAINING_JOB,
        selection=TRAINING,
        description="Apply the Feast definitions, rebuild the training set, train LightGBM and the PyTorch network, export both to ONNX, "
        "check ONNX parity and decide the champion.",
        tags={"ml/run_kind": "training", "dagster/max_runtime": str(TRAINING_MAX_RUNTIME_S)},
        config=defaults(settings, TRAINING_OPS),
    )
    retention = retention_graph.to_job(
        name=RETENTION_JOB,
        description="Daily retention: transaction partitions and prediction records past their retention (docs/security.md).",
        config=defaults(settings, ["expire_retained_data"]),
    )
    return Jobs(daily, training, retention)
