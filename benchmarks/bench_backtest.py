"""What each candidate pays for its margin over BG/NBD: the baselines run again (the previous path, the baseline of
this comparison) against BG/NBD re-scored from `baseline_model`'s stored fits (`lib.backtest.bgnbd_backtest`).

A training run has three candidates (LightGBM, the network, the stack), so a training run saves three times the
difference. Same training frame (a generated retail log's weekly snapshots, three cutoffs four weeks apart), same
process; the two paths' folds and scored rows are checked equal.

    python -m benchmarks.bench_backtest [--quick] [--customers N]
"""

from __future__ import annotations

import argparse
import datetime as dt
import time

from benchmarks.common import machine

CANDIDATES = 3


def main(argv: list[str] | None = None) -> str:
    import numpy as np

    from lib.backtest import baseline_backtests, bgnbd_backtest, bgnbd_fits, labelled_snapshots, plan_backtest, weekly_snapshots
    from lib.datagen import RetailConfig, generate_retail, retail_as_transactions
    from lib.features import feature_columns

    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--customers", type=int, default=30_000)
    args = parser.parse_args(argv)
    customers = 5_000 if args.quick else args.customers
    start, end, horizon = dt.date(2024, 1, 1), dt.date(2025, 6, 30), 30
    tx = retail_as_transactions(generate_retail(RetailConfig(start=start, end=end, customers=customers, seed=17)))
    days = weekly_snapshots(start, end - dt.timedelta(days=horizon), 26, 180)
    frame = labelled_snapshots(tx, days, horizon, feature_columns({"quantity"}))
    folds = plan_backtest(days, horizon, 3, 28)

    baseline_backtests(frame, folds[:1], horizon)  # imports and first calls, paid by neither path
    t0 = time.perf_counter()
    (_, before), _ = baseline_backtests(frame, folds, horizon)
    t1 = time.perf_counter()
    fits = bgnbd_fits(frame, folds)
    (_, judged), _ = baseline_backtests(frame, folds, horizon, fits)
    t2 = time.perf_counter()
    now = bgnbd_backtest(frame, folds, horizon, judged.variant, fits)
    t3 = time.perf_counter()
    same = now.folds == judged.folds and all(np.array_equal(a[1], b[1]) for a, b in zip(now.scored, judged.scored, strict=True))
    previous, current = t1 - t0, t3 - t2
    lines = [
        "",
        f"### A candidate's BG/NBD margin ({frame.height:,} training rows of {customers:,} customers, {len(folds)} cutoffs)",
        "",
        "| path | s per candidate | s per training run (3 candidates) | vs baseline |",
        "|---|---|---|---|",
        f"| every baseline again, BG/NBD refitted at each cutoff (baseline, the previous path) | {previous:.2f} "
        f"| {CANDIDATES * previous:.1f} | baseline |",
        f"| BG/NBD re-scored from baseline_model's fits (`bgnbd_backtest`) | {current:.2f} | {CANDIDATES * current:.1f} "
        f"| {previous / current:.1f}x faster |",
        "",
        f"baseline_model's own backtest, fitting once for every ranking: {t2 - t1:.2f} s. Same folds and scored rows as "
        f"baseline_model's BG/NBD: {'yes' if same else 'NO'}; ranking {now.variant}.",
    ]
    out = "\n".join(lines) + f"\n\n{machine()}"
    print(out)
    return out


if __name__ == "__main__":
    main()
