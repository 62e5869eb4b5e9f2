"""Schedules and sensors that run the pipeline without a person clicking."""

from sensors.drift import drift_retraining_sensor, pipeline_failure_sensor
from sensors.schedules import daily_pipeline_schedule, retention_schedule, weekly_training_schedule

__all__ = [
    "daily_pipeline_schedule",
    "drift_retraining_sensor",
    "pipeline_failure_sensor",
    "retention_schedule",
    "weekly_training_schedule",
]
