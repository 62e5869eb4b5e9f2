"""The data contract for a user's transaction log: which values are accepted, and the day each row belongs to.

Pure functions, no Dagster and no database: the warehouse resource fetches
values, these decide what they mean.

The day a row belongs to is the UTC date of its timestamp, whatever the
source column holds (timestamp, timestamp with time zone, date, or text in an
ISO form).  Parsing is strict: a value is either read exactly or rejected with
its original text kept; nothing is rounded into a neighbouring day (a leap
second ``23:59:60`` is rejected, not rolled over), no digit separators, no
non-ASCII digits, no bytes where text or numbers belong.
"""

from __future__ import annotations

import datetime as dt
import decimal
import hashlib
import math
import re
import uuid
from collections.abc import Callable
from typing import Final, cast

import polars as pl

# A marker for "this value does not fit its column": the caller keeps the original.
REJECT: Final = object()

INT_BOUNDS: dict[pl.DataType, tuple[int, int]] = {
    pl.Int32(): (-(2**31), 2**31 - 1),
    pl.Int64(): (-(2**63), 2**63 - 1),
}

# The accepted text forms of a timestamp: ISO 8601 calendar dates, optionally a
# time (space or T), seconds, a fraction of up to 9 digits and an offset (Z,
# +HH, +HHMM or +HH:MM). ASCII digits only; ranges are checked by datetime.
TIMESTAMP_TEXT = re.compile(
    r"(?P<y>[0-9]{4})-(?P<mo>[0-9]{2})-(?P<d>[0-9]{2})"
    r"(?:[T ](?P<h>[0-9]{2}):(?P<mi>[0-9]{2})(?::(?P<s>[0-9]{2})(?:\.(?P<f>[0-9]{1,9}))?)?)?"
    r" ?(?P<tz>Z|[+-][0-9]{2}(?::?[0-9]{2})?)?",
    re.ASCII,
)
# The same forms without an offset, in polars' (Rust) regex syntax, for the vectorized path.
_NAIVE_TEXT_VECTOR = r"^[0-9]{4}-[0-9]{2}-[0-9]{2}(?:[T ](?:[01][0-9]|2[0-3]):[0-5][0-9]:[0-5][0-9](?:\.[0-9]{1,6})?)?$"
# Plain decimal numbers as text: no digit separators, no words (nan, inf), ASCII only.
NUMBER_TEXT = re.compile(r"[+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][+-]?[0-9]+)?", re.ASCII)
INTEGER_TEXT = re.compile(r"[+-]?[0-9]+", re.ASCII)

# The SQL LIKE pattern every placeable text timestamp matches (its first ten characters form a date).
ISO_LIKE = "____-__-__%"

DEFAULT_CUSTOMER_ID_MAX = 64


def original_text(value: object) -> str:
    """A value as it was in the source, in full: bytes as ``hex:<digits>``, everything else as text."""
    if isinstance(value, bytes | bytearray | memoryview):
        return "hex:" + bytes(value).hex()
    if isinstance(value, dt.datetime | dt.date):
        return value.isoformat()
    return str(value)


def preview_text(value: str, limit: int = 120) -> str:
    """A bounded, single-line, escaped form of a client value for logs and metadata."""
    text = value.encode("unicode_escape").decode("ascii")
    return text if len(text) <= limit else f"{text[:limit]}... ({len(value)} chars)"


# --- timestamps -------------------------------------------------------------


def parse_timestamp_text(text: str) -> dt.datetime | None:
    """Strictly parse one ISO timestamp or date to naive UTC; None when it is not one of the accepted forms."""
    m = TIMESTAMP_TEXT.fullmatch(text)
    if m is None:
        return None
    fraction = (m["f"] or "")[:6].ljust(6, "0")
    try:
        moment = dt.datetime(int(m["y"]), int(m["mo"]), int(m["d"]), int(m["h"] or 0), int(m["mi"] or 0), int(m["s"] or 0), int(fraction))
    except ValueError:  # month 13, February 30, hour 24, second 60, year 0
        return None
    tz = m["tz"]
    if tz and tz != "Z":
        digits = tz[1:].replace(":", "")
        hours, minutes = int(digits[:2]), int(digits[2:] or 0)
        if hours > 23 or minutes > 59:
            return None
        offset = dt.timedelta(hours=hours, minutes=minutes) * (1 if tz[0] == "+" else -1)
        try:
            moment = moment - offset
        except OverflowError:  # 0001-01-01 00:30+01:00 is before year 1 in UTC
            return None
    return moment


