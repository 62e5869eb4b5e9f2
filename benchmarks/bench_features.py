"""Features for one day at 1 and at 3 years of history, the same day size.

The daily run (`customer_features` for one day) folds the day into the carried
per-customer state and reads the 90-day window: its cost should follow the
day's transactions and the number of customers, not the length of history.
The baseline, measured in the same run, is the same snapshot rebuilt from the
whole history (what the first run, or a run after a gap, does), which grows
with history.
"""

from __future__ import annotations

import argparse
import datetime as dt

import polars as pl

from benchmarks.common import repeat, table

DAY = dt.date(2025, 6, 30)


def main(argv: list[str] | None = None) -> str:
    from lib.datagen import GeneratorConfig, generate_transactions
    from lib.features import WINDOW_DAYS, cutoff_for, fold_snapshots, snapshots_features
    from lib.history import state_from_history

    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--customers", type=int, default=300_000, help="visible customers over 3 years (about 10 M transactions)")
    args = parser.parse_args(argv)
    customers = 5_000 if args.quick else args.customers
    n = 2 if args.quick else 3
    # A steady-state population: every day has about the same number of purchases.
    tx = generate_transactions(
        GeneratorConfig(start=DAY - dt.timedelta(days=3 * 365 - 1), end=DAY, customers=customers, mean_daily_rate=0.05)
    )
    channels = ("web", "mobile", "store")
    rows, timings = [], {}
    for years in (1, 3):
        history = tx.filter(pl.col("ts") >= cutoff_for(DAY) - dt.timedelta(days=365 * years))
        before = state_from_history(history.filter(pl.col("ts") < cutoff_for(DAY - dt.timedelta(days=1))), channels)
        window = history.filter(pl.col("ts") >= cutoff_for(DAY) - dt.timedelta(days=WINDOW_DAYS))
        day_rows = history.filter(pl.col("ts") >= cutoff_for(DAY - dt.timedelta(days=1))).height
        daily = repeat(f"{years} y: daily run (carried state + day + window)", lambda b=before, w=window: fold_snapshots(b, w, [DAY]), n)
        rebuild = repeat(f"{years} y: rebuilt from the whole history", lambda h=history: snapshots_features(h, [DAY]), n)
        timings[years] = (daily, rebuild)
        rows.append((years, history.height, day_rows, before.height))
    d1, r1 = timings[1]
    d3, r3 = timings[3]
    out = table(
        "Features for one day (target: the daily run grows no faster than the customers in the state; rebuilding grows with history)",
        [d1.row(), d3.row(d1), r1.row(d1), r3.row(d1)],
    )
    out += "\n\n" + "\n".join(
        f"{y} y of history: {h:,} transactions, {d:,} on the day, {c:,} customers in the state" for y, h, d, c in rows
    )
    out += f"\ndaily run 3 y / 1 y: {d3.median / d1.median:.2f}x (customers {rows[1][3] / rows[0][3]:.2f}x); rebuild 3 y / 1 y: {r3.median / r1.median:.2f}x"
    print(out)
    return out


if __name__ == "__main__":
    main()
