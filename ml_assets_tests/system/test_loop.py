"""The closed loop, hermetic: drift found in real reports, one sensor evaluation, the requested retraining run, the gate's verdict.

It runs on a private copy of the shared e2e pipeline run (its data and its Dagster instance), so the loop starts
from the same reports and champion without building the whole pipeline a second time.
"""

from __future__ import annotations

from pathlib import Path

import dagster as dg
import pytest

from ml_assets_tests.conftest import E2E_DRIFT_DAYS, PipelineRun, copy_pipeline_env, resources_for

pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("e2e")]


def test_drift_triggers_one_retraining_run_whose_champion_decision_is_recorded(e2e: PipelineRun, tmp_path: Path) -> None:
    from ml_assets.pipeline import run_drift_sensor_once

    env, data, home = copy_pipeline_env(e2e, tmp_path)
    resources = resources_for(data, env["CHURN_WAREHOUSE_URL"])
    with dg.DagsterInstance.from_config(str(home)) as instance:
        registry = resources["registry"]
        before = registry.champion().version
        versions_before = {v.version for v in registry.versions()}

        sensor, training = run_drift_sensor_once(instance, resources, log_level="ERROR")
        (request,) = sensor.run_requests
        # The first day whose report crossed the threshold, against the champion that scored it.
        assert request.tags["ml/drift_partition"] == E2E_DRIFT_DAYS[0].isoformat()
        assert request.tags["ml/drift_champion"] == before
        assert training is not None and training.success
        launched = instance.get_run_by_id(training.run_id)
        assert launched.tags["ml/trigger"] == "drift" and launched.tags["dagster/run_key"] == request.run_key

        # Both models retrained on the newer snapshots, registered by that run, parity-checked.
        new = [v for v in registry.versions() if v.run_id == training.run_id]
        assert {v.kind for v in new} == {"lightgbm", "torch", "stack", "bgnbd"} and all(v.parity_passed for v in new)
        assert {v.version for v in new}.isdisjoint(versions_before)
        decision = next(e for e in registry.events() if e["action"] in ("promoted", "kept") and e["run_id"] == training.run_id)
        md = {
            k: v.value
            for k, v in next(
                m for m in training.get_asset_materialization_events() if m.asset_key == dg.AssetKey("champion_model")
            ).materialization.metadata.items()
        }
        assert md["decision"] == decision["action"] and md["reason"] == decision["reason"]
        assert md["previous_champion"] == before
        after = registry.champion().version
        assert (after != before) == (decision["action"] == "promoted")

        # The same drift records, evaluated again (say, by a daemon that lost its cursor): no second run.
        again, nothing = run_drift_sensor_once(instance, resources)
        assert not again.run_requests and nothing is None
        assert "cooldown" in again.skip_reason.skip_message or "none above" in again.skip_reason.skip_message
