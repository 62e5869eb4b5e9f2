"""One path per setting: each settings-decided config field listed once, filled from the settings by every job."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from lib.settings import Settings, class_default
from ml_assets.jobs import DAILY_OPS, INGEST_TO_FEATURES, SCORING, TRAINING, TRAINING_OPS, build_jobs
from ml_assets.run_config import SETTING_OF_FIELD, defaults, merged

REPO = Path(__file__).resolve().parents[2]


def test_every_listed_field_exists_on_its_ops_config_with_the_settings_built_in_default() -> None:
    from ml_assets.assets.features import FeaturesConfig
    from ml_assets.assets.inference import ScoringConfig
    from ml_assets.assets.models import LgbmConfig, TorchConfig
    from ml_assets.assets.monitoring import DriftConfig
    from ml_assets.assets.promotion import ChampionConfig
    from ml_assets.assets.rollout import RolloutConfig
    from ml_assets.assets.stacked import StackConfig
    from ml_assets.assets.training_set import TrainingSetConfig
    from ml_assets.assets.validation import ValidationConfig
    from ml_assets.governance.retention import RetentionConfig

    classes = {
        "validated_transactions": ValidationConfig,
        "customer_features": FeaturesConfig,
        "training_set": TrainingSetConfig,
        "lgbm_model": LgbmConfig,
        "torch_model": TorchConfig,
        "stacked_model": StackConfig,
        "champion_model": ChampionConfig,
        "drift_report": DriftConfig,
        "batch_predictions": ScoringConfig,
        "rollout_evaluation": RolloutConfig,
        "expire_retained_data": RetentionConfig,
    }
    assert set(classes) == set(SETTING_OF_FIELD)
    for op, fields in SETTING_OF_FIELD.items():
        for field, dotted in fields.items():
            assert classes[op].model_fields[field].default == class_default(dotted), (op, field)
            # The description names the setting, so the launchpad says where the value comes from.
            assert dotted.split(".")[-1] in (classes[op].model_fields[field].description or ""), (op, field)


def test_each_job_carries_the_loaded_values_for_exactly_its_ops() -> None:
    from ml_assets.definitions import ALL_ASSETS
    from ml_assets.pipeline import _selected_ops

    assert set(_selected_ops(INGEST_TO_FEATURES | SCORING, ALL_ASSETS)) & set(SETTING_OF_FIELD) == set(DAILY_OPS)
    assert set(_selected_ops(TRAINING, ALL_ASSETS)) & set(SETTING_OF_FIELD) == set(TRAINING_OPS)
    mine = Settings.model_validate(
        {"label_horizon_days": 90, "min_history_days": 120, "drift_share_threshold": 0.4, "deployment": {"retention_days": 400}}
    )
    jobs = build_jobs(mine)
    training = jobs.training.config if isinstance(jobs.training.config, dict) else {}
    assert training["ops"]["training_set"]["config"]["horizon_days"] == 90
    assert training["ops"]["training_set"]["config"]["min_history_days"] == 120
    from ml_assets.definitions import build_definitions

    resolved = build_definitions(mine).resolve_job_def("daily_pipeline_job")
    daily = resolved.partitioned_config.get_run_config_for_partition_key("2024-08-01")
    assert daily["ops"]["drift_report"]["config"]["drift_share_threshold"] == 0.4
    assert jobs.retention.run_config["ops"]["expire_retained_data"]["config"]["retention_days"] == 400


def test_a_runs_own_value_wins_over_the_defaults_key_by_key() -> None:
    base = defaults(Settings(), ["training_set"])
    over = merged(base, {"ops": {"training_set": {"config": {"horizon_days": 21}}}})
    assert over["ops"]["training_set"]["config"] == {**base["ops"]["training_set"]["config"], "horizon_days": 21}
    assert base["ops"]["training_set"]["config"]["horizon_days"] == class_default("label_horizon_days")


@pytest.mark.parametrize("folder", ["ml_assets", "resources", "sensors"])
def test_no_settings_read_at_import_or_in_an_asset_body(folder: str) -> None:
    """settings() is called only by the entry points (the definitions, the CLI, the in-process pipeline) and for the two
    structural facts (calendar, GPU placement)."""
    allowed = {"ml_assets/definitions.py", "ml_assets/partitions.py", "ml_assets/k8s.py", "ml_assets/pipeline.py"}
    calls = []
    for path in sorted((REPO / folder).rglob("*.py")):
        rel = path.relative_to(REPO).as_posix()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "settings" and not node.args:
                calls.append(f"{rel}:{node.lineno}")
    assert [c for c in calls if c.split(":")[0] not in allowed and not c.startswith("ml_assets/cli/")] == []
