"""Row-level rules for raw transactions (framework-free).

Each rule names one property a good row has.  A row that breaks any rule is
quarantined with the names of every rule it broke, so nothing is dropped
silently and a user can see why each row was refused.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

import polars as pl

from ml_assets.lib.datagen import CATEGORIES, CHANNELS, PAYMENT_METHODS
from ml_assets.schema import RAW_COLUMNS

CUSTOMER_ID_PATTERN = r"^C[0-9]{1,12}$"
MAX_AMOUNT = 100_000.0
MAX_QUANTITY = 1_000


@dataclass(frozen=True)
class Rule:
    name: str
    description: str
    broken: pl.Expr  # true where the row breaks the rule


def rules_for_day(day_start: dt.datetime, day_end: dt.datetime) -> list[Rule]:
    rules = [
        Rule(f"{name}_not_null", f"{name} is present", pl.col(name).is_null()) for name, (_, required, _) in RAW_COLUMNS.items() if required
    ]
    amount = pl.col("amount")
    rules += [
        Rule("amount_finite", "amount is a finite number", amount.is_not_null() & ~amount.is_finite()),
        Rule("amount_positive", "amount > 0", amount.is_finite() & (amount <= 0)),
        Rule("amount_plausible", f"amount <= {MAX_AMOUNT:,.0f}", amount.is_finite() & (amount > MAX_AMOUNT)),
        Rule("quantity_in_range", f"1 <= quantity <= {MAX_QUANTITY}", (pl.col("quantity") < 1) | (pl.col("quantity") > MAX_QUANTITY)),
        Rule("channel_known", f"channel in {list(CHANNELS)}", pl.col("channel").is_not_null() & ~pl.col("channel").is_in(CHANNELS)),
        Rule("category_known", f"category in {list(CATEGORIES)}", pl.col("category").is_not_null() & ~pl.col("category").is_in(CATEGORIES)),
        Rule(
            "payment_method_known",
            f"payment_method is null or in {list(PAYMENT_METHODS)}",
            pl.col("payment_method").is_not_null() & ~pl.col("payment_method").is_in(PAYMENT_METHODS),
        ),
        Rule(
            "customer_id_well_formed",
            f"customer_id matches {CUSTOMER_ID_PATTERN}",
            pl.col("customer_id").is_not_null() & ~pl.col("customer_id").str.contains(CUSTOMER_ID_PATTERN),
        ),
        Rule(
            "ts_in_partition",
            "timestamp falls inside the partition's day",
            pl.col("ts").is_not_null() & ((pl.col("ts") < day_start) | (pl.col("ts") >= day_end)),
        ),
        # The first occurrence of an id is kept; later copies are quarantined.
        Rule(
            "transaction_id_unique",
            "transaction_id appears once",
            pl.col("transaction_id").is_not_null()
            & pl.col("transaction_id").is_duplicated()
            & ~pl.col("transaction_id").is_first_distinct(),
        ),
    ]
    return rules


def split_valid(frame: pl.DataFrame, day_start: dt.datetime, day_end: dt.datetime) -> tuple[pl.DataFrame, pl.DataFrame]:
    """Return (valid rows, rejected rows with a ``rejected_reasons`` column).

    Every input row lands in exactly one of the two outputs.
    """
    rules = rules_for_day(day_start, day_end)
    flags = frame.with_columns([r.broken.fill_null(False).alias(f"__{r.name}") for r in rules])
    flag_cols = [f"__{r.name}" for r in rules]
    flags = flags.with_columns(
        pl.concat_list([pl.when(pl.col(f"__{r.name}")).then(pl.lit(r.name)) for r in rules])
        .list.drop_nulls()
        .list.join(";")
        .alias("rejected_reasons")
    )
    bad = flags["rejected_reasons"] != ""
    valid = flags.filter(~bad).drop([*flag_cols, "rejected_reasons"])
    rejected = flags.filter(bad).drop(flag_cols)
    return valid, rejected


def rule_counts(rejected: pl.DataFrame) -> dict[str, int]:
    if rejected.is_empty():
        return {}
    counts = rejected.select(pl.col("rejected_reasons").str.split(";").explode()).group_by("rejected_reasons").len()
    return {r: int(n) for r, n in counts.sort("rejected_reasons").iter_rows()}
