"""Online store load: the bulk SQLite engine against Feast's own writer, Redis beside them, in the same run.

A lake of two daily customer_features snapshots (the asset's Parquet layout,
25 double features, customers in random order as a real snapshot has them);
each writer loads the first day into an empty store, then the second day
over it (the daily case: every row updated). Each writer runs in a fresh
interpreter, so its peak memory is its own. After the SQLite loads, the two
tables are compared row by row (every column and its SQLite type).

    python -m benchmarks.bench_online [--quick] [--customers N] [--no-redis]
"""

from __future__ import annotations

import argparse
import datetime as dt
import shutil
import sqlite3
import tempfile
import uuid
from pathlib import Path

from benchmarks.common import feature_snapshot, machine, run_python

DAYS = [dt.date(2025, 3, 1), dt.date(2025, 3, 2)]

CHILD = """
import datetime as dt, json, logging, time, warnings
warnings.filterwarnings("ignore")
logging.disable(logging.WARNING)
from benchmarks.common import peak_rss_mb
from lib.features import cutoff_for
from resources.feature_store import FeatureStoreResource
args = __ARGS__
store = FeatureStoreResource(**args["store"])
store.apply()
times = []
for day in args["days"]:
    at = cutoff_for(dt.date.fromisoformat(day))
    t0 = time.perf_counter()
    store.materialize(at - dt.timedelta(hours=12), at + dt.timedelta(hours=12))
    times.append(time.perf_counter() - t0)
served = store.online(args["probe"])
if args["teardown"]:
    store.store().teardown()
print(json.dumps({"times": times, "rss_mb": peak_rss_mb(), "served": served.height - served["recency_days"].null_count()}))
"""


def _lake(root: Path, customers: int) -> list[str]:
    import numpy as np

    from lib.features import FEATURE_COLUMNS

    folder = root / "customer_features"
    folder.mkdir(parents=True)
    rng = np.random.default_rng(11)
    ids = [f"C{i:08d}" for i in rng.permutation(customers)]
    for day in DAYS:
        frame = feature_snapshot(day, ids, {c: rng.gamma(2.0, 20.0, customers) for c in FEATURE_COLUMNS})
        frame.write_parquet(folder / f"{day.isoformat()}.parquet")
    return ids[:100]


def _load(root: Path, lake: Path, name: str, probe: list[str], **store: object) -> dict:
    folder = root / name
    args = {
        "store": {
            "repo_path": str(folder / "repo"),
            "lake_root": str(lake),
            "registry_path": str(folder / "registry.db"),
            "online_path": str(folder / "online.db"),
            **store,
        },
        "days": [d.isoformat() for d in DAYS],
        "probe": probe,
        "teardown": store.get("online_store") == "redis",
    }
    return run_python(CHILD.replace("__ARGS__", repr(args)))


def _rows(path: Path) -> list[tuple]:
    query = (
        "SELECT entity_key, feature_name, value, value_text, vector_value, event_ts, typeof(event_ts), created_ts "
        "FROM churn_customer_features ORDER BY entity_key, feature_name"
    )
    with sqlite3.connect(path) as connection:
        return connection.execute(query).fetchall()


def main(argv: list[str] | None = None) -> str:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--customers", type=int, default=280_000)
    parser.add_argument("--no-redis", action="store_true")
    args = parser.parse_args(argv)
    from resources.feature_store import tcp_reachable

    customers = 2_000 if args.quick else args.customers
    root = Path(tempfile.mkdtemp(prefix="bench-online-"))
    try:
        probe = _lake(root / "lake", customers)
        runs = {
            "SQLite, Feast's writer (baseline)": _load(root, root / "lake", "feast", probe, online_writer="feast"),
            "SQLite, bulk engine": _load(root, root / "lake", "bulk", probe, online_writer="bulk"),
        }
        if not args.no_redis and tcp_reachable("127.0.0.1", 6379):
            runs["Redis, Feast's writer"] = _load(
                root,
                root / "lake",
                "redis",
                probe,
                online_store="redis",
                redis_url="127.0.0.1:6379",
                project=f"bench_{uuid.uuid4().hex[:8]}",
            )
        identical = _rows(root / "feast" / "online.db") == _rows(root / "bulk" / "online.db")
    finally:
        shutil.rmtree(root, ignore_errors=True)
    base = runs["SQLite, Feast's writer (baseline)"]
    lines = [
        f"### Online store load, {customers:,} customers x 25 features",
        "",
        "| writer | first day, empty store (s) | next day, over it (s) | vs baseline (next day) | peak RSS (MB) | probe served |",
        "|---|---|---|---|---|---|",
    ]
    for label, run in runs.items():
        first, second = run["times"]
        ratio = "baseline" if run is base else f"{base['times'][1] / second:.2f}x faster"
        lines.append(f"| {label} | {first:.2f} | {second:.2f} | {ratio} | {run['rss_mb']:.0f} | {run['served']} of {len(probe)} |")
    lines += ["", f"SQLite tables identical row by row (bulk vs Feast's writer): {'yes' if identical else 'NO'}", "", machine()]
    out = "\n".join(lines)
    print(out)
    if not identical:
        raise SystemExit("the bulk engine's table differs from Feast's writer's")
    return out


if __name__ == "__main__":
    main()
