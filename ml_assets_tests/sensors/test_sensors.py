"""The drift sensor and the failure sensor, evaluated for real against temporary instances."""

from __future__ import annotations

import http.server
import json
import tempfile
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path

import dagster as dg
import pytest

from ml_assets_tests.conftest import register_version
from resources import FailureNotifier, ModelRegistry, RetrainPolicy
from sensors.drift import drift_retraining_sensor

CHAMPION = "lgbm-00000000c0de"


# Alerts of the ticks go to a folder of their own (no webhook): the dedupe record is what a second tick would meet.
NOTIFIER = FailureNotifier(record_root=tempfile.mkdtemp(prefix="churn-sensor-alerts-"))


@pytest.fixture
def registry(tmp_path: Path) -> ModelRegistry:
    registry = ModelRegistry(url=f"sqlite:///{tmp_path / 'registry.sqlite'}")
    register_version(registry, CHAMPION, roc_auc=0.95)
    registry.promote(CHAMPION, actor="test", reason="setup", run_id="r0")
    return registry


@pytest.fixture
def instance() -> Iterator[dg.DagsterInstance]:
    with dg.instance_for_test() as instance:
        yield instance


def _report(instance: dg.DagsterInstance, day: str, drift_share: float, version: str = CHAMPION, **extra: object) -> None:
    instance.report_runless_asset_event(
        dg.AssetMaterialization(
            asset_key="drift_report",
            partition=day,
            metadata={
                "drift_share": drift_share,
                # The verdict as drift_report gives it with the default drift_share_threshold.
                "dataset_drift": drift_share >= 0.25,
                "prediction_drift": False,
                "model_version": version,
                **extra,
            },
        )
    )


def _tick(
    instance: dg.DagsterInstance, registry: ModelRegistry, cursor: str | None = None, cooldown_hours: float = 24.0
) -> dg.SensorResult:
    context = dg.build_sensor_context(
        instance=instance,
        cursor=cursor,
        resources={"policy": RetrainPolicy(cooldown_hours=cooldown_hours), "registry": registry, "notifier": NOTIFIER},
    )
    return drift_retraining_sensor(context)


def _launch(instance: dg.DagsterInstance, tags: dict[str, str], status: dg.DagsterRunStatus = dg.DagsterRunStatus.SUCCESS) -> None:
    """A run of training_job as the daemon would have created it from a request."""
    instance.add_run(dg.DagsterRun(job_name="training_job", run_id=str(uuid.uuid4()), tags=tags, status=status))


def test_no_drift_no_run(instance: dg.DagsterInstance, registry: ModelRegistry) -> None:
    for day in ("2025-06-01", "2025-06-02"):
        _report(instance, day, 0.1)
    result = _tick(instance, registry)
    assert not result.run_requests
    assert "none above the threshold" in result.skip_reason.skip_message
    assert json.loads(result.cursor)["after_storage_id"] > 0


def test_drift_requests_exactly_one_training_run(instance: dg.DagsterInstance, registry: ModelRegistry) -> None:
    _report(instance, "2025-06-10", 0.2)
    for day in ("2025-06-12", "2025-06-13", "2025-06-14"):
        _report(instance, day, 0.7)
    result = _tick(instance, registry)
    (request,) = result.run_requests
    assert request.run_key == f"drift:{CHAMPION}:2025-06-12"
    assert request.tags["ml/trigger"] == "drift" and request.tags["ml/drift_partition"] == "2025-06-12"
    assert request.tags["ml/drifted_days_in_tick"] == "3"
    assert request.job_name in (None, "training_job")


def test_a_second_tick_on_the_same_event_requests_nothing(instance: dg.DagsterInstance, registry: ModelRegistry) -> None:
    _report(instance, "2025-06-12", 0.7)
    first = _tick(instance, registry)
    assert len(first.run_requests) == 1
    # The cursor Dagster stored comes back on the next tick: nothing new to read.
    again = _tick(instance, registry, cursor=first.cursor)
    assert not again.run_requests and again.skip_reason.skip_message == "no new drift reports"


def test_cursor_lost_but_the_request_ran_cooldown_holds(instance: dg.DagsterInstance, registry: ModelRegistry) -> None:
    _report(instance, "2025-06-12", 0.7)
    request = _tick(instance, registry).run_requests[0]
    _launch(instance, {**request.tags, "dagster/run_key": request.run_key})
    # A restarted daemon without the cursor reads the same records again.
    result = _tick(instance, registry, cursor=None)
    assert not result.run_requests and "cooldown" in result.skip_reason.skip_message


