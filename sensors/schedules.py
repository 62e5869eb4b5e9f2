"""Calendar automation: the daily pipeline, a weekly retrain as a safety net, and retention when it is set."""

from __future__ import annotations

import dagster as dg

from lib.settings import Settings
from ml_assets.jobs import Jobs


def build_schedules(jobs: Jobs, settings: Settings) -> list[dg.ScheduleDefinition]:
    """The schedules of these jobs; each run gets its job's run config (the settings' values)."""
    # 02:00 UTC: the previous day is complete in the source by then.
    daily = dg.build_schedule_from_partitioned_job(jobs.daily, hour_of_day=2, minute_of_hour=0)
    weekly = dg.ScheduleDefinition(
        name="weekly_training_schedule",
        job=jobs.training,
        cron_schedule="0 4 * * 1",
        execution_timezone="UTC",
        description="Retrain every Monday at 04:00 UTC, whatever drift says.",
    )
    retention = dg.ScheduleDefinition(
        name="retention_schedule",
        job=jobs.retention,
        cron_schedule="30 3 * * *",
        execution_timezone="UTC",
        description="03:30 UTC daily, after the daily pipeline; running only when deployment.retention_days is set.",
        default_status=dg.DefaultScheduleStatus.RUNNING if settings.deployment.retention_days else dg.DefaultScheduleStatus.STOPPED,
    )
    return [daily, weekly, retention]
