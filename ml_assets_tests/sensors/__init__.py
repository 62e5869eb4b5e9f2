"""Tests of the sensors and schedules, evaluated against temporary instances."""
