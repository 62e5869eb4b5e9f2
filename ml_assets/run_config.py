"""The one path a setting takes into a run: run-config defaults built once from the loaded settings.

Every `dg.Config` field that a setting decides is listed here with the
setting it comes from. The config classes hold the settings' *built-in*
defaults (`class_default`), so importing an asset module never reads the
settings file; the jobs (`ml_assets/jobs.py`), the schedules and the drift
sensor's requests carry `defaults(settings, ops)` as their run config, and
`ml_assets/pipeline.py` (the demo, `churn run`, the tests) passes the same.
A value given in a run's own config (launchpad, `training_run_config`) wins.

Two facts are structure, not run config, and are read from the same
settings object when the definitions load: the partition calendar
(`partitions_start`, ml_assets/partitions.py) and the Kubernetes placement of
the GPU step (`deployment.k8s`, ml_assets/k8s.py). Changing either changes
the graph's shape, so it needs a code-location reload, not a run.

Ad-hoc materialization from the asset graph in the UI launches Dagster's
implicit asset job, which knows no job config: it gets the built-in defaults.
Launch through `daily_pipeline_job` or `training_job` (their launchpad shows
your settings) when the settings file changes a value below.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from lib.settings import Settings, class_default, setting_value

# op name -> {config field: dotted setting}. tests/assets check that each field exists with the class default.
SETTING_OF_FIELD: dict[str, dict[str, str]] = {
    "validated_transactions": {"max_rejected_share": "max_rejected_share", "min_rejected_rows": "min_rejected_rows"},
    "customer_features": {"population_days": "population_days"},
    "training_set": {
        "horizon_days": "label_horizon_days",
        "min_history_days": "min_history_days",
        "backtest_cutoffs": "backtest_cutoffs",
        "backtest_every_days": "backtest_every_days",
    },
    "lgbm_model": {"min_roc_auc": "min_roc_auc"},
    "torch_model": {"min_roc_auc": "min_roc_auc"},
    "stacked_model": {"min_roc_auc": "min_roc_auc"},
    "champion_model": {"baseline_margin": "baseline_margin", "contact_budget": "rollout.contact_budget"},
    "batch_predictions": {
        "shadow": "rollout.shadow",
        "canary_share": "rollout.canary_share",
        "reasons": "rollout.reasons",
        "reasons_share": "rollout.reasons_share",
    },
    "rollout_evaluation": {
        "contact_budget": "rollout.contact_budget",
        "min_matured_days": "rollout.min_matured_days",
        "promote_margin": "rollout.promote_margin",
        "rollback_floor": "rollout.rollback_floor",
        "rollback_margin": "rollout.rollback_margin",
        "confidence": "rollout.confidence",
        "auto_promote": "rollout.auto_promote",
        "auto_rollback": "rollout.auto_rollback",
    },
    "drift_report": {
        "drift_share_threshold": "drift_share_threshold",
        "reference_lag_days": "drift_reference_lag_days",
        "contact_budget": "rollout.contact_budget",
    },
    "expire_retained_data": {
        "retention_days": "deployment.retention_days",
        "prediction_retention_days": "deployment.service.prediction_retention_days",
    },
}


def default_of(op: str, field: str) -> Any:
    """The built-in default of a config field that a setting decides (what the class holds before a job fills it)."""
    return class_default(SETTING_OF_FIELD[op][field])


def defaults(settings: Settings, ops: Iterable[str] | None = None) -> dict[str, Any]:
    """Run config with every settings-decided field of the given ops (default: all) set from ``settings``."""
    names = SETTING_OF_FIELD if ops is None else [o for o in ops if o in SETTING_OF_FIELD]
    return {
        "ops": {op: {"config": {field: setting_value(settings, dotted) for field, dotted in SETTING_OF_FIELD[op].items()}} for op in names}
    }


def merged(base: Mapping[str, Any], override: Mapping[str, Any] | None) -> dict[str, Any]:
    """``override`` laid over ``base``, key by key at every depth (a run's own values win)."""
    out = dict(base)
    for key, value in (override or {}).items():
        if isinstance(value, Mapping) and isinstance(out.get(key), Mapping):
            out[key] = merged(out[key], value)
        else:
            out[key] = value
    return out
