"""The code location loads fast, exposes the documented graph, and every asset is described."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import dagster as dg

from ml_assets.definitions import defs

EXPECTED_DEPS = {
    "unplaceable_transactions": set(),
    "raw_transactions": set(),
    "validated_transactions": {"raw_transactions"},
    "quarantined_transactions": {"raw_transactions"},
    "customer_features": {"validated_transactions"},
    "feature_definitions": {"customer_features"},
    "online_features": {"customer_features", "feature_definitions"},
    "training_set": {"customer_features", "feature_definitions"},
    "baseline_model": {"training_set"},
    "lgbm_model": {"training_set", "baseline_model"},
    "torch_model": {"training_set", "baseline_model"},
    "stacked_model": {"training_set", "lgbm_model", "baseline_model"},
    "lgbm_onnx": {"lgbm_model"},
    "torch_onnx": {"torch_model"},
    "stacked_onnx": {"stacked_model"},
    "bgnbd_onnx": {"baseline_model"},
    "champion_model": {"lgbm_onnx", "torch_onnx", "stacked_onnx", "bgnbd_onnx", "baseline_model", "training_set"},
    "batch_predictions": {"customer_features", "champion_model", "online_features"},
    "shadow_scores": {"customer_features", "champion_model", "online_features"},
    "rollout_evaluation": {"shadow_scores", "customer_features", "champion_model"},
    "drift_report": {"customer_features", "batch_predictions", "champion_model"},
}
HEAVY = (
    "torch",
    "lightgbm",
    "feast",
    "great_expectations",
    "evidently",
    "onnx",
    "onnxruntime",
    "sklearn",
    "matplotlib",
    "pandas",
    "pyspark",
    "mlflow",
)


def test_graph_has_the_documented_assets_and_lineage() -> None:
    graph = defs.resolve_asset_graph()
    keys = {k.to_user_string() for k in graph.get_all_asset_keys()}
    assert keys == set(EXPECTED_DEPS)
    for key, deps in EXPECTED_DEPS.items():
        parents = {p.to_user_string() for p in graph.get(dg.AssetKey(key)).parent_keys}
        assert parents == deps, key


def test_every_asset_is_described_grouped_owned_and_kinded() -> None:
    graph = defs.resolve_asset_graph()
    for key in graph.get_all_asset_keys():
        node = graph.get(key)
        spec = node.to_asset_spec() if hasattr(node, "to_asset_spec") else None
        assert node.group_name and node.group_name != "default", key
        assert node.owners, key
        assert node.kinds, key
        description = spec.description if spec else None
        assert description and len(description) > 60, f"{key} needs a description an analyst can read"


def test_jobs_and_schedules_resolve() -> None:
    defs.resolve_all_job_defs()
    daily = defs.resolve_job_def("daily_pipeline_job")
    assert {k.to_user_string() for k in daily.asset_layer.executable_asset_keys} >= {
        "raw_transactions",
        "customer_features",
        "online_features",
        "batch_predictions",
        "drift_report",
    }
    training = defs.resolve_job_def("training_job")
    assert training.tags["ml/run_kind"] == "training"
    assert "feature_definitions" in {k.to_user_string() for k in training.asset_layer.executable_asset_keys}
    names = {s.name for s in defs.schedules}
    assert {"daily_pipeline_job_schedule", "weekly_training_schedule"} <= names


def test_the_three_stages_cover_the_graph_once_and_make_the_jobs() -> None:
    """One list of stages: every asset is in exactly one; the daily job is ingest + scoring, the training job training."""
    from ml_assets.pipeline import INGEST_TO_FEATURES, SCORING, TRAINING

    graph = defs.resolve_asset_graph()
    stages = {
        name: {k.to_user_string() for k in sel.resolve(graph)}
        for name, sel in (("ingest", INGEST_TO_FEATURES), ("scoring", SCORING), ("training", TRAINING))
    }
    # unplaceable_transactions is an AssetSpec that raw_transactions' runs report, not a step of its own.
    everything = {k.to_user_string() for k in graph.get_all_asset_keys() if graph.get(k).is_executable}
    assert "unplaceable_transactions" not in everything
    assert set().union(*stages.values()) == everything
    assert sum(len(keys) for keys in stages.values()) == len(everything)
    assert stages["ingest"] == {
        "raw_transactions",
        "validated_transactions",
        "quarantined_transactions",
        "customer_features",
    }
    assert stages["scoring"] == {"online_features", "batch_predictions", "shadow_scores", "rollout_evaluation", "drift_report"}
    daily = {k.to_user_string() for k in defs.resolve_job_def("daily_pipeline_job").asset_layer.executable_asset_keys}
    training = {k.to_user_string() for k in defs.resolve_job_def("training_job").asset_layer.executable_asset_keys}
    assert daily == stages["ingest"] | stages["scoring"] and training == stages["training"]


def test_onnx_parity_checks_block_promotion() -> None:
    graph = defs.resolve_asset_graph()
    checks = {k.name: k for k in graph.asset_check_keys}
    pairs = {"lgbm_onnx_parity": "lgbm_onnx", "torch_onnx_parity": "torch_onnx", "stacked_onnx_parity": "stacked_onnx"}
    pairs["bgnbd_onnx_parity"] = "bgnbd_onnx"
    assert set(pairs) <= set(checks)
    for name, asset in pairs.items():
        assert checks[name].asset_key == dg.AssetKey(asset)
        assert graph.get_check_spec(checks[name]).blocking, name


def test_training_serving_skew_check_blocks_scoring() -> None:
    graph = defs.resolve_asset_graph()
    checks = {k.name: k for k in graph.asset_check_keys}
    skew = checks["training_serving_skew"]
    assert skew.asset_key == dg.AssetKey("online_features")
    assert graph.get_check_spec(skew).blocking
    assert dg.AssetKey("online_features") in graph.get(dg.AssetKey("batch_predictions")).parent_keys


def test_only_the_torch_step_asks_for_a_gpu() -> None:
    graph = defs.resolve_asset_graph()
    for key in graph.get_all_asset_keys():
        node = graph.get(key)
        gpu = node.tags.get("ml/compute") == "gpu"
        assert gpu == (key == dg.AssetKey("torch_model")), key
    assert graph.get(dg.AssetKey("torch_model")).pools == {"gpu"}
    training = defs.resolve_job_def("training_job")
    assert {k.to_user_string() for k in training.asset_layer.executable_asset_keys} >= {
        "baseline_model",
        "lgbm_model",
        "torch_model",
        "lgbm_onnx",
        "torch_onnx",
        "stacked_model",
        "stacked_onnx",
        "champion_model",
    }


def test_loading_the_code_location_imports_no_ml_library() -> None:
    code = (
        "import json, sys, time; t = time.perf_counter(); import ml_assets.definitions as d; "
        "d.defs.resolve_all_job_defs(); "
        f"print(json.dumps({{'s': time.perf_counter() - t, 'heavy': [m for m in {HEAVY!r} if m in sys.modules]}}))"
    )
    out = subprocess.run([sys.executable, "-W", "ignore", "-c", code], capture_output=True, text=True, check=True, env={**os.environ})
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert result["heavy"] == []


def test_warehouse_url_from_the_environment_is_an_env_var(monkeypatch) -> None:
    from resources import build_resources

    monkeypatch.setenv("CHURN_WAREHOUSE_URL", "postgresql+psycopg://user:secret@db/prod")
    resources = build_resources()
    monkeypatch.setenv("CHURN_REGISTRY_URL", "postgresql+psycopg://user:secret@db/registry")
    resources = build_resources()
    # Resolved at run time, so the secret never lands in the run config or the UI.
    assert isinstance(resources["warehouse"].url, dg.EnvVar)
    assert isinstance(resources["registry"].url, dg.EnvVar)


def test_the_local_instance_monitors_runs_and_both_jobs_have_a_max_runtime(tmp_path) -> None:
    import shutil
    from pathlib import Path

    shutil.copy(Path(__file__).resolve().parents[2] / "dagster.yaml", tmp_path / "dagster.yaml")
    with dg.DagsterInstance.from_config(str(tmp_path)) as instance:
        assert instance.run_monitoring_enabled
        assert instance.run_monitoring_max_runtime_seconds == 12 * 3600  # runs without a tag
        assert instance.run_monitoring_settings["free_slots_after_run_end_seconds"] == 300
    for name in ("daily_pipeline_job", "training_job"):
        runtime = defs.resolve_job_def(name).tags.get("dagster/max_runtime")
        assert runtime and 3600 <= int(runtime) <= 12 * 3600, (name, runtime)


def test_the_run_tags_the_pipeline_spells_out_are_dagsters_own() -> None:
    """pipeline.py writes Dagster's backfill-range and sensor tags without importing its private module; they must stay equal."""
    from dagster._core.storage.tags import ASSET_PARTITION_RANGE_END_TAG, ASSET_PARTITION_RANGE_START_TAG, RUN_KEY_TAG, SENSOR_NAME_TAG

    from ml_assets import pipeline

    assert (pipeline.ASSET_PARTITION_RANGE_START_TAG, pipeline.ASSET_PARTITION_RANGE_END_TAG) == (
        ASSET_PARTITION_RANGE_START_TAG,
        ASSET_PARTITION_RANGE_END_TAG,
    )
    assert (pipeline.RUN_KEY_TAG, pipeline.SENSOR_NAME_TAG) == (RUN_KEY_TAG, SENSOR_NAME_TAG)


def test_no_private_dagster_import_in_production_code() -> None:
    import re
    from pathlib import Path

    repo = Path(__file__).resolve().parents[2]
    private = re.compile(r"^\s*(from|import) dagster\._", re.MULTILINE)
    found = [
        str(p.relative_to(repo))
        for d in ("lib", "ml_assets", "resources", "sensors")
        for p in (repo / d).rglob("*.py")
        if private.search(p.read_text())
    ]
    assert found == []