def test_no_request_while_a_training_run_is_queued_or_running(instance: dg.DagsterInstance, registry: ModelRegistry) -> None:
    # (A QUEUED run needs a code-location origin to be created by hand; it goes through the same status filter.)
    for status in (dg.DagsterRunStatus.NOT_STARTED, dg.DagsterRunStatus.STARTING, dg.DagsterRunStatus.STARTED):
        with dg.instance_for_test() as fresh:
            _launch(fresh, {"ml/trigger": "schedule"}, status=status)
            _report(fresh, "2025-06-12", 0.7)
            result = _tick(fresh, registry, cooldown_hours=0)
            assert not result.run_requests, status
            assert "already queued or running" in result.skip_reason.skip_message


def test_cooldown_respected_then_released(instance: dg.DagsterInstance, registry: ModelRegistry) -> None:
    _launch(instance, {"ml/trigger": "drift"})
    _report(instance, "2025-06-20", 0.8)
    held = _tick(instance, registry, cooldown_hours=24)
    assert not held.run_requests and "24 h cooldown" in held.skip_reason.skip_message
    # Past the cooldown (here: none), a new drift report is a new event.
    _report(instance, "2025-06-21", 0.8)
    released = _tick(instance, registry, cursor=held.cursor, cooldown_hours=0)
    assert [r.run_key for r in released.run_requests] == [f"drift:{CHAMPION}:2025-06-21"]


def test_reports_about_an_earlier_champion_are_ignored(instance: dg.DagsterInstance, registry: ModelRegistry) -> None:
    _report(instance, "2025-06-12", 0.9, version="lgbm-0000000old00")
    result = _tick(instance, registry)
    assert not result.run_requests


def test_performance_and_prediction_drift_are_events_too() -> None:
    policy = RetrainPolicy()
    assert policy.is_event({"drift_share": 0.0, "performance_drift": True})
    assert policy.is_event({"drift_share": 0.0, "prediction_drift": True})
    assert not RetrainPolicy(prediction_drift_triggers=False).is_event({"drift_share": 0.0, "prediction_drift": True})
    # The report's verdict decides (drift_report owns drift_share_threshold); a share without a verdict
    # (the reference's windows still filling) is not an event.
    assert policy.is_event({"drift_share": 0.25, "dataset_drift": True})
    assert not policy.is_event({"drift_share": 0.9, "dataset_drift": False})


def test_the_same_cause_does_not_ask_again_after_a_retraining_that_kept_the_champion(
    instance: dg.DagsterInstance, registry: ModelRegistry
) -> None:
    _report(instance, "2025-06-12", 0.4, drifted_columns=["spend_30d", "spend_7d"])
    first = _tick(instance, registry, cooldown_hours=0)
    (request,) = first.run_requests
    assert request.tags["ml/drifted_columns"] == "spend_30d,spend_7d"
    _launch(instance, {**request.tags, "dagster/run_key": request.run_key})  # ran; the champion stayed
    # The next days show the same cause (a subset of those columns, about the same share): no new request.
    _report(instance, "2025-06-13", 0.45, drifted_columns=["spend_30d"])
    same = _tick(instance, registry, cursor=first.cursor, cooldown_hours=0)
    assert not same.run_requests and "already answered" in same.skip_reason.skip_message
    # A feature that had not drifted then is a material change: retrain again.
    _report(instance, "2025-06-14", 0.45, drifted_columns=["spend_30d", "mobile_share"])
    new = _tick(instance, registry, cursor=same.cursor, cooldown_hours=0)
    assert [r.tags["ml/drift_partition"] for r in new.run_requests] == ["2025-06-14"]


class _Receiver(http.server.BaseHTTPRequestHandler):
    bodies: list[dict] = []

    def do_POST(self) -> None:  # noqa: N802 (http.server's name)
        self.bodies.append(json.loads(self.rfile.read(int(self.headers["Content-Length"]))))
        self.send_response(204)
        self.end_headers()

    def log_message(self, *args: object) -> None:
        pass


