"""Run stages of the graph in-process over day ranges (used by the demo, the CLI and tests).

Daily assets use single-run backfills: one run covers a range of days, reads
the source once and writes one lake file per day, instead of one run per day.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping, Sequence
from typing import Any

import dagster as dg

from lib.settings import Settings
from ml_assets.jobs import INGEST_TO_FEATURES, SCORING, TRAINING

# Dagster's own run tags for a single-run backfill's range and for a sensor's request, as a daemon
# writes them (their constants live in a private module, so the values are spelled out here).
ASSET_PARTITION_RANGE_START_TAG = "dagster/asset_partition_range_start"
ASSET_PARTITION_RANGE_END_TAG = "dagster/asset_partition_range_end"
RUN_KEY_TAG = "dagster/run_key"
SENSOR_NAME_TAG = "dagster/sensor_name"

# The stages are defined once, in jobs.py; re-exported here for the callers of materialize_*.
__all__ = ["INGEST_TO_FEATURES", "SCORING", "TRAINING", "materialize_range", "materialize_unpartitioned", "run_drift_sensor_once"]


def materialize_range(
    keys: dg.AssetSelection | Sequence[str],
    start: dt.date,
    end: dt.date,
    instance: dg.DagsterInstance,
    resources: Mapping[str, Any] | None = None,
    log_level: str = "DEBUG",
    run_config: Mapping[str, Any] | None = None,
    settings: Settings | None = None,
) -> dg.ExecuteInProcessResult:
    """Materialize daily assets for the inclusive day range in one run (``run_config`` over the defaults of ``settings``,
    the loaded ones unless given)."""
    from ml_assets.partitions import check_in_calendar

    check_in_calendar(start, end)
    tags = {ASSET_PARTITION_RANGE_START_TAG: start.isoformat(), ASSET_PARTITION_RANGE_END_TAG: end.isoformat()}
    return _materialize(keys, instance, resources, run_config, tags, log_level, settings)


def materialize_unpartitioned(
    keys: dg.AssetSelection | Sequence[str],
    instance: dg.DagsterInstance,
    run_config: Mapping[str, Any] | None = None,
    resources: Mapping[str, Any] | None = None,
    log_level: str = "DEBUG",
    settings: Settings | None = None,
) -> dg.ExecuteInProcessResult:
    """Materialize unpartitioned assets (training, export) in one run."""
    return _materialize(keys, instance, resources, run_config, None, log_level, settings)


def _materialize(
    keys: dg.AssetSelection | Sequence[str],
    instance: dg.DagsterInstance,
    resources: Mapping[str, Any] | None,
    run_config: Mapping[str, Any] | None,
    tags: Mapping[str, str] | None,
    log_level: str,
    settings: Settings | None = None,
) -> dg.ExecuteInProcessResult:
    from lib.settings import settings as loaded
    from ml_assets.definitions import ALL_ASSETS, ALL_CHECKS
    from ml_assets.run_config import defaults, merged
    from resources import build_resources

    selection = keys if isinstance(keys, dg.AssetSelection) else dg.AssetSelection.assets(*keys)
    # The same defaults the jobs carry, for the ops this selection runs; the caller's run config wins.
    ops = _selected_ops(selection, ALL_ASSETS)
    config = merged(defaults(settings or loaded(), ops), run_config)
    if not config["ops"]:
        config.pop("ops")
    return dg.materialize(
        [*ALL_ASSETS, *ALL_CHECKS],
        selection=selection,
        instance=instance,
        resources=resources or build_resources(),
        run_config={**config, **_console(log_level)},
        tags=dict(tags or {}),
    )


def _selected_ops(selection: dg.AssetSelection, assets: Sequence[Any]) -> list[str]:
    # The ops that run: only computed assets have config (an AssetSpec is an external record, never executed here).
    computed = [a for a in assets if isinstance(a, dg.AssetsDefinition) and a.is_executable]
    keys = selection.resolve(computed)
    return [a.node_def.name for a in computed if set(a.keys) & keys]


def _console(log_level: str) -> dict[str, Any]:
    # Only the console: the instance's event log keeps every event whatever this says.
    return {"loggers": {"console": {"config": {"log_level": log_level}}}}


def training_run_config(latest_snapshot: dt.date | None = None, **lgbm: Any) -> dict[str, Any]:
    ops: dict[str, Any] = {}
    if latest_snapshot is not None:
        ops["training_set"] = {"config": {"latest_snapshot": latest_snapshot.isoformat()}}
    if lgbm:
        ops["lgbm_model"] = {"config": lgbm}
    return {"ops": ops}


def run_drift_sensor_once(
    instance: dg.DagsterInstance, resources: Mapping[str, Any] | None = None, log_level: str = "DEBUG"
) -> tuple[dg.SensorResult, dg.ExecuteInProcessResult | None]:
    """One real evaluation of the drift sensor; if it asks for retraining, execute that run here.

    The run carries the request's tags plus the run key and sensor name, as a
    daemon-launched run would, so the sensor's in-flight and cooldown checks see it.
    """
    from resources import build_resources
    from sensors.drift import drift_retraining_sensor

    resources = resources or build_resources()
    # No cursor: this reads every drift record, as a fresh daemon would; the
    # cooldown and in-flight checks (derived from runs) keep it from repeating a request.
    context = dg.build_sensor_context(instance=instance, resources={k: resources[k] for k in ("policy", "registry", "notifier")})
    result = drift_retraining_sensor(context)
    if not result.run_requests:
        return result, None
    request = result.run_requests[0]
    tags = {**request.tags, RUN_KEY_TAG: request.run_key or "", SENSOR_NAME_TAG: drift_retraining_sensor.name}
    return result, _materialize(TRAINING, instance, resources, None, tags, log_level)
