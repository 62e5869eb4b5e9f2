"""The daily calendar every time-based asset shares."""

from __future__ import annotations

import datetime as dt
import os

import dagster as dg

START_SETTING = "CHURN_PARTITIONS_START"


def _start() -> str:
    raw = os.environ.get(START_SETTING, "2024-07-01").strip()
    try:
        dt.date.fromisoformat(raw)
    except ValueError as exc:
        raise ValueError(f"{START_SETTING}={raw!r} is not a date (YYYY-MM-DD): set it to the first day of your transaction history") from exc
    return raw


# The first day of transaction history.  It must cover the earliest data in the
# source: rows before it are set aside as unplaceable (ts_before_calendar).
PARTITIONS_START = _start()

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
            f"set {START_SETTING}={first} (or earlier) to include it"
        )
    if last > newest:
        raise ValueError(f"day {last} has no partition yet: the newest complete day is {newest} (UTC)")
    if first > last:
        raise ValueError(f"empty day range: {first} is after {last}")


def naive_utc(moment: dt.datetime) -> dt.datetime:
    """Partition bounds are tz-aware UTC; the warehouse stores naive UTC."""
    return moment.astimezone(dt.UTC).replace(tzinfo=None)
