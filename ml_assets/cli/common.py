"""What the commands share: the demo's calendar and argument types."""

from __future__ import annotations

import argparse
import datetime as dt
from dataclasses import dataclass


@dataclass(frozen=True)
class DemoCalendar:
    """The demo's year: 365 days of history ending yesterday (UTC), behaviour shifting 29 days before the end, the last
    44 days scored.

    Dated relative to today because the Dagster UI plots a partitioned asset's metadata on its Partitions axis for
    the newest 120 days of the calendar only: a demo dated in the past would draw nothing there.
    """

    start: dt.date
    end: dt.date
    drift: dt.date
    score_from: dt.date


def demo_calendar(today: dt.date | None = None) -> DemoCalendar:
    end = (today or dt.datetime.now(dt.UTC).date()) - dt.timedelta(days=1)
    return DemoCalendar(
        start=end - dt.timedelta(days=364), end=end, drift=end - dt.timedelta(days=29), score_from=end - dt.timedelta(days=43)
    )


def date_arg(value: str) -> dt.date:
    try:
        return dt.date.fromisoformat(value)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"{value!r} is not a date in YYYY-MM-DD form") from exc
