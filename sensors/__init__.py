"""Schedules and sensors that run the pipeline without a person clicking."""

from sensors.drift import drift_retraining_sensor, pipeline_failure_sensor
from sensors.schedules import build_schedules

__all__ = ["build_schedules", "drift_retraining_sensor", "pipeline_failure_sensor"]
