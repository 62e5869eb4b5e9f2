"""The generator: seeded, realistic, sized on demand, drifting only where told."""

from __future__ import annotations

import datetime as dt

import polars as pl

from lib.datagen import CATEGORIES, CHANNELS, GeneratorConfig, customers_for_transactions, generate_transactions

START, END = dt.date(2025, 1, 1), dt.date(2025, 4, 30)


def test_same_seed_same_data_other_seed_other_data() -> None:
    cfg = GeneratorConfig(start=START, end=END, customers=400, seed=5)
    a, b = generate_transactions(cfg), generate_transactions(cfg)
    assert a.equals(b)
    c = generate_transactions(GeneratorConfig(start=START, end=END, customers=400, seed=6))
    assert not a.equals(c)


def test_rows_follow_the_raw_schema_and_stay_in_range() -> None:
    from lib.schema import RAW_SCHEMA

    tx = generate_transactions(GeneratorConfig(start=START, end=END, customers=500))
    assert dict(tx.schema) == RAW_SCHEMA
    assert tx["transaction_id"].is_unique().all()
    assert tx["ts"].min() >= dt.datetime(2025, 1, 1) and tx["ts"].max() < dt.datetime(2025, 5, 1)
    assert (tx["amount"] > 0).all() and (tx["quantity"] >= 1).all()
    assert set(tx["channel"]) <= set(CHANNELS) and set(tx["category"]) <= set(CATEGORIES)
    assert tx["customer_id"].str.contains(r"^C\d{8}$").all()


def test_size_is_configurable_by_transactions() -> None:
    for target, end in ((60_000, END), (300_000, dt.date(2025, 12, 31))):
        customers = customers_for_transactions(target, START, end)
        tx = generate_transactions(GeneratorConfig(start=START, end=end, customers=customers))
        assert 0.9 * target < tx.height < 1.1 * target


def test_weekends_are_busier_than_weekdays() -> None:
    tx = generate_transactions(GeneratorConfig(start=START, end=END, customers=2000))
    per_day = tx.group_by(pl.col("ts").dt.date().alias("day")).len().with_columns(pl.col("day").dt.weekday().alias("wd"))
    weekend = per_day.filter(pl.col("wd") >= 6)["len"].mean()
    weekday = per_day.filter(pl.col("wd") <= 4)["len"].mean()
    assert weekend > 1.15 * weekday


def test_behaviour_shifts_at_the_drift_date_only() -> None:
    drift = dt.date(2025, 3, 15)
    tx = generate_transactions(GeneratorConfig(start=START, end=END, customers=2000, drift_date=drift))
    cut = dt.datetime.combine(drift, dt.time())
    before = tx.filter(pl.col("ts") < cut)
    early, late = before.filter(pl.col("ts") < dt.datetime(2025, 2, 7)), before.filter(pl.col("ts") >= dt.datetime(2025, 2, 7))
    after = tx.filter(pl.col("ts") >= cut)
    # Stationary before the shift...
    assert abs(early["amount"].median() / late["amount"].median() - 1) < 0.05
    # ...and clearly different after it: larger baskets, more mobile.
    assert after["amount"].median() > 1.4 * before["amount"].median()
    assert (after["channel"] == "mobile").mean() > (before["channel"] == "mobile").mean() + 0.2


def test_customers_about_to_churn_slow_down() -> None:
    # Customers who stopped buying well before the end (they churned) bought
    # less in their final month than in the two months before it.
    tx = generate_transactions(GeneratorConfig(start=START, end=END, customers=3000))
    last = tx.group_by("customer_id").agg(pl.col("ts").max().alias("last"), pl.col("ts").min().alias("first"))
    churned = last.filter(
        pl.col("last").is_between(dt.datetime(2025, 3, 15), dt.datetime(2025, 3, 31)) & (pl.col("first") < dt.datetime(2025, 1, 5))
    )
    joined = tx.join(churned, on="customer_id")
    days_before_end = (pl.col("last") - pl.col("ts")).dt.total_days()
    # The last purchase itself is excluded: it is in the final month by construction.
    final = joined.filter((days_before_end < 30) & (days_before_end > 0))["amount"].sum()
    previous = joined.filter((days_before_end >= 30) & (days_before_end < 90))["amount"].sum() / 2
    assert churned.height > 30
    assert final < 0.8 * previous


def test_injected_bad_rows_each_break_one_rule() -> None:
    from lib.datagen import DEFECTS, inject_bad_rows
    from lib.expectations import RawContract, quarantine

    good = generate_transactions(GeneratorConfig(start=START, end=START, customers=300))
    mixed = inject_bad_rows(good, 14, seed=1)
    assert mixed.height == good.height + 14 and mixed["transaction_id"].is_unique().all()
    # The zero-amount defect is a defect only where the user asks for it (source.zero_amount: quarantine).
    result = quarantine(mixed, [START], set(), dt.datetime(2030, 1, 1), RawContract(zero_amount="quarantine"))
    assert result.rejected.height == 14 and result.valid.height == good.height
    assert len(DEFECTS) == 7
    assert set(result.rejected["rejected_reasons"]) == {
        "amount_positive",
        "amount_plausible",
        "quantity_in_range",
        "amount_finite",
        "customer_id_well_formed",
    }


def test_every_planted_defect_fits_the_demo_table(tmp_path) -> None:
    """`churn demo` writes the defects into its own table (NOT NULL columns; SQLite stores NaN as NULL): none may be refused there."""
    from lib.datagen import inject_bad_rows
    from resources import SqlWarehouse

    wh = SqlWarehouse(url=f"sqlite:///{tmp_path / 'w.sqlite'}")
    wh.create_table()
    frame = inject_bad_rows(generate_transactions(GeneratorConfig(start=START, end=START, customers=200)), 21, seed=3)
    assert wh.append(frame) == frame.height
