"""Schedules and sensors that run the pipeline without a person clicking."""

from sensors.schedules import daily_pipeline_schedule, weekly_training_schedule

__all__ = ["daily_pipeline_schedule", "weekly_training_schedule"]
