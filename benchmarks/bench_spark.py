"""One day of features and scoring on local Spark beside the polars path, at 1 M and 10 M transactions a year.

For each scale: a year of generated transactions written to a lake as the
validated day files, the carried state of the day before stored as the
features asset stores it. Then, each in a fresh process (peak memory apart):

- polars: the daily features run (state + the day + its 90-day window, written
  as the day's file) and the champion-shaped LightGBM scoring of that day's
  customers through onnxruntime (``lib.export.score_frame``);
- spark (``local[*]``): the same through ``lib.spark.daily.run_features``
  (including the great-expectations suite on Spark and the per-day figures)
  and ``lib.spark.scoring.score_features`` (ONNX inside ``mapInArrow``).

Peak memory: the polars process's own; for Spark the driver's Python process
plus the JVM (driver and executors, one process in local mode) and its Python
workers, sampled every 0.2 s. Then a cost model: the per-row core-seconds
measured at 10 M (2 cores busy: wall x 2, an upper bound) applied to 1 B
transactions a year and 50 M customers.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import sys
import tempfile
from pathlib import Path

from benchmarks.common import machine

END = dt.date(2025, 6, 30)
START = END - dt.timedelta(days=364)

CHILD = r"""
import datetime as dt, json, sys, threading, time, warnings
warnings.filterwarnings("ignore")
from pathlib import Path
import polars as pl
from benchmarks.common import peak_rss_mb
engine, root, day, columns = sys.argv[1], Path(sys.argv[2]), dt.date.fromisoformat(sys.argv[3]), tuple(json.loads(sys.argv[4]))
channels = ("web", "mobile", "store")
window = sorted((root / "validated").glob("*.parquet"))
window = [p for p in window if day - dt.timedelta(days=89) <= dt.date.fromisoformat(p.stem) <= day]
onnx = (root / "model.onnx").read_bytes()
out = {"engine": engine}
if engine == "polars":
    from lib.export import onnx_session, score_frame
    from lib.features import fold_snapshots
    t0 = time.perf_counter()
    state = pl.read_parquet(root / "state.parquet")
    tx = pl.concat([pl.read_parquet(p) for p in window])
    frames, after = fold_snapshots(state, tx, [day], columns, channels)
    frames[0].write_parquet(root / "polars_features.parquet", compression="zstd")
    after.write_parquet(root / "polars_state.parquet", compression="zstd")
    out["features_s"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    scored = score_frame(onnx_session(onnx), pl.read_parquet(root / "polars_features.parquet"), columns, "v")
    scored.write_parquet(root / "polars_scores.parquet")
    out["scoring_s"] = time.perf_counter() - t0
    out["rows"] = scored.height
    out["peak_mb"] = peak_rss_mb()
else:
    import hashlib, psutil
    from upath import UPath
    from lib.spark.daily import FeatureInputs, run_features
    from lib.spark.lake import read_days, write_day
    from lib.spark.scoring import ShippedModel, score_features
    from resources import ComputeResource
    me = psutil.Process()
    peak = {"mb": 0.0}
    done = threading.Event()
    def sample():
        while not done.is_set():
            try:
                total = sum(p.memory_info().rss for p in [me, *me.children(recursive=True)])
            except psutil.Error:
                continue
            peak["mb"] = max(peak["mb"], total / 2**20)
            time.sleep(0.2)
    threading.Thread(target=sample, daemon=True).start()
    t0 = time.perf_counter()
    spark = ComputeResource(engine="spark").session()
    spark.range(1).count()
    out["session_s"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    run = run_features(spark, FeatureInputs(UPath(root / "state.parquet"), [], [UPath(p) for p in window]), [day],
                       lambda d: UPath(root / "spark_features.parquet"), UPath(root / "spark_state.parquet"), columns, channels)
    out["features_s"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    model = ShippedModel("v", hashlib.sha256(onnx).hexdigest(), onnx, columns)
    served, _ = score_features(read_days(spark, [UPath(root / "spark_features.parquet")]), [model])
    write_day(served, UPath(root / "spark_scores.parquet"))
    out["scoring_s"] = time.perf_counter() - t0
    out["rows"] = run.days[day].rows
    done.set()
    out["peak_mb"] = peak["mb"]
print(json.dumps(out))
"""


def _prepare(root: Path, transactions: int) -> tuple[tuple[str, ...], int, int]:
    """The lake of one scale: validated day files, the state of the day before END, a champion-shaped model."""
    import lightgbm as lgb
    import numpy as np
    import polars as pl

    from lib.datagen import GeneratorConfig, customers_for_transactions, generate_transactions
    from lib.export import lgbm_to_onnx
    from lib.features import cutoff_for, feature_columns, snapshot_features
    from lib.frames import split_by_day
    from lib.history import state_from_history
    from lib.training import feature_matrix, float32_exact_thresholds

    customers = customers_for_transactions(transactions, START, END)
    tx = generate_transactions(GeneratorConfig(start=START, end=END, customers=customers, seed=11))
    tx = tx.with_columns(pl.col("ts").cast(pl.Datetime("us")))
    (root / "validated").mkdir(parents=True)
    for day, part in split_by_day(tx.sort("ts"), "ts").items():
        part.write_parquet(root / "validated" / f"{day.isoformat()}.parquet", compression="zstd")
    channels = ("web", "mobile", "store")
    state = state_from_history(tx.filter(pl.col("ts") < cutoff_for(END - dt.timedelta(days=1))), channels)
    state.write_parquet(root / "state.parquet", compression="zstd")
    columns = feature_columns(tx.columns, channels)
    train = snapshot_features(tx.filter(pl.col("ts") < cutoff_for(END - dt.timedelta(days=60))), END - dt.timedelta(days=61), columns)
    x = feature_matrix(train, columns)
    y = (train["recency_days"].to_numpy() > 30).astype(int) ^ (np.random.default_rng(0).random(train.height) < 0.1)
    booster = lgb.train({"objective": "binary", "verbosity": -1, "num_threads": 2}, lgb.Dataset(x, y), 200)
    (root / "model.onnx").write_bytes(lgbm_to_onnx(float32_exact_thresholds(booster.model_to_string()), len(columns)))
    return columns, tx.height, state.height


def _child(engine: str, root: Path, columns: tuple[str, ...]) -> dict:
    import subprocess

    out = subprocess.run(
        [sys.executable, "-W", "ignore", "-c", CHILD, engine, str(root), END.isoformat(), json.dumps(columns)],
        capture_output=True,
        text=True,
        check=True,
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def _same(root: Path) -> str:
    import polars as pl
    from polars.testing import assert_frame_equal

    for name in ("features", "scores"):
        a, b = (pl.read_parquet(root / f"{engine}_{name}.parquet").sort("customer_id") for engine in ("polars", "spark"))
        assert_frame_equal(a, b.select(a.columns), check_exact=False, rel_tol=1e-9, abs_tol=1e-9)
    return "equal (floats within 1e-9)"


def main(argv: list[str] | None = None) -> str:
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--scales", default="1000000,10000000", help="transactions a year, comma-separated")
    args = parser.parse_args(argv)
    scales = [50_000] if args.quick else [int(s) for s in args.scales.split(",")]
    rows = []
    results = {}
    for scale in scales:
        with tempfile.TemporaryDirectory(prefix="bench-spark-") as tmp:
            root = Path(tmp)
            columns, n_tx, customers = _prepare(root, scale)
            polars_run, spark_run = _child("polars", root, columns), _child("spark", root, columns)
            same = _same(root)
        results[scale] = (n_tx, customers, polars_run, spark_run)
        for run in (polars_run, spark_run):
            rows.append(
                f"| {n_tx:,} | {customers:,} | {run['engine']} | {run['features_s']:.1f} | {run['scoring_s']:.1f} | "
                f"{run['peak_mb']:,.0f} | {run.get('session_s', 0):.1f} | {same} |"
            )
    out = "\n".join(
        [
            "",
            "### One day of features and scoring: local Spark beside polars (same run, same machine)",
            "",
            "| transactions a year | customers in the state | engine | features s | scoring s | peak MB | Spark session s | outputs |",
            "|---|---|---|---|---|---|---|---|",
            *rows,
        ]
    )
    if len(results) >= 2:
        out += "\n\n" + _growth_and_cost(results)
    out += f"\n\nmachine: {machine()}"
    print(out)
    return out


def _growth_and_cost(results: dict[int, tuple[int, int, dict, dict]]) -> str:
    """How Spark's time grows from the smallest to the largest scale, and what the largest's per-row cost says for 1 B a year."""
    small, large = min(results), max(results)
    s_tx, s_cust, _, s_spark = results[small]
    l_tx, l_cust, _, l_spark = results[large]
    lines = [
        f"Spark, {l_tx / s_tx:.1f}x the transactions ({l_cust / s_cust:.1f}x the customers): "
        f"features {l_spark['features_s'] / s_spark['features_s']:.2f}x the time, scoring {l_spark['scoring_s'] / s_spark['scoring_s']:.2f}x.",
    ]
    # Marginal cost per customer in the state (the day's work is one pass over the state plus the window, which grows with it),
    # in core-seconds: the growth between the two scales over the customers added, 2 cores busy.
    cores = 2
    feature_per_customer = (l_spark["features_s"] - s_spark["features_s"]) * cores / (l_cust - s_cust)
    scoring_per_customer = (l_spark["scoring_s"] - s_spark["scoring_s"]) * cores / (l_cust - s_cust)
    target_customers, target_tx = 50_000_000, 1_000_000_000
    scale = target_customers
    core_s = (feature_per_customer + scoring_per_customer) * scale
    lines += [
        "",
        f"Cost model (marginal core-seconds per customer in the state between the two scales: features {feature_per_customer * 1e6:.1f} µs, "
        f"scoring {scoring_per_customer * 1e6:.1f} µs; the window grows with the customers at a fixed purchase rate):",
        "",
        "| 1 B transactions a year, 50 M customers | core-hours a day | executors of 4 cores for 30 minutes | minutes on 16 executors of 4 cores |",
        "|---|---|---|---|",
        f"| features + scoring of one day | {core_s / 3600:.1f} | {max(1, round(core_s / (4 * 1800)))} | {core_s / (16 * 4) / 60:.1f} |",
        "",
        f"(1 B a year is {target_tx / l_tx:.0f}x the transactions measured; the model assumes the per-customer cost stays linear, "
        "which the growth above tests between the two scales measured here; shuffles across machines add network time not measured here.)",
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
