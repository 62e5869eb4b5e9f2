"""Feast point-in-time retrieval (`get_historical_features`) for a training set, against a bare polars as-of join.

Sizes: `--quick` (2,000 entity rows), demo-like (60,000 entity rows over 26
weekly snapshots) and 1 M entity rows (25 snapshots x 40,000 customers), each
over a lake of daily customer_features Parquet files laid out as the asset
writes them (365 files at the full sizes). Baseline in the same run: polars
reading the same files and `join_asof` on (customer, timestamp) with the same
1-day tolerance: what the join costs without Feast.

    python -m benchmarks.bench_feast [--quick] [--with-dask]

`--with-dask` also times Feast's default file engine (dask) on the smallest
size only: it reads every file for every request and took minutes here.
"""

from __future__ import annotations

import argparse
import datetime as dt
import shutil
import tempfile
import time
from pathlib import Path

from benchmarks.common import Timing, feature_snapshot, machine, table


def _lake(root: Path, days: int, customers: int) -> list[dt.date]:
    import numpy as np

    from lib.features import FEATURE_COLUMNS

    folder = root / "customer_features"
    folder.mkdir(parents=True)
    rng = np.random.default_rng(5)
    ids = [f"C{i:08d}" for i in range(customers)]
    start = dt.date(2024, 7, 1)
    dates = [start + dt.timedelta(days=i) for i in range(days)]
    for day in dates:
        frame = feature_snapshot(day, ids, {c: rng.random(customers) for c in FEATURE_COLUMNS})
        frame.write_parquet(folder / f"{day.isoformat()}.parquet", compression="zstd")
    return dates


def _entities(dates: list[dt.date], customers: int, snapshots: int, per_snapshot: int):
    import numpy as np
    import polars as pl

    from lib.features import cutoff_for

    rng = np.random.default_rng(9)
    picked = dates[-1 - 30 :: -7][:snapshots]
    parts = []
    for day in picked:
        chosen = rng.choice(customers, size=per_snapshot, replace=False)
        parts.append(pl.DataFrame({"customer_id": [f"C{i:08d}" for i in chosen], "event_timestamp": [cutoff_for(day)] * per_snapshot}))
    return pl.concat(parts).with_columns(pl.col("event_timestamp").cast(pl.Datetime("us")), pl.lit(1).cast(pl.Int8).alias("churned"))


def _polars_asof(lake: Path, entities):
    import polars as pl

    from lib.features import FEATURE_COLUMNS

    features = pl.scan_parquet(str(lake / "customer_features" / "*.parquet")).select("customer_id", "feature_timestamp", *FEATURE_COLUMNS)
    return (
        entities.lazy()
        .sort("event_timestamp")
        .join_asof(
            features.sort("feature_timestamp"),
            left_on="event_timestamp",
            right_on="feature_timestamp",
            by="customer_id",
            strategy="backward",
            tolerance="1d",
        )
        .collect()
    )


def main(argv: list[str] | None = None) -> str:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--with-dask", action="store_true")
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args(argv)
    from resources.feature_store import FeatureStoreResource

    sizes = [("quick: 2,000 entity rows, 60 days x 1,000 customers", 60, 1_000, 4, 500)]
    if not args.quick:
        sizes = [
            ("demo-like: 60,000 entity rows, 365 days x 10,000 customers", 365, 10_000, 26, 2_308),
            ("1 M entity rows, 365 days x 40,000 customers", 365, 40_000, 25, 40_000),
        ]
    repeat = 1 if args.quick else args.repeat
    rows, notes = [], []
    for label, days, customers, snapshots, per in sizes:
        root = Path(tempfile.mkdtemp(prefix="bench-feast-"))
        try:
            dates = _lake(root / "lake", days, customers)
            entities = _entities(dates, customers, snapshots, per)
            base = Timing(f"{label}: polars join_asof", [])
            feast = Timing(f"{label}: Feast get_historical_features (duckdb)", [])
            store = FeatureStoreResource(
                repo_path=str(root / "repo"),
                lake_root=str(root / "lake"),
                registry_path=str(root / "feast" / "registry.db"),
                online_path=str(root / "feast" / "online.db"),
            )
            store.apply()
            for _ in range(repeat):
                t0 = time.perf_counter()
                expected = _polars_asof(root / "lake", entities)
                base.samples.append(time.perf_counter() - t0)
                t0 = time.perf_counter()
                got = store.historical(entities)
                feast.samples.append(time.perf_counter() - t0)
            assert got.height == expected.height == entities.height, (got.height, expected.height, entities.height)
            assert got["recency_days"].null_count() == expected["recency_days"].null_count() == 0
            rows += [base.row(), feast.row(base)]
            if args.with_dask and days == sizes[0][1]:
                slow = FeatureStoreResource(
                    repo_path=store.repo_path,
                    lake_root=store.lake_root,
                    registry_path=store.registry_path,
                    online_path=store.online_path,
                    offline_store="dask",
                )
                t0 = time.perf_counter()
                slow.historical(entities.head(min(entities.height, 5_000)))
                dask = Timing(f"{label}: Feast default dask engine, first 5,000 entity rows", [time.perf_counter() - t0])
                rows.append(dask.row(base))
            notes.append(f"{label}: {entities.height:,} entity rows over {days * customers:,} feature rows")
        finally:
            shutil.rmtree(root, ignore_errors=True)
    out = table("Feast point-in-time retrieval", rows) + "\n\n" + "\n".join(notes) + "\n\n" + machine()
    print(out)
    return out


if __name__ == "__main__":
    main()
