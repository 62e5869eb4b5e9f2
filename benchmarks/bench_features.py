"""Features at scale: `customer_features` for one day over N transactions (Parquet in, features out),
against the bare polars aggregation (group by customer: count, sum, max ts) on the same Parquet file.

Each variant runs in a fresh interpreter so its peak memory is its own.
"""

from __future__ import annotations

import argparse
import datetime as dt
import tempfile
from pathlib import Path

from benchmarks.common import Timing, run_python, table

DAY = dt.date(2025, 6, 30)

BARE = """
import json, time, polars as pl
t = time.perf_counter()
out = pl.scan_parquet({path!r}).group_by("customer_id").agg(pl.len(), pl.col("amount").sum(), pl.col("ts").max()).collect()
print(json.dumps({{"s": time.perf_counter() - t, "rows": out.height}}))
"""

FULL = """
import json, time, datetime as dt, polars as pl
from ml_assets.lib.features import snapshot_features
t = time.perf_counter()
out = snapshot_features(pl.scan_parquet({path!r}), dt.date({y}, {m}, {d}))
print(json.dumps({{"s": time.perf_counter() - t, "rows": out.height}}))
"""


def main(argv: list[str] | None = None) -> str:
    from ml_assets.lib.datagen import GeneratorConfig, generate_transactions

    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--customers", type=int, default=1_000_000, help="visible customers (about 10 M transactions at the default)")
    args = parser.parse_args(argv)
    customers = 5_000 if args.quick else args.customers
    n = 2 if args.quick else 3
    with tempfile.TemporaryDirectory() as tmp:
        path = str(Path(tmp) / "transactions.parquet")
        # 180 days: exactly the features' lookback window, so every row is used.
        # Rate chosen so that 1 M customers make about 10 M transactions.
        tx = generate_transactions(GeneratorConfig(start=DAY - dt.timedelta(days=179), end=DAY, customers=customers, mean_daily_rate=0.075))
        tx.write_parquet(path)
        n_tx, n_cust = tx.height, tx["customer_id"].n_unique()
        del tx
        bare, full, mem = [], [], {}
        for _ in range(n):
            b = run_python(BARE.format(path=path))
            bare.append(b["s"])
            f = run_python(FULL.format(path=path, y=DAY.year, m=DAY.month, d=DAY.day))
            full.append(f["s"])
        # Peak RSS of children is a high-water mark over all of them: measure each alone once more.
        mem["bare"] = _peak(BARE.format(path=path))
        mem["full"] = _peak(FULL.format(path=path, y=DAY.year, m=DAY.month, d=DAY.day))
    b, f = Timing("bare polars aggregation", bare), Timing("customer_features (all windows)", full)
    out = table(f"Features: {n_tx:,} transactions of {n_cust:,} customers (target: within 3x bare, under 2 GB)", [b.row(), f.row(b)])
    out += f"\n\npeak memory: bare {mem['bare']:.0f} MB, customer_features {mem['full']:.0f} MB"
    print(out)
    return out


def _peak(code: str) -> float:
    """Peak RSS (MB) of a fresh interpreter that runs `code`."""
    repo = str(Path(__file__).resolve().parents[1])
    wrapper = f"import json, sys\nsys.path.insert(0, {repo!r})\nfrom benchmarks.common import peak_rss_mb\nexec({code!r})\nprint(json.dumps({{'peak': peak_rss_mb()}}))"
    return run_python(wrapper)["peak"]


if __name__ == "__main__":
    main()
