"""The retrain decision as a pure function: which drift records are events, and when one becomes a request."""

from __future__ import annotations

import datetime as dt

from lib.retraining import DriftRecord, LastRequest, is_event, retrain_decision

NOW = dt.datetime(2025, 6, 20, 12, 0, tzinfo=dt.UTC)
CHAMPION = "lgbm-000000000001"


def _record(day: str, share: float, drift: bool, version: str = CHAMPION, **extra: object) -> DriftRecord:
    return DriftRecord(day, {"drift_share": share, "dataset_drift": drift, "model_version": version, **extra})


def test_the_reports_verdict_is_the_event_not_the_share() -> None:
    assert is_event({"drift_share": 0.3, "dataset_drift": True})
    # Warming up: a share above any threshold but no verdict is not an event.
    assert not is_event({"drift_share": 0.9, "dataset_drift": False})
    assert is_event({"prediction_drift": True}) and not is_event({"prediction_drift": True}, prediction_drift_triggers=False)
    assert is_event({"performance_drift": True}, prediction_drift_triggers=False)


def test_no_event_no_request_and_the_reason_counts_the_records() -> None:
    decision = retrain_decision([_record("2025-06-01", 0.1, False)] * 3, CHAMPION, None, [], NOW, 24)
    assert not decision.requested and decision.reason == "3 new drift reports, none above the threshold"


def test_the_first_event_against_the_champion_is_requested_with_its_cause() -> None:
    records = [
        _record("2025-06-10", 0.9, True, version="lgbm-0000000old00"),  # an earlier champion's report: ignored
        _record("2025-06-12", 0.5, True, drifted_columns=["spend_7d", "spend_30d"]),
        _record("2025-06-13", 0.6, True),
    ]
    decision = retrain_decision(records, CHAMPION, None, [], NOW, 24)
    assert decision.requested and decision.run_key == f"drift:{CHAMPION}:2025-06-12"
    assert decision.tags["ml/drifted_columns"] == "spend_30d,spend_7d" and decision.tags["ml/drift_share"] == "0.500"
    assert decision.tags["ml/drifted_days_in_tick"] == "2" and decision.tags["ml/trigger"] == "drift"


def test_in_flight_then_cooldown_then_released() -> None:
    records = [_record("2025-06-12", 0.5, True)]
    assert "already queued or running" in retrain_decision(records, CHAMPION, None, ["run-1"], NOW, 24).reason
    recent = LastRequest(NOW - dt.timedelta(hours=3), {})
    held = retrain_decision(records, CHAMPION, recent, [], NOW, 24)
    assert not held.requested and "24 h cooldown" in held.reason
    assert retrain_decision(records, CHAMPION, recent, [], NOW, 2).requested


def test_the_same_cause_after_a_retraining_that_kept_the_champion_is_not_asked_again() -> None:
    last = LastRequest(
        NOW - dt.timedelta(days=2), {"ml/drift_champion": CHAMPION, "ml/drifted_columns": "spend_30d,spend_7d", "ml/drift_share": "0.500"}
    )
    same = [_record("2025-06-19", 0.55, True, drifted_columns=["spend_7d"])]
    assert "already answered" in retrain_decision(same, CHAMPION, last, [], NOW, 24).reason
    # A new drifted feature, a share grown materially, or performance drift is a new cause.
    assert retrain_decision([_record("2025-06-19", 0.55, True, drifted_columns=["tx_count_7d"])], CHAMPION, last, [], NOW, 24).requested
    assert retrain_decision([_record("2025-06-19", 0.65, True, drifted_columns=["spend_7d"])], CHAMPION, last, [], NOW, 24).requested
    perf = [_record("2025-06-19", 0.0, False, performance_drift=True)]
    assert retrain_decision(perf, CHAMPION, last, [], NOW, 24).requested
    # A retraining answered for another champion says nothing about this one.
    other = LastRequest(last.created_at, {**last.tags, "ml/drift_champion": "torch-000000000002"})
    assert retrain_decision(same, CHAMPION, other, [], NOW, 24).requested
