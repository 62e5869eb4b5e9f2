"""Schedules ask for the right partition at the right time."""

from __future__ import annotations

import datetime as dt

import dagster as dg

from lib.settings import Settings
from ml_assets.jobs import build_jobs
from sensors import build_schedules

JOBS = build_jobs(Settings())
daily_pipeline_schedule, weekly_training_schedule, retention_schedule = build_schedules(JOBS, Settings())


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


def test_the_retention_job_deletes_expired_partitions_and_records(tmp_path) -> None:
    import polars as pl

    from resources import Lake, ModelRegistry

    retention_job = JOBS.retention

    # Off by default: nothing expires until deployment.retention_days is set.
    assert retention_schedule.default_status == dg.DefaultScheduleStatus.STOPPED
    on = Settings.model_validate({"deployment": {"retention_days": 30}})
    assert build_schedules(build_jobs(on), on)[2].default_status == dg.DefaultScheduleStatus.RUNNING
    today = dt.datetime.now(dt.UTC).date()
    old, recent = (today - dt.timedelta(days=40)).isoformat(), today.isoformat()
    for day in (old, recent):
        (tmp_path / "lake" / "validated_transactions").mkdir(parents=True, exist_ok=True)
        pl.DataFrame({"customer_id": ["A"]}).write_parquet(tmp_path / "lake" / "validated_transactions" / f"{day}.parquet")
    registry = ModelRegistry(url=f"sqlite:///{tmp_path / 'registry.sqlite'}")
    now = dt.datetime.now(dt.UTC)
    registry.record_predictions(
        [{"at": now - dt.timedelta(days=10), "request_id": "r", "customer_id": "A", "status": 200, "model_version": "v"}]
    )
    with dg.instance_for_test() as instance:
        result = retention_job.execute_in_process(
            run_config={"ops": {"expire_retained_data": {"config": {"retention_days": 30, "prediction_retention_days": 7}}}},
            resources={"lake": Lake(root=str(tmp_path / "lake")), "registry": registry},
            instance=instance,
        )
    assert result.success
    assert sorted(p.stem for p in (tmp_path / "lake" / "validated_transactions").iterdir()) == [recent]
    assert registry.predictions() == []
    md = next(e for e in result.all_events if e.event_type_value == "STEP_OUTPUT").step_output_data.metadata
    assert md["partitions_deleted"].value == 1 and md["prediction_records_deleted"].value == 1