# Values a database holds as a timestamp or date that no day of any calendar can: PostgreSQL's infinities, years
# before 1 (year 0 in ISO, BC dates) and after 9999. Set aside as ts_out_of_range rather than "unreadable".
_OUT_OF_RANGE = re.compile(r"\s*(?:[+-]?infinity|[+-]?[0-9]{5,}-.*|[+-][0-9]{4}-.*|0000-(?:0[1-9]|1[0-2])-.*|.*\bBC)\s*", re.IGNORECASE)


def out_of_range(value: object) -> bool:
    """Whether a timestamp value is a real instant or date outside years 1..9999 (or infinite), not malformed text."""
    return isinstance(value, str) and _OUT_OF_RANGE.fullmatch(value) is not None


def to_utc_naive(value: object) -> object:
    """One source timestamp value (datetime, date or text) as naive UTC, or REJECT."""
    if isinstance(value, dt.datetime):
        if value.tzinfo is not None:
            try:
                return value.astimezone(dt.UTC).replace(tzinfo=None)
            except OverflowError:
                return REJECT
        return value
    if isinstance(value, dt.date):
        return dt.datetime.combine(value, dt.time())
    if isinstance(value, str):
        parsed = parse_timestamp_text(value.strip())
        return REJECT if parsed is None else parsed
    return REJECT  # numbers (epoch seconds or milliseconds?), bytes: ambiguous, never guessed


def unplaceable_reason(value: object, calendar_start: dt.date, calendar_end: dt.date) -> str | None:
    """Why a source timestamp value belongs to no day of the calendar [calendar_start, calendar_end); None if it does."""
    if value is None:
        return "ts_missing"
    moment = to_utc_naive(value)
    if moment is REJECT:
        return "ts_out_of_range" if out_of_range(value) else "ts_unreadable"
    day = cast(dt.datetime, moment).date()
    if day < calendar_start:
        return "ts_before_calendar"
    if day >= calendar_end:
        return "ts_after_calendar"
    return None  # an edge row that belongs to a day of the calendar


def timestamps_fast(values: list[object]) -> pl.Series | None:
    """Vectorized reading of a timestamp column in the common clean forms; None sends it to the careful path."""
    try:
        series = pl.Series("ts", values, strict=True)
    except (TypeError, ValueError, OverflowError, pl.exceptions.PolarsError, pl.exceptions.PanicException):
        return None
    if series.dtype == pl.Null:
        return series.cast(pl.Datetime("us"))
    if isinstance(series.dtype, pl.Datetime) and series.dtype.time_zone is None:
        return series.cast(pl.Datetime("us"))
    if series.dtype == pl.Date:
        return series.cast(pl.Datetime("us"))
    if series.dtype != pl.String:
        return None
    present = series.drop_nulls()
    if not present.str.contains(_NAIVE_TEXT_VECTOR).all():
        return None  # an offset, an odd form or a bad value: decided value by value
    spaced = series.str.replace("T", " ", literal=True)
    normal = pl.when(spaced.str.len_bytes() == 10).then(spaced + " 00:00:00").otherwise(spaced)
    parsed = pl.select(normal.str.to_datetime("%Y-%m-%d %H:%M:%S%.f", time_unit="us", strict=False)).to_series()
    return parsed.alias("ts") if parsed.null_count() == series.null_count() else None


def text_day(text: str, days: list[dt.date]) -> dt.date | None:
    """The run day whose text range ['YYYY-MM-DD', next day) holds an unreadable text timestamp, if any.

    Every text in the calendar's range falls in exactly one day's range, so an
    unreadable value is quarantined by exactly one day's run.
    """
    for day in reversed(days):
        if day.isoformat() <= text < (day + dt.timedelta(days=1)).isoformat():
            return day
    return None


# --- values of the other columns ----------------------------------------------


