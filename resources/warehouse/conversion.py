"""Source values to typed columns: the fast path for clean columns, value by value with a reason for the rest."""

from __future__ import annotations

import decimal
from collections.abc import Callable
from typing import TYPE_CHECKING

import polars as pl
from polars.exceptions import PanicException

from lib.contract import (
    REJECT,
    integer_converter,
    original_text,
    timestamps_fast,
    to_number,
    to_text,
    to_utc_naive,
)
from lib.schema import RAW_SCHEMA

if TYPE_CHECKING:
    # Imported lazily at run time: loading the code location should not pay for it.
    pass


TYPE_ERRORS = "_type_errors"


def _convert(values: list[object], name: str) -> tuple[pl.Series, list[tuple[int, str]]]:
    """Cast one column to its canonical type; return the rows whose value did not fit, with the original in full.

    A value that does not fit becomes null in the typed column; its original
    text (bytes as hex) goes back to the caller, so the row can be quarantined
    with it. Nothing here raises on a value: one bad value never fails a run.
    """
    dtype = RAW_SCHEMA.get(name, pl.String())  # a further categorical column is text
    fast = timestamps_fast(values) if name == "ts" else _fast_path(values, name, dtype)
    if fast is not None:
        return fast.alias(name), []
    if name == "ts":
        accept: Callable[[object], object] = to_utc_naive
    elif dtype == pl.String():
        accept = to_text
    elif dtype.is_integer():
        accept = integer_converter(dtype)
    else:
        accept = to_number
    clean: list[object] = []
    bad: list[tuple[int, str]] = []
    for i, value in enumerate(values):
        converted = None if value is None else accept(value)
        if converted is REJECT:
            bad.append((i, original_text(value)))
            converted = None
        clean.append(converted)
    return pl.Series(name, clean, dtype=dtype), bad


def _fast_path(values: list[object], name: str, dtype: pl.DataType) -> pl.Series | None:
    """Vectorized conversion when every value already has the expected form.

    Clean data (the common case) never pays for the per-value path; any
    surprise (a string in a numeric column, a value out of the type's range)
    makes this return None and the careful path decides value by value.
    """
    if dtype.is_numeric() and any(isinstance(v, decimal.Decimal) for v in values[:1000]):
        # PostgreSQL NUMERIC: polars cannot hold a Decimal NaN; floats can (amount_finite then says so).
        values = [float(v) if isinstance(v, decimal.Decimal) else v for v in values]
    try:
        series = pl.Series(name, values, strict=True)
        if dtype.is_numeric():
            if not series.dtype.is_numeric() and series.dtype != pl.Null:
                return None
            if dtype.is_integer() and series.dtype.is_float():
                return None  # fractional counts need the careful path
            return series.cast(dtype, strict=True)
        if series.dtype in (pl.String, pl.Null):
            return series.cast(dtype)
        # Numeric customer ids (and numeric codes in other text columns) as their decimal text.
        return series.cast(pl.String) if series.dtype.is_integer() else None
    except (TypeError, ValueError, OverflowError, pl.exceptions.PolarsError, PanicException):
        return None
