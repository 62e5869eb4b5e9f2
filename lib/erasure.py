"""Pure rules of erasure: which rows of a lake table are one customer's, and which ids the registry says were erased.

`ml_assets/governance/erasure.py` applies them to every file the pipeline writes;
ingestion applies `erased_mask` so that an erased customer's rows still in the
source are not read back in.
"""

from __future__ import annotations

import datetime as dt

import polars as pl

from lib.governance import id_hashes

ID_COLUMN = "customer_id"


def customer_mask(frame: pl.DataFrame, customer_id: str) -> pl.Series | None:
    """True for the rows of `customer_id`; None when the table holds no customer ids.

    The id column may be text (the canonical type), a number in a set-aside
    file that kept the source's type, or text with white space around it in
    the quarantine (the raw value, as the source had it): all are matched.
    """
    if ID_COLUMN not in frame.columns:
        return None
    text = frame[ID_COLUMN].cast(pl.String, strict=False)
    return ((text == customer_id) | (text.str.strip_chars() == customer_id.strip())).fill_null(False)


def without_customer(frame: pl.DataFrame, customer_id: str) -> tuple[pl.DataFrame, int]:
    """The frame without the customer's rows, and how many were removed."""
    mask = customer_mask(frame, customer_id)
    if mask is None or not mask.any():
        return frame, 0
    return frame.filter(~mask), int(mask.sum())


def erased_mask(frame: pl.DataFrame, erased: set[str], key: str | None = None) -> pl.Series:
    """True for rows whose customer id's erasure hash (keyed by `key`, or plain) is in `erased` (ingestion drops them)."""
    if not erased or ID_COLUMN not in frame.columns or frame.is_empty():
        return pl.Series([False] * frame.height, dtype=pl.Boolean)
    text = frame[ID_COLUMN].cast(pl.String, strict=False).str.strip_chars()
    # One hash per distinct id, not per row.
    hit = {v for v in text.unique().drop_nulls().to_list() if any(h in erased for h in id_hashes(v, key))}
    return text.is_in(list(hit)).fill_null(False) if hit else pl.Series([False] * frame.height, dtype=pl.Boolean)


# Partitioned tables that retention expires: the transaction rows themselves. Features, training
# sets and predictions are derived, per snapshot, and go with the next erasure or by hand.
RETAINED_TABLES = ("raw_transactions", "validated_transactions", "quarantined_transactions")


def expired_partitions(names: list[str], today: dt.date, retention_days: int) -> list[str]:
    """Partition file stems (YYYY-MM-DD) older than `retention_days` before `today`; other names are left alone."""
    cutoff = today - dt.timedelta(days=retention_days)
    out = []
    for name in names:
        try:
            day = dt.date.fromisoformat(name)
        except ValueError:
            continue
        if day < cutoff:
            out.append(name)
    return out