def to_number(value: object) -> object:
    if isinstance(value, bool):
        return REJECT
    if isinstance(value, int):
        return float(value) if abs(value) < 2**1023 else REJECT
    if isinstance(value, float):
        return value
    if isinstance(value, decimal.Decimal):
        return float(value)  # NaN stays NaN: the amount_finite rule quarantines it with its reason
    if isinstance(value, str) and NUMBER_TEXT.fullmatch(value.strip()):
        number = float(value)
        return number if math.isfinite(number) else REJECT
    return REJECT


def integer_converter(dtype: pl.DataType) -> Callable[[object], object]:
    low, high = INT_BOUNDS[dtype]

    def convert(value: object) -> object:
        if isinstance(value, bool):
            return REJECT
        if isinstance(value, int):
            number = value
        elif isinstance(value, str) and INTEGER_TEXT.fullmatch(value.strip()):
            number = int(value)
        elif isinstance(value, float | decimal.Decimal):
            if not math.isfinite(value) or value != int(value):
                return REJECT
            number = int(value)
        else:
            return REJECT
        return number if low <= number <= high else REJECT

    return convert


def to_text(value: object) -> object:
    """Text columns: text as is; integers and UUIDs as their usual text (numeric customer ids). Binary values (a BLOB
    in a text column, undecodable bytes) are type errors: the bytes that happen to spell an id are not that id."""
    if isinstance(value, str):
        return value
    if isinstance(value, bool):
        return REJECT
    if isinstance(value, int | uuid.UUID):
        return str(value)
    if isinstance(value, float | decimal.Decimal):
        # A numeric id column read as float or NUMERIC: 1234.0 is customer 1234; 12.5 is not an id.
        return str(int(value)) if math.isfinite(value) and value == int(value) else REJECT
    return REJECT


# --- customer ids -------------------------------------------------------------


def customer_id_ok_expr(pattern: str | None, column: str = "customer_id") -> pl.Expr:
    """The customer-id rule as a polars expression (vectorized for the default rule; the user's pattern runs in Python's ``re``)."""
    col = pl.col(column)
    if pattern:
        return col.map_elements(customer_id_ok(pattern), return_dtype=pl.Boolean, skip_nulls=False).fill_null(False)
    printable = ~col.str.contains(r"[\p{C}\p{Z}--\x20]")
    trimmed = ~col.str.contains(r"^\s|\s$")
    return (col.str.len_chars().is_between(1, DEFAULT_CUSTOMER_ID_MAX) & printable & trimmed).fill_null(False)


def customer_id_ok(pattern: str | None) -> Callable[[str | None], bool]:
    """The customer-id rule: the whole value matches ``pattern``; by default any printable text of 1 to 64
    characters without leading or trailing white space (so ``'C42\\n'`` and ``' C42'`` are not second customers)."""
    if pattern:
        compiled = re.compile(pattern)
        return lambda v: v is not None and compiled.fullmatch(v) is not None

    def default(v: str | None) -> bool:
        return v is not None and 1 <= len(v) <= DEFAULT_CUSTOMER_ID_MAX and v.isprintable() and v == v.strip()

    return default


def derived_row_ids(frame: pl.DataFrame, columns: list[str]) -> pl.Series:
    """A stable identity for logs without a transaction id: a 63-bit BLAKE2 hash of the row's values and its ordinal among identical rows.

    The same source row gets the same id in every run and every release (the
    hash is over the values' text, not a library's internal hash); two identical
    rows of one day (two equal purchases) stay two rows with two ids.
    """
    seen: dict[bytes, int] = {}
    ids = []
    for row in frame.select(columns).iter_rows():
        key = "\x1f".join("\x00" if v is None else repr(v) for v in row).encode("utf-8", "backslashreplace")
        n = seen.get(key, 0)
        seen[key] = n + 1
        digest = hashlib.blake2b(key + b"\x1e" + str(n).encode(), digest_size=8).digest()
        ids.append(int.from_bytes(digest, "big") & (2**63 - 1))
    return pl.Series("transaction_id", ids, dtype=pl.Int64)


# --- proposing a mapping for a user's table (churn init) -----------------------

