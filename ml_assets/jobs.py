"""The stages of the graph, once, and the jobs made of them.

The demo, `churn run`, the drift sensor's in-process run and the tests
materialize these same selections (ml_assets/pipeline.py); the jobs are their
unions.
"""

from __future__ import annotations

import dagster as dg

from ml_assets.partitions import daily_partitions

# Daily, per partition: the source to features, then online store, scoring and drift.
INGEST_TO_FEATURES = dg.AssetSelection.groups("ingest", "validation", "features")
SCORING = dg.AssetSelection.assets("online_features") | dg.AssetSelection.groups("inference", "monitoring")
# Unpartitioned: Feast definitions, training set, models, ONNX export with parity checks, champion.
TRAINING = dg.AssetSelection.groups("training", "export", "registry") | dg.AssetSelection.assets("feature_definitions")

# With run monitoring on (dagster.yaml, Helm values) a run past this is canceled and its
# pool slots freed. One day takes about a minute at the demo size and a 30-day range at
# 10 M transactions a year about 7 minutes; training about 2 minutes on CPU at that size.
DAILY_MAX_RUNTIME_S = 4 * 3600
TRAINING_MAX_RUNTIME_S = 6 * 3600

daily_pipeline_job = dg.define_asset_job(
    "daily_pipeline_job",
    selection=INGEST_TO_FEATURES | SCORING,
    partitions_def=daily_partitions,
    description="Ingest, validate, build features, load them into the online store, score and report drift for one day.",
    tags={"dagster/max_runtime": str(DAILY_MAX_RUNTIME_S)},
)

training_job = dg.define_asset_job(
    "training_job",
    selection=TRAINING,
    description="Apply the Feast definitions, rebuild the training set, train LightGBM and the PyTorch network, export both to ONNX, "
    "check ONNX parity and decide the champion.",
    tags={"ml/run_kind": "training", "dagster/max_runtime": str(TRAINING_MAX_RUNTIME_S)},
)
