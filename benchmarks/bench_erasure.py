"""Erasing one customer from a lake: `churn erase`'s lake pass against reading every file whole once.

Setup (a temporary folder): raw, validated and customer_features partitions
for D days, C customers a day (the Parquet layout the assets write). The
customer to erase appears on a tenth of the days, as a regular buyer would.
Baseline in the same run: decoding every file of the lake once, the least any
erasure that looks at whole files must do.

    python -m benchmarks.bench_erasure [--quick] [--days D] [--customers C]
"""

from __future__ import annotations

import argparse
import datetime as dt
import shutil
import tempfile
import time
from pathlib import Path

from benchmarks.common import machine


def _lake(root: Path, days: int, customers: int) -> str:
    import numpy as np
    import polars as pl

    rng = np.random.default_rng(5)
    start = dt.date(2025, 1, 1)
    for i in range(days):
        day = start + dt.timedelta(days=i)
        ids = [f"C{n:08d}" for n in rng.choice(customers * 10, size=customers, replace=False) if n != 7]
        if i % 10 == 0:
            ids[0] = "C00000007"  # the customer to erase
        frame = pl.DataFrame(
            {
                "customer_id": ids,
                "ts": [dt.datetime.combine(day, dt.time(12))] * len(ids),
                "amount": rng.random(len(ids)) * 100,
                **{f"f{k}": rng.random(len(ids)) for k in range(20)},
            }
        )
        for table in ("raw_transactions", "validated_transactions", "customer_features"):
            folder = root / "lake" / table
            folder.mkdir(parents=True, exist_ok=True)
            frame.write_parquet(folder / f"{day.isoformat()}.parquet", compression="zstd")
    return str(root / "lake")


def _read_all(lake: str) -> int:
    import polars as pl

    return sum(pl.read_parquet(p).height for p in Path(lake).rglob("*.parquet"))


def main(argv: list[str] | None = None) -> str:
    from ml_assets.governance.erasure import erase_from_lake

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--days", type=int, default=365)
    parser.add_argument("--customers", type=int, default=20_000)
    args = parser.parse_args(argv)
    days, customers = (20, 2_000) if args.quick else (args.days, args.customers)
    root = Path(tempfile.mkdtemp(prefix="bench-erasure-"))
    try:
        lake = _lake(root, days, customers)
        size_mb = sum(p.stat().st_size for p in Path(lake).rglob("*.parquet")) / 2**20
        erase_from_lake(lake, "nobody")  # warm-up: imports and the file system cache, for both passes
        _read_all(lake)
        t0 = time.perf_counter()
        rows = _read_all(lake)
        baseline = time.perf_counter() - t0
        t0 = time.perf_counter()
        files, by_table = erase_from_lake(lake, "C00000007")
        erase = time.perf_counter() - t0
    finally:
        shutil.rmtree(root, ignore_errors=True)
    out = "\n".join(
        [
            "",
            f"### Erasure of one customer: {3 * days} Parquet files, {rows:,} rows, {size_mb:.0f} MB",
            "",
            "| pass | seconds | vs baseline |",
            "|---|---|---|",
            f"| baseline: every file decoded whole once | {baseline:.3f} | 1.00x |",
            f"| churn erase, lake pass ({files} files rewritten, {sum(by_table.values())} rows removed) | {erase:.3f} | {erase / baseline:.2f}x |",
            "",
            machine(),
        ]
    )
    print(out)
    return out


if __name__ == "__main__":
    main()
