"""The whole graph on generated data, materialized for real into temporary folders."""

from __future__ import annotations

import datetime as dt
import hashlib
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from ml_assets.lib.features import LOOKBACK_DAYS, cutoff_for
from ml_assets_tests.conftest import E2E_DRIFT_DAYS, E2E_END, E2E_QUIET_DAYS, E2E_START, PipelineRun

pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("e2e")]

ALL_DAYS = [E2E_START + dt.timedelta(days=i) for i in range((E2E_END - E2E_START).days + 1)]
ROC_AUC_FLOOR = 0.80
ONNX_TOLERANCE = 1e-4


def test_every_source_row_is_validated_or_quarantined(e2e: PipelineRun) -> None:
    raw = e2e.read("raw_transactions", ALL_DAYS)
    validated = e2e.read("validated_transactions", ALL_DAYS)
    quarantined = e2e.read("quarantined_transactions", ALL_DAYS)
    assert raw.height == e2e.transactions.height
    assert raw.height == validated.height + quarantined.height
    # Per day too, and no row in both outputs.
    for day in (ALL_DAYS[0], ALL_DAYS[100], ALL_DAYS[-1]):
        r = e2e.metadata("raw_transactions", day)["dagster/row_count"]
        v = e2e.metadata("validated_transactions", day)["dagster/row_count"]
        q = e2e.metadata("quarantined_transactions", day)["dagster/row_count"]
        assert r == v + q > 0
    assert set(validated["transaction_id"]).isdisjoint(set(quarantined["transaction_id"]))


def test_one_feature_row_per_active_customer(e2e: PipelineRun) -> None:
    tx = e2e.read("validated_transactions", ALL_DAYS)
    for day in (dt.date(2025, 1, 15), E2E_END):
        feats = e2e.read("customer_features", [day])
        cutoff = cutoff_for(day)
        active = tx.filter((pl.col("ts") < cutoff) & (pl.col("ts") >= cutoff - dt.timedelta(days=LOOKBACK_DAYS)))
        assert feats["customer_id"].is_unique().all()
        assert set(feats["customer_id"]) == set(active["customer_id"])
        # Recency is measured from the end of the day, so it is never negative.
        assert feats["recency_days"].min() >= 0


def test_model_beats_the_auc_floor_and_artifact_matches_its_checksum(e2e: PipelineRun) -> None:
    md = e2e.metadata("lgbm_model")
    assert md["roc_auc"] >= ROC_AUC_FLOOR, md
    assert 0 < md["pr_auc"] <= 1 and md["log_loss"] < 0.6
    data = Path(md["artifact_uri"]).read_bytes()
    assert hashlib.sha256(data).hexdigest() == md["sha256"]
    assert data.startswith(b"tree")  # LightGBM text format, not a pickle


def test_onnx_agrees_with_native_lightgbm(e2e: PipelineRun) -> None:
    import lightgbm as lgb

    from ml_assets.lib.export import onnx_churn_probability, onnx_session
    from ml_assets.lib.training import feature_matrix

    md = e2e.metadata("lgbm_onnx")
    assert md["parity_max_abs_diff"] <= ONNX_TOLERANCE
    # Independently of the asset's own check: score the validation rows both ways.
    model_md = e2e.metadata("lgbm_model")
    booster = lgb.Booster(model_str=Path(model_md["artifact_uri"]).read_text())
    valid = e2e.read("training_set").filter(pl.col("split") == "valid")
    x = feature_matrix(valid)
    native = booster.predict(x)
    onnx = onnx_churn_probability(onnx_session(Path(md["artifact_uri"]).read_bytes()), x)
    assert np.max(np.abs(native - onnx)) <= ONNX_TOLERANCE


def test_batch_predictions_score_every_active_customer(e2e: PipelineRun) -> None:
    version = e2e.metadata("lgbm_onnx")["model_version"]
    for day in (*E2E_QUIET_DAYS, *E2E_DRIFT_DAYS):
        preds = e2e.read("batch_predictions", [day])
        feats = e2e.read("customer_features", [day])
        assert preds.height == feats.height > 0
        assert set(preds["customer_id"]) == set(feats["customer_id"])
        assert preds["churn_probability"].is_between(0, 1).all()
        assert (preds["model_version"] == version).all()
        assert (preds["snapshot_date"] == day).all()


def test_drift_is_found_after_the_shift_and_not_before(e2e: PipelineRun) -> None:
    quiet = [e2e.metadata("drift_report", d) for d in E2E_QUIET_DAYS]
    drifted = [e2e.metadata("drift_report", d) for d in E2E_DRIFT_DAYS]
    for md in quiet:
        assert md["dataset_drift"] is False, md["drifted_columns"]
        assert md["drift_share"] < 0.2
    for md in drifted:
        assert md["dataset_drift"] is True
        assert {"spend_30d", "avg_basket", "mobile_share"} <= set(md["drifted_columns"])
        assert Path(md["report_path"]).read_bytes().lstrip().lower().startswith(b"<")
    assert min(m["prediction_drift_score"] for m in drifted) > max(m["prediction_drift_score"] for m in quiet)
    table = e2e.read("drift_report", list(E2E_DRIFT_DAYS))
    assert table.filter(pl.col("column") == "spend_30d")["drifted"].all()


def test_stage_runs_report_their_checks(e2e: PipelineRun) -> None:
    checks = e2e.results["ingest"].get_asset_check_evaluations()
    by_name = {c.check_name: c for c in checks}
    assert by_name["rows_conserved"].passed
    assert by_name["one_row_per_customer"].passed
