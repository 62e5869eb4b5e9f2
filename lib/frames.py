"""Frame helpers shared by the assets and the lake."""

from __future__ import annotations

import datetime as dt

import polars as pl


def split_by_day(frame: pl.DataFrame, column: str) -> dict[dt.date, pl.DataFrame]:
    """The rows of each day in ``column`` (a Date or Datetime column), in their original order.

    A range run holds one frame for many days, and ``partition_by`` copies all
    of it: for 30 days of features at 10 M transactions a year that was 1.8 GB
    more for the per-day metadata and 2.2 GB more again in the lake's split.
    When the frame is already in day order (what the assets produce) the days
    are zero-copy slices of it; otherwise it is sorted once, stably.
    """
    if frame.is_empty():
        return {}
    day = frame[column]
    if day.dtype != pl.Date:
        day = day.cast(pl.Date)
    if day.null_count():
        raise ValueError(f"{day.null_count()} rows have no {column}: they belong to no day")
    if not day.is_sorted():
        ordered = frame.with_columns(day.alias("__day")).sort("__day", maintain_order=True)
        frame, day = ordered.drop("__day"), ordered["__day"]
    days: dict[dt.date, pl.DataFrame] = {}
    offset = 0
    for n, value in day.rle().struct.unnest().iter_rows():
        days[value] = frame.slice(offset, n)
        offset += n
    return days
