"""Tests of the resources (registry, warehouse, lake, artifacts, feature store) against the real backends."""
