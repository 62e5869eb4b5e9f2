"""The daily calendar every time-based asset shares."""

from __future__ import annotations

import datetime as dt

import dagster as dg

from lib.settings import settings

START_SETTING = "partitions_start (CHURN_PARTITIONS_START)"

# The first day of transaction history.  It must cover the earliest data in the
# source: rows before it are set aside as unplaceable (ts_before_calendar).
PARTITIONS_START = settings().partitions_start.isoformat()

daily_partitions = dg.DailyPartitionsDefinition(start_date=PARTITIONS_START, timezone="UTC")


def partition_days(context: dg.AssetExecutionContext) -> list[dt.date]:
    """The days this run covers: one for a normal run, many for a single-run backfill."""
    window = context.partition_time_window
    first = window.start.date()
    n = (window.end - window.start).days
    return [first + dt.timedelta(days=i) for i in range(n)]


def calendar_end(today: dt.date | None = None) -> dt.date:
    """First day no row may belong to yet: the day after tomorrow (UTC). Later rows are unplaceable (ts_after_calendar);
    today's and tomorrow's rows are only not yet placed (their partitions do not exist yet)."""
    return (today or dt.datetime.now(dt.UTC).date()) + dt.timedelta(days=2)


def check_in_calendar(first: dt.date, last: dt.date) -> None:
    """Fail with the setting to change when a requested day range is not in the partition calendar."""
    start = daily_partitions.start.date()
    newest = dt.datetime.now(dt.UTC).date() - dt.timedelta(days=1)
    if first < start:
        raise ValueError(
            f"day {first} is before the partition calendar, which starts on {start} ({START_SETTING}); "
            f"set {START_SETTING} to {first} (or earlier) in the settings file to include it"
        )
    if last > newest:
        raise ValueError(f"day {last} has no partition yet: the newest complete day is {newest} (UTC)")
    if first > last:
        raise ValueError(f"empty day range: {first} is after {last}")
