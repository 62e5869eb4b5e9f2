"""Schedules ask for the right partition at the right time."""

from __future__ import annotations

import datetime as dt

import dagster as dg

from sensors import daily_pipeline_schedule, weekly_training_schedule


def test_daily_schedule_runs_the_previous_day() -> None:
    with dg.instance_for_test() as instance:
        context = dg.build_schedule_context(instance=instance, scheduled_execution_time=dt.datetime(2025, 6, 2, 2, 0, tzinfo=dt.UTC))
        result = daily_pipeline_schedule.evaluate_tick(context)
    assert len(result.run_requests) == 1
    assert result.run_requests[0].partition_key == "2025-06-01"
    assert daily_pipeline_schedule.cron_schedule == "0 2 * * *"


def test_weekly_training_is_a_monday_schedule_of_the_training_job() -> None:
    assert weekly_training_schedule.cron_schedule == "0 4 * * 1"
    assert weekly_training_schedule.job_name == "training_job"