# Name hints per canonical column, strongest first; matched against lower-cased column names.
NAME_HINTS: dict[str, tuple[str, ...]] = {
    # Not invoice or order numbers: a log of order lines repeats them, and a transaction id must be unique per row.
    "transaction_id": ("transaction_id", "txn_id", "tx_id", "transaction", "id"),
    "customer_id": (
        "customer_id",
        "customer_no",
        "customer_number",
        "customer",
        "client",
        "cust",
        "member",
        "user",
        "buyer",
        "account",
        "shopper",
    ),
    "ts": ("ts", "timestamp", "purchase_date", "purchased_at", "order_date", "created_at", "datetime", "date", "time", "day"),
    "amount": ("amount", "total", "revenue", "sales", "spend", "value", "price", "paid", "net", "gross"),
    "quantity": ("quantity", "qty", "units", "items", "count", "pieces", "pcs", "number_of", "num_", "copies"),
    "channel": ("channel", "source", "medium"),
    "category": ("category", "department", "segment", "product_group"),
    "payment_method": ("payment_method", "payment", "tender", "pay_method"),
}
# Which column families can hold each canonical column.
FAMILIES: dict[str, tuple[str, ...]] = {
    "transaction_id": ("integer",),
    "customer_id": ("text", "integer", "number"),
    "ts": ("timestamp", "timestamptz", "date", "text"),
    "amount": ("number", "integer", "text"),
    "quantity": ("integer", "number"),
    "channel": ("text",),
    "category": ("text",),
    "payment_method": ("text",),
}


def _hint_rank(canonical: str, name: str) -> int | None:
    lowered = name.lower()
    for rank, hint in enumerate(NAME_HINTS[canonical]):
        if lowered == hint:
            return rank
    for rank, hint in enumerate(NAME_HINTS[canonical]):
        if len(hint) > 2 and hint in lowered:
            return 100 + rank
    return None


def propose_mapping(columns: list[dict[str, object]], fixed: dict[str, str] | None = None) -> dict[str, str]:
    """Canonical column -> the user's column, from names, types and sample values; ``fixed`` (the user's --map) wins.

    A text column counts as a timestamp only when its samples read as one of
    the accepted forms. Each source column is used once.
    """
    fixed = dict(fixed or {})
    taken = set(fixed.values())
    mapping = dict(fixed)
    for canonical in NAME_HINTS:
        if canonical in mapping:
            continue
        best: tuple[int, str] | None = None
        for column in columns:
            name, family = str(column["name"]), str(column["family"])
            if name in taken or family not in FAMILIES[canonical]:
                continue
            samples = [str(v) for v in cast("list[object]", column.get("samples", []))]
            if canonical == "ts" and family == "text" and (not samples or any(parse_timestamp_text(v) is None for v in samples)):
                continue
            if canonical == "amount" and family == "text" and (not samples or not all(NUMBER_TEXT.fullmatch(v) for v in samples)):
                continue
            rank = _hint_rank(canonical, name)
            if rank is None:
                continue
            if best is None or rank < best[0]:
                best = (rank, name)
        if best is not None:
            mapping[canonical] = best[1]
            taken.add(best[1])
    if "quantity" not in mapping and (count := _count_like([c for c in columns if str(c["name"]) not in taken])):
        mapping["quantity"] = count
    return mapping


# Names of integer columns that hold codes, not counts.
_NOT_A_COUNT = re.compile(r"(^|_)(id|no|nr|key|code|zip|postcode|year|month|day|week|hour|store|shop|sku|ean|upc)$|^id_", re.IGNORECASE)


def _count_like(columns: list[dict[str, object]]) -> str | None:
    """The one integer column whose name is not a code's and whose sample values are small non-negative counts
    (a count of items the name hints did not catch, e.g. `cds`); None when there is none or more than one."""
    found = []
    for column in columns:
        name = str(column["name"])
        if str(column["family"]) != "integer" or _NOT_A_COUNT.search(name):
            continue
        samples = [str(v) for v in cast("list[object]", column.get("samples", []))]
        if samples and all(v.isdigit() and int(v) <= 10_000 for v in samples) and any(int(v) > 0 for v in samples):
            found.append(name)
    return found[0] if len(found) == 1 else None
