"""The daily calendar every time-based asset shares."""

from __future__ import annotations

import datetime as dt
import os

import dagster as dg

# The first day of transaction history.  It must cover the earliest data in the
# source (features look back up to 180 days from each partition).
PARTITIONS_START = os.environ.get("CHURN_PARTITIONS_START", "2024-07-01")

daily_partitions = dg.DailyPartitionsDefinition(start_date=PARTITIONS_START, timezone="UTC")


def partition_days(context: dg.AssetExecutionContext) -> list[dt.date]:
    """The days this run covers: one for a normal run, many for a single-run backfill."""
    window = context.partition_time_window
    first = window.start.date()
    n = (window.end - window.start).days
    return [first + dt.timedelta(days=i) for i in range(n)]


def naive_utc(moment: dt.datetime) -> dt.datetime:
    """Partition bounds are tz-aware UTC; the warehouse stores naive UTC."""
    return moment.astimezone(dt.UTC).replace(tzinfo=None)
