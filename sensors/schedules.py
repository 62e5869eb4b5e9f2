"""Calendar automation: the daily pipeline, a weekly retrain as a safety net, and retention when it is set."""

from __future__ import annotations

import dagster as dg

from lib.settings import settings
from ml_assets.governance.retention import retention_job
from ml_assets.jobs import daily_pipeline_job, training_job

# 02:00 UTC: the previous day is complete in the source by then.
daily_pipeline_schedule = dg.build_schedule_from_partitioned_job(daily_pipeline_job, hour_of_day=2, minute_of_hour=0)

weekly_training_schedule = dg.ScheduleDefinition(
    name="weekly_training_schedule",
    job=training_job,
    cron_schedule="0 4 * * 1",
    execution_timezone="UTC",
    description="Retrain every Monday at 04:00 UTC, whatever drift says.",
)

retention_schedule = dg.ScheduleDefinition(
    name="retention_schedule",
    job=retention_job,
    cron_schedule="30 3 * * *",
    execution_timezone="UTC",
    description="03:30 UTC daily, after the daily pipeline; running only when deployment.retention_days is set.",
    default_status=dg.DefaultScheduleStatus.RUNNING if settings().deployment.retention_days else dg.DefaultScheduleStatus.STOPPED,
)
