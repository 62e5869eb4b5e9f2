"""customer_features on the Spark engine (compute.engine: spark): the same files, computed on the cluster.

Imported only by a run on the Spark engine: it imports pyspark.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from typing import Any

import dagster as dg

from lib.progress import Ticker
from lib.spark.daily import FeatureInputs, run_features
from ml_assets.assets.features import (
    FEATURE_DESCRIPTIONS,
    FEATURES,
    STATE,
    STATES_KEPT,
    VALIDATED,
    FeaturesConfig,
    check_results,
)
from ml_assets.metadata import frame_metadata
from resources import ComputeResource, Lake


def spark_customer_features(
    context: dg.AssetExecutionContext,
    config: FeaturesConfig,
    compute: ComputeResource,
    lake: Lake,
    days: list[dt.date],
    window_days: list[str],
    columns: tuple[str, ...],
    channels: tuple[str, ...],
    extras: tuple[str, ...],
) -> Iterator[Any]:
    """Fold, write and check every day of the run on Spark; record each day's figures as the polars path does."""
    before = (days[0] - dt.timedelta(days=1)).isoformat()
    stored = lake.path_for(STATE, before, ".parquet")
    inputs = FeatureInputs(
        stored_state=stored if stored.exists() else None,
        history=[lake.path_for(VALIDATED, p, ".parquet") for p in lake.existing_partitions(VALIDATED) if p <= before],
        window=lake.partition_paths(VALIDATED, window_days, needed_by=" (needed by customer_features)"),
    )
    context.log.info(f"customer_features: {len(days)} days on {compute.describe()}")
    ticker = Ticker("customer_features", len(days), context.log.info)
    run = run_features(
        compute.session(),
        inputs,
        days,
        target=lambda day: lake.path_for(FEATURES, day.isoformat(), ".parquet"),
        state_target=lake.path_for(STATE, days[-1].isoformat(), ".parquet"),
        columns=columns,
        channels=channels,
        extras=extras,
        population_days=config.population_days,
        on_day=ticker.tick,
    )
    for old in lake.existing_partitions(STATE)[:-STATES_KEPT]:
        lake.path_for(STATE, old, ".parquet").unlink(missing_ok=True)
    for day in days:
        figures = run.days[day]
        path = lake.path_for(FEATURES, day.isoformat(), ".parquet")
        context.add_asset_metadata(
            {
                **frame_metadata(lake.head(path), FEATURE_DESCRIPTIONS),
                "dagster/row_count": figures.rows,
                "active_customers": figures.rows,
                "customers_in_state": run.customers_in_state,
                "state_from": run.state_from,
                "engine": compute.describe(),
                **{f"mean_{c}": v for c, v in figures.means.items()},
            },
            partition_key=day.isoformat(),
        )
        if not figures.rows:
            context.log.warning(f"customer_features {day}: no customer has a purchase before the end of this day")
    # The files are written: nothing for the IO manager to store.
    yield dg.Output(
        None, metadata={"lake_path": dg.MetadataValue.path(str(lake.path_for(FEATURES, days[0].isoformat(), ".parquet").parent))}
    )
    yield from check_results(sum(f.duplicates for f in run.days.values()), run.outcomes)
