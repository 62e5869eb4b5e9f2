"""The retention job: transaction partitions and prediction records past their retention, deleted daily.

Off unless `deployment.retention_days` (CHURN_RETENTION_DAYS) is set: its
schedule (sensors/schedules.py) then starts RUNNING. The same work as `churn retention --apply`
(ml_assets/governance/erasure.py). Dagster OSS cannot wipe single partitions from its
event log, so the UI keeps showing expired days as materialized (Dagster+
wipes them); a run that reads one fails naming the day, and a backfill of
those days would read them from the source again.
"""

import dagster as dg
from pydantic import Field

from ml_assets.run_config import default_of
from resources import Lake, ModelRegistry


class RetentionConfig(dg.Config):
    retention_days: int | None = Field(
        default=default_of("expire_retained_data", "retention_days"),
        description="Raw, validated and quarantined partitions older than this many days are deleted (deployment.retention_days).",
    )
    prediction_retention_days: int | None = Field(
        default=default_of("expire_retained_data", "prediction_retention_days"),
        description="Prediction records older than this many days are deleted (deployment.service.prediction_retention_days).",
    )


@dg.op(description="Delete transaction partitions and prediction records past their retention.")
def expire_retained_data(context: dg.OpExecutionContext, config: RetentionConfig, lake: Lake, registry: ModelRegistry) -> dg.Output[None]:
    from ml_assets.governance.erasure import apply_retention

    report = apply_retention(lake.root, registry, config.retention_days, config.prediction_retention_days, True, context.instance)
    tables = sorted({table for table, _, _ in report.files})
    context.log.info(
        f"retention: {len(report.files)} partition file(s) deleted ({', '.join(tables) or 'none'}), "
        f"{report.predictions_deleted} prediction record(s)"
    )
    return dg.Output(
        None,
        metadata={
            "partitions_deleted": len(report.files),
            "partitions": dg.MetadataValue.json([f"{t}/{p}" for t, p, _ in report.files][:500]),
            "prediction_records_deleted": report.predictions_deleted,
            "wiped_from_event_log": bool(report.wiped),
            "retention_days": config.retention_days,
            "prediction_retention_days": config.prediction_retention_days,
        },
    )


@dg.graph
def retention_graph() -> None:
    """Delete what is past its retention; ml_assets/jobs.py makes it `retention_job` with the settings' values."""
    expire_retained_data()
