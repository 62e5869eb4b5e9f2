"""The label horizon is one fact that travels with the model: set it in one training run's config, and every consumer follows."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import dagster as dg
import numpy as np
import polars as pl
import pytest

from lib.datagen import GeneratorConfig, generate_transactions
from ml_assets_tests.conftest import resources_for

pytestmark = [pytest.mark.slow]

# The calendar starts at the built-in partitions_start (2024-07-01): ingestion covers it from its first day.
START, END = dt.date(2024, 7, 1), dt.date(2025, 3, 31)
HORIZON = 21  # not the default 30 nor anything in the settings
SCORED, MATURED = dt.date(2025, 3, 5), dt.date(2025, 3, 26)  # MATURED = SCORED + HORIZON


def test_a_training_run_with_its_own_horizon_yields_drift_maturity_descriptions_and_bgnbd_on_it(tmp_path: Path) -> None:
    from lib.baselines import bgnbd_from_dict, bgnbd_matrix_scores
    from lib.export import onnx_churn_probability, onnx_session
    from lib.settings import class_default
    from lib.training import feature_matrix
    from ml_assets.pipeline import INGEST_TO_FEATURES, SCORING, TRAINING, materialize_range, materialize_unpartitioned
    from resources import SqlWarehouse

    assert class_default("label_horizon_days") != HORIZON and (MATURED - SCORED).days == HORIZON
    assert class_default("partitions_start") == START
    url = f"sqlite:///{tmp_path / 'warehouse.sqlite'}"
    source = SqlWarehouse(url=url)
    source.create_table(replace=True)
    source.append(generate_transactions(GeneratorConfig(start=START, end=END, customers=1200, seed=3)))
    res = resources_for(tmp_path, url)
    training = {
        "training_set": {"config": {"horizon_days": HORIZON, "min_history_days": 60, "latest_snapshot": "2025-03-04"}},
        "lgbm_model": {"config": {"max_trials": 1, "min_roc_auc": 0.5}},
        "torch_model": {"config": {"max_epochs": 3, "min_roc_auc": 0.5}},
        # Whichever candidate wins, the champion carries the run's horizon.
        "champion_model": {"config": {"baseline_margin": 0.0}},
    }
    with dg.instance_for_test() as instance:
        assert materialize_range(INGEST_TO_FEATURES, START, END, instance, res).success
        assert materialize_unpartitioned(TRAINING, instance, {"ops": training}, res).success
        for day in (SCORED, MATURED):
            assert materialize_range(SCORING, day, day, instance, res).success

        registry, artifacts = res["registry"], res["artifacts"]
        champion = registry.champion()
        assert champion is not None and champion.horizon_days == HORIZON
        versions = {v.kind: v for v in registry.versions()}
        assert {v.horizon_days for v in versions.values()} == {HORIZON}

        def metadata(key: str, day: dt.date) -> dict[str, object]:
            (record,) = instance.fetch_materializations(
                dg.AssetRecordsFilter(asset_key=dg.AssetKey(key), asset_partitions=[day.isoformat()]), limit=1
            ).records
            return {k: v.value for k, v in record.asset_materialization.metadata.items()}

        # Drift maturity: the scores of SCORED are judged on MATURED, a horizon of the champion later.
        drift = metadata("drift_report", MATURED)
        assert drift["label_horizon_days"] == HORIZON and drift["matured_scores_day"] == SCORED.isoformat()
        assert drift["performance_status"] == "evaluated" and drift["matured_rows"] > 0
        assert metadata("drift_report", SCORED)["performance_status"].startswith(f"no scores on {SCORED - dt.timedelta(days=HORIZON)}")
        # The score's description names the model's horizon.
        scores = metadata("batch_predictions", MATURED)
        described = {c.name: c.description for c in scores["dagster/column_schema"].columns}
        assert f"next {HORIZON} days" in described["churn_probability"] and scores["label_horizon_days"] == HORIZON

        # The exported BG/NBD graph scores P(no purchase in HORIZON days), and differs from the default horizon's score.
        bgnbd = versions["bgnbd"]
        params = json.loads(artifacts.get(bgnbd.artifact_uri, bgnbd.artifact_sha256))
        assert "horizon_days" not in params  # one fact: the registry version's, not a copy in the artifact
        frame = res["lake"].read_single(dg.AssetKey("training_set")).filter(pl.col("split") == "test")
        x = feature_matrix(frame, tuple(bgnbd.features))
        onnx = onnx_churn_probability(onnx_session(artifacts.get(bgnbd.onnx_uri, bgnbd.onnx_sha256)), x)
        model = bgnbd_from_dict(params)
        assert np.max(np.abs(onnx - bgnbd_matrix_scores(model, bgnbd.features, HORIZON, x))) <= 1e-6
        assert np.max(np.abs(onnx - bgnbd_matrix_scores(model, bgnbd.features, class_default("label_horizon_days"), x))) > 1e-3
        assert (frame["label_date"] - frame["snapshot_date"]).dt.total_days().unique().to_list() == [HORIZON]
