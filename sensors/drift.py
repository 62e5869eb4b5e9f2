"""Drift-driven retraining and failure reporting.

`drift_retraining_sensor` reads the drift verdicts that `drift_report` already
wrote into each partition's materialization metadata; it never loads data or
recomputes drift, so a tick is a few indexed queries.  State lives where it
survives restarts: the cursor (the last drift record read) is stored by
Dagster, and the cooldown and the in-flight check are derived from the runs
in the instance, so a second evaluation of the same records, a restarted
daemon or a run launched by hand cannot produce a second request.
"""

from __future__ import annotations

import datetime as dt
import json

import dagster as dg

from lib.retraining import TRIGGER_TAG, DriftRecord, LastRequest, retrain_decision
from ml_assets.jobs import TRAINING_JOB
from resources.alerts import FailureNotifier, RetrainPolicy
from resources.registry import ModelRegistry

DRIFT_REPORT = dg.AssetKey("drift_report")
RECORDS_PER_TICK = 1_000
ACTIVE = [dg.DagsterRunStatus.QUEUED, dg.DagsterRunStatus.NOT_STARTED, dg.DagsterRunStatus.STARTING, dg.DagsterRunStatus.STARTED]


def _cursor(raw: str | None) -> int | None:
    return json.loads(raw)["after_storage_id"] if raw else None


def _in_flight_training(instance: dg.DagsterInstance) -> list[str]:
    return [r.run_id for r in instance.get_runs(dg.RunsFilter(job_name=TRAINING_JOB, statuses=ACTIVE), limit=5)]


def _last_drift_request(instance: dg.DagsterInstance) -> LastRequest | None:
    runs = instance.get_run_records(dg.RunsFilter(tags={TRIGGER_TAG: "drift"}), limit=1, order_by="create_timestamp", ascending=False)
    return LastRequest(runs[0].create_timestamp.astimezone(dt.UTC), runs[0].dagster_run.tags) if runs else None


@dg.sensor(
    job_name=TRAINING_JOB,
    minimum_interval_seconds=300,
    default_status=dg.DefaultSensorStatus.RUNNING,
    description="Requests one retraining run (training set, both models, ONNX, parity checks, promotion) per drift event "
    "found in the drift reports of the current champion; respects a cooldown and never stacks runs.",
)
def drift_retraining_sensor(
    context: dg.SensorEvaluationContext, policy: RetrainPolicy, registry: ModelRegistry, notifier: FailureNotifier
) -> dg.SensorResult:
    after = _cursor(context.cursor)
    found = context.instance.fetch_materializations(
        dg.AssetRecordsFilter(asset_key=DRIFT_REPORT, after_storage_id=after), limit=RECORDS_PER_TICK, ascending=True
    ).records
    if not found:
        return dg.SensorResult(skip_reason=dg.SkipReason("no new drift reports"))
    cursor = json.dumps({"after_storage_id": found[-1].storage_id})
    records = [
        DriftRecord(r.partition_key, {k: v.value for k, v in r.asset_materialization.metadata.items()})
        for r in found
        if r.asset_materialization is not None
    ]
    champion = registry.champion()
    decision = retrain_decision(
        records,
        champion.version if champion else None,
        _last_drift_request(context.instance),
        _in_flight_training(context.instance),
        dt.datetime.now(dt.UTC),
        policy.cooldown_hours,
        policy.prediction_drift_triggers,
    )
    if not decision.requested:
        return dg.SensorResult(skip_reason=dg.SkipReason(decision.reason), cursor=cursor)
    context.log.info(decision.reason)
    notifier.alert("drift", decision.run_key or "", f"churn: {decision.reason}", dict(decision.tags))
    # No run config: the job's own defaults (the loaded settings, ml_assets/run_config.py) apply.
    return dg.SensorResult(run_requests=[dg.RunRequest(run_key=decision.run_key, tags=decision.tags)], cursor=cursor)


@dg.run_failure_sensor(
    default_status=dg.DefaultSensorStatus.RUNNING,
    description="Records every failed run of this code location (artifact root, run_failures/) and posts it to a webhook when configured.",
)
def pipeline_failure_sensor(context: dg.RunFailureSensorContext, notifier: FailureNotifier) -> None:
    run = context.dagster_run
    failure = {
        "run_id": run.run_id,
        "job_name": run.job_name,
        "tags": {k: v for k, v in run.tags.items() if k.startswith(("ml/", "dagster/partition", "dagster/backfill"))},
        "error": context.failure_event.message or "",
        "failed_at": dt.datetime.now(dt.UTC).isoformat(),
    }
    path = notifier.record(failure)
    sent = notifier.post(failure)
    context.log.info(f"recorded failed run {run.run_id} at {path}; webhook: {sent}")
