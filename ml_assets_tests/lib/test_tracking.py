"""What a training run logs to MLflow and how its aliases follow the registry: the rules, without a server."""

from __future__ import annotations

import math

from lib.tracking import MAX_PARAM_CHARS, alias_plan, numeric_metrics, parent_of, run_params, safe_uri, trial_params


def test_aliases_follow_the_registry_and_never_point_at_a_model_mlflow_does_not_hold() -> None:
    tracked = {"lgbm-a": "1", "torch-b": "2", "stack-c": "3"}
    # Nothing set yet: both aliases set.
    assert alias_plan("stack-c", ["lgbm-a"], tracked, {}) == [("set", "champion", "3"), ("set", "challenger", "1")]
    # Already right: nothing to do.
    assert alias_plan("stack-c", ["lgbm-a", "torch-b"], tracked, {"champion": "3", "challenger": "1"}) == []
    # A rollback to the challenger: the champion alias moves, the challenger follows the registry's new first challenger.
    assert alias_plan("lgbm-a", ["stack-c"], tracked, {"champion": "3", "challenger": "1"}) == [
        ("set", "champion", "1"),
        ("set", "challenger", "3"),
    ]
    # No challenger any more: its alias goes. A champion trained before tracking: its alias goes too (never a wrong one).
    assert alias_plan("old-z", [], tracked, {"champion": "3", "challenger": "1"}) == [
        ("delete", "champion", None),
        ("delete", "challenger", None),
    ]
    assert alias_plan(None, [], tracked, {}) == []


def test_two_steps_that_created_a_parent_at_once_agree_on_the_oldest() -> None:
    runs = [{"run_id": "b", "start_time": 5}, {"run_id": "a", "start_time": 5}, {"run_id": "c", "start_time": 3}]
    assert parent_of(runs) == "c"
    assert parent_of(runs[:2]) == "a"
    assert parent_of([]) is None


def test_credentials_never_leave_the_tracking_uri() -> None:
    assert safe_uri("https://alice:t0ken@mlflow.example.com:5443/base") == "https://mlflow.example.com:5443/base"
    assert safe_uri("http://127.0.0.1:5000") == "http://127.0.0.1:5000"
    assert "t0ken" not in safe_uri("https://t0ken@mlflow.example.com")


def test_params_are_flat_strings_within_mlflow_s_limit_and_metrics_finite_numbers() -> None:
    params = run_params({"data_window": {"train": {"rows": 120, "first_snapshot": "2025-01-05"}}, "long": "x" * 10_000, "none": None})
    assert params["data_window.train.rows"] == "120" and params["data_window.train.first_snapshot"] == "2025-01-05"
    assert len(params["long"]) == MAX_PARAM_CHARS and params["long"].endswith("(cut by MLflow)") and params["none"] == ""
    metrics = numeric_metrics({"test_roc_auc": 0.91, "rows": 12, "nan": math.nan, "flag": True, "text": "x", "bad key!": 1.0})
    assert metrics == {"test_roc_auc": 0.91, "rows": 12.0, "bad key_": 1.0}


def test_a_search_trial_logs_its_grid_point_as_params_and_its_validation_loss_as_the_metric() -> None:
    params, metrics = trial_params({"num_leaves": 15, "min_data_in_leaf": 20, "best_iteration": 87, "valid_log_loss": 0.4123})
    assert params == {"num_leaves": "15", "min_data_in_leaf": "20", "best_iteration": "87"}
    assert metrics == {"valid_log_loss": 0.4123}
