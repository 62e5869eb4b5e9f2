"""Jobs: the daily scoring pipeline and the training pipeline."""

from __future__ import annotations

import dagster as dg

from ml_assets.partitions import daily_partitions

DAILY_GROUPS = ("ingest", "validation", "features", "inference", "monitoring")

daily_pipeline_job = dg.define_asset_job(
    "daily_pipeline_job",
    selection=dg.AssetSelection.groups(*DAILY_GROUPS) | dg.AssetSelection.assets("online_features"),
    partitions_def=daily_partitions,
    description="Ingest, validate, build features, load them into the online store, score and report drift for one day.",
)

training_job = dg.define_asset_job(
    "training_job",
    selection=dg.AssetSelection.groups("training", "export", "registry") | dg.AssetSelection.assets("feature_definitions"),
    description="Apply the Feast definitions, rebuild the training set, train LightGBM and the PyTorch network, export both to ONNX, "
    "check ONNX parity and decide the champion.",
    tags={"ml/run_kind": "training"},
)
