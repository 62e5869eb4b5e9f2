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

from lib.drift import same_cause
from ml_assets.jobs import training_job
from resources.alerts import FailureNotifier, RetrainPolicy
from resources.registry import ModelRegistry

DRIFT_REPORT = dg.AssetKey("drift_report")
TRIGGER_TAG = "ml/trigger"
RECORDS_PER_TICK = 1_000


def _cursor(raw: str | None) -> int | None:
    return json.loads(raw)["after_storage_id"] if raw else None


def _in_flight_training(instance: dg.DagsterInstance) -> list[str]:
    active = [
        dg.DagsterRunStatus.QUEUED,
        dg.DagsterRunStatus.NOT_STARTED,
        dg.DagsterRunStatus.STARTING,
        dg.DagsterRunStatus.STARTED,
    ]
    return [r.run_id for r in instance.get_runs(dg.RunsFilter(job_name=training_job.name, statuses=active), limit=5)]


def _last_drift_request(instance: dg.DagsterInstance) -> dg.RunRecord | None:
    runs = instance.get_run_records(dg.RunsFilter(tags={TRIGGER_TAG: "drift"}), limit=1, order_by="create_timestamp", ascending=False)
    return runs[0] if runs else None


@dg.sensor(
    job=training_job,
    minimum_interval_seconds=300,
    default_status=dg.DefaultSensorStatus.RUNNING,
    description="Requests one retraining run (training set, both models, ONNX, parity checks, promotion) per drift event "
    "found in the drift reports of the current champion; respects a cooldown and never stacks runs.",
)
def drift_retraining_sensor(context: dg.SensorEvaluationContext, policy: RetrainPolicy, registry: ModelRegistry) -> dg.SensorResult:
    after = _cursor(context.cursor)
    records = context.instance.fetch_materializations(
        dg.AssetRecordsFilter(asset_key=DRIFT_REPORT, after_storage_id=after), limit=RECORDS_PER_TICK, ascending=True
    ).records
    if not records:
        return dg.SensorResult(skip_reason=dg.SkipReason("no new drift reports"))
    cursor = json.dumps({"after_storage_id": records[-1].storage_id})
    champion = registry.champion()
    events = []
    for record in records:
        metadata = {k: v.value for k, v in record.asset_materialization.metadata.items()}
        # A report scored by an earlier champion says nothing about the current one.
        if champion is not None and metadata.get("model_version") != champion.version:
            continue
        if policy.is_event(metadata):
            events.append((record.partition_key, metadata))
    if not events:
        return dg.SensorResult(skip_reason=dg.SkipReason(f"{len(records)} new drift reports, none above the threshold"), cursor=cursor)
    partition, metadata = events[0]
    version = champion.version if champion else "none"
    in_flight = _in_flight_training(context.instance)
    if in_flight:
        reason = f"drift on {partition} against {version}, but training run {in_flight[0]} is already queued or running"
        return dg.SensorResult(skip_reason=dg.SkipReason(reason), cursor=cursor)
    record = _last_drift_request(context.instance)
    last = record.create_timestamp.astimezone(dt.UTC) if record else None
    now = dt.datetime.now(dt.UTC)
    if last is not None and now - last < dt.timedelta(hours=policy.cooldown_hours):
        reason = f"drift on {partition} against {version}, within the {policy.cooldown_hours:g} h cooldown of the request at {last:%Y-%m-%d %H:%M} UTC"
        return dg.SensorResult(skip_reason=dg.SkipReason(reason), cursor=cursor)
    columns = sorted(metadata.get("drifted_columns") or [])
    share = float(metadata.get("drift_share", 0.0))
    tags = record.dagster_run.tags if record else {}
    # The last drift retraining kept this champion: the same cause again is not a reason to retrain again.
    if tags.get("ml/drift_champion") == version and not metadata.get("performance_drift"):
        seen = [c for c in tags.get("ml/drifted_columns", "").split(",") if c]
        if same_cause(seen, float(tags.get("ml/drift_share", "0") or 0.0), columns, share):
            reason = (
                f"drift on {partition} against {version} (share {share:.2f}, {columns}) is the cause the retraining of "
                f"{last:%Y-%m-%d %H:%M} UTC already answered without a new champion; waiting for it to change materially"
            )
            return dg.SensorResult(skip_reason=dg.SkipReason(reason), cursor=cursor)
    context.log.info(f"drift event: {partition}, drift share {metadata.get('drift_share')}, champion {version}; requesting retraining")
    request = dg.RunRequest(
        run_key=f"drift:{version}:{partition}",
        tags={
            TRIGGER_TAG: "drift",
            "ml/run_kind": "training",
            "ml/drift_partition": partition or "",
            "ml/drift_champion": version,
            "ml/drift_share": f"{share:.3f}",
            "ml/drifted_columns": ",".join(columns),
            "ml/drifted_days_in_tick": str(len(events)),
        },
    )
    return dg.SensorResult(run_requests=[request], cursor=cursor)


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