def test_a_failed_run_is_recorded_and_posted_to_the_webhook(tmp_path: Path) -> None:
    from sensors.drift import pipeline_failure_sensor

    server = http.server.HTTPServer(("127.0.0.1", 0), _Receiver)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{server.server_port}/hook?token=s3cret"

    @dg.asset
    def broken() -> None:
        raise RuntimeError("source database went away")

    try:
        with dg.instance_for_test() as instance:
            result = dg.materialize([broken], instance=instance, raise_on_error=False, tags={"ml/trigger": "schedule"})
            assert not result.success
            run = instance.get_run_by_id(result.run_id)
            failure_event = next(e for e in result.all_events if e.event_type_value == "PIPELINE_FAILURE")
            notifier = FailureNotifier(record_root=str(tmp_path), webhook_url=url)
            context = dg.build_run_status_sensor_context(
                sensor_name="pipeline_failure_sensor",
                dagster_instance=instance,
                dagster_run=run,
                dagster_event=failure_event,
                resources={"notifier": notifier},
            ).for_run_failure()
            pipeline_failure_sensor(context)
        record = json.loads((tmp_path / "run_failures" / f"{result.run_id}.json").read_text())
        assert record["run_id"] == result.run_id and record["tags"] == {"ml/trigger": "schedule"}
        assert "broken" in record["error"]
        (body,) = _Receiver.bodies
        assert body["run_id"] == result.run_id and "failed" in body["text"]
        # Off by default, and an unreachable hook is reported without its URL (it holds a token).
        assert FailureNotifier(record_root=str(tmp_path)).post(record) == "off"
        unreachable = FailureNotifier(
            record_root=str(tmp_path), webhook_url="http://127.0.0.1:9/hook?token=s3cret", timeout_seconds=1
        ).post(record)
        assert unreachable.startswith("failed") and "s3cret" not in unreachable
    finally:
        server.shutdown()


def test_matured_scores_are_judged_against_the_scoring_models_test_figures(tmp_path: Path, registry: ModelRegistry) -> None:
    import datetime as dt

    import polars as pl

    from ml_assets.assets.monitoring import DriftConfig, matured_performance
    from resources import Lake

    lake = Lake(root=str(tmp_path / "lake"))
    scored_day, today = dt.date(2025, 5, 18), dt.date(2025, 6, 17)
    config = DriftConfig()
    horizon = (today - scored_day).days
    assert "no scores" in matured_performance(today, pl.DataFrame(), horizon, config.max_roc_auc_drop, lake, registry)["performance_status"]
    after_cutoff = dt.datetime(2025, 6, 1)  # bought within the horizon: did not churn
    buyers = pl.DataFrame({"customer_id": ["C2", "C4"], "last_tx_ts": [after_cutoff, after_cutoff]})
    for probabilities, drifted in (([0.9, 0.1, 0.8, 0.2], False), ([0.1, 0.9, 0.2, 0.8], True)):
        scores = pl.DataFrame(
            {
                "customer_id": ["C1", "C2", "C3", "C4"],
                "snapshot_date": [scored_day] * 4,
                "churn_probability": probabilities,
                "model_version": [CHAMPION] * 4,
            }
        )
        lake.write_parquet(lake.path_for(dg.AssetKey("batch_predictions"), scored_day.isoformat(), ".parquet"), scores)
        md = matured_performance(today, buyers, horizon, config.max_roc_auc_drop, lake, registry)
        # C1 and C3 bought nothing after the 2025-05-18 cutoff: they churned.
        assert md["matured_roc_auc"] == (0.0 if drifted else 1.0) and md["matured_churn_rate"] == 0.5
        assert md["scoring_model_backtest_roc_auc"] == 0.95 and md["performance_drift"] is drifted
        assert RetrainPolicy().is_event({"drift_share": 0.0, **md}) is drifted
        # The business view of that day's list: the top half (budget 0.5) by score, their spend from that day's features.
        spend = pl.DataFrame(
            {"customer_id": ["C1", "C2", "C3", "C4"], "snapshot_date": [scored_day] * 4, "spend_90d": [10.0, 20.0, 30.0, 40.0]}
        )
        lake.write_parquet(lake.path_for(dg.AssetKey("customer_features"), scored_day.isoformat(), ".parquet"), spend)
        md = matured_performance(today, buyers, horizon, config.max_roc_auc_drop, lake, registry, budget=0.5)
        caught = 0.0 if drifted else 1.0  # the list is C1 and C3 (both churned) or C2 and C4 (neither)
        assert md["matured_precision_at_budget"] == caught and md["matured_recall_at_budget"] == caught
        assert md["matured_lift_at_budget"] == caught * 2 and md["matured_revenue_of_churners_caught"] == caught * 40.0
        assert "gains" in md["matured_gains_and_lift"].value
