"""A backfill of 60 daily partitions of the whole daily graph on this machine: wall time and peak memory.

Setup (not timed): the demo's source size (5,000 customers) over 2024-07-01 ..
2025-01-31, the first days ingested and featurized, both models trained and a
champion promoted. Then, each in a fresh process on the same instance:

- baseline: the daily graph (ingest, validate, features, online store,
  scoring, drift) for the first 6 of the 60 days, one run per day: what a
  backfill costs per partition when every partition is its own run;
- the backfill: the same graph for all 60 days as one run, which is what
  launching a backfill from the UI does here (every daily asset has
  `BackfillPolicy.single_run()`).

Figures: wall time of the runs (interpreter start and imports excluded and
reported apart), peak RSS of the process (its own high-water mark), seconds
per partition, and the ratio per partition against the baseline. With
`--repeat N` the baseline and the backfill alternate N times on the same
instance (re-materializing the same partitions) and the table gives medians
with min and max.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import statistics
from pathlib import Path

from benchmarks.common import project_sandbox, run_pipeline_child

REPO = Path(__file__).resolve().parents[1]
START, END = dt.date(2024, 7, 1), dt.date(2025, 1, 31)

CHILD = """
    t1 = time.perf_counter()
    if mode == "per_day":
        for day in args:
            d = dt.date.fromisoformat(day)
            assert materialize_range(INGEST_TO_FEATURES | SCORING, d, d, instance, build_resources(), log_level="ERROR").success
    else:
        first, last = (dt.date.fromisoformat(x) for x in args)
        assert materialize_range(INGEST_TO_FEATURES | SCORING, first, last, instance, build_resources(), log_level="ERROR").success
    work = time.perf_counter() - t1
    peak_mb = peak_rss_mb()
    print(json.dumps({"imports_s": imports, "work_s": work, "peak_mb": peak_mb}))
    """


def _child(mode: str, args: list[str]) -> dict:
    return run_pipeline_child(CHILD, mode, args, "lightgbm, onnxruntime, evidently, great_expectations, feast")


def main(argv: list[str] | None = None) -> str:
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--days", type=int, default=60)
    parser.add_argument("--repeat", type=int, default=None, help="alternating samples of each (default 3, 1 with --quick)")
    args = parser.parse_args(argv)
    repeat = args.repeat or (1 if args.quick else 3)
    # Quick: few customers (customer_features needs its 180 days of history whatever the size).
    days, baseline_days, customers, start = (3, 1, 150, START) if args.quick else (args.days, 6, 5000, START)
    with project_sandbox("bench_backfill_", PYTHONPATH=str(REPO)):
        return _measure(days, baseline_days, customers, start, repeat)


def _measure(days: int, baseline_days: int, customers: int, start: dt.date, repeat: int) -> str:
    import warnings

    import dagster as dg

    from lib.datagen import GeneratorConfig, generate_transactions
    from ml_assets.pipeline import INGEST_TO_FEATURES, TRAINING, materialize_range, materialize_unpartitioned, training_run_config
    from resources import build_warehouse

    warnings.filterwarnings("ignore")
    first = END - dt.timedelta(days=days - 1)
    wh = build_warehouse()
    wh.create_table(replace=True)
    tx = generate_transactions(GeneratorConfig(start=start, end=END, customers=customers, seed=11))
    wh.append(tx)
    instance = dg.DagsterInstance.get()
    instance.event_log_storage.set_concurrency_slots("feast_online", 1)
    before = first - dt.timedelta(days=1)
    if not materialize_range(INGEST_TO_FEATURES, start, before, instance, log_level="ERROR").success:
        raise RuntimeError("setup: ingest failed")
    config = training_run_config(before - dt.timedelta(days=1))
    history = min(60, (before - start).days // 3)
    config["ops"]["training_set"]["config"].update(
        {"min_history_days": history, "horizon_days": min(30, history), "snapshot_every_days": 3}
    )
    for model in ("lgbm_model", "torch_model"):
        config["ops"][model] = {"config": {"min_roc_auc": 0.5}}
    if not materialize_unpartitioned(TRAINING, instance, config, log_level="ERROR").success:
        raise RuntimeError("setup: training failed")
    tx_in_window = tx.filter(tx["ts"].dt.date() >= first).height

    base_days = [(first + dt.timedelta(days=i)).isoformat() for i in range(baseline_days)]
    bases, fills = [], []
    for _ in range(repeat):
        # Alternating, so a slow spell of the machine hits both variants.
        bases.append(_child("per_day", base_days))
        fills.append(_child("range", [first.isoformat(), END.isoformat()]))
    base_s, fill_s = [b["work_s"] for b in bases], [f["work_s"] for f in fills]
    per_base = statistics.median(base_s) / baseline_days
    per_fill = statistics.median(fill_s) / days
    rows = [
        "",
        f"### Backfill of {days} daily partitions ({customers:,} customers, {tx_in_window:,} transactions in the window), "
        f"{repeat} sample{'s' if repeat > 1 else ''} each",
        "",
        "| what | runs | wall s (work), median (min, max) | s per partition | peak RSS MB, median (max) | vs baseline per partition |",
        "|---|---|---|---|---|---|",
        f"| baseline: one run per day, first {baseline_days} days | {baseline_days} | {_spread(base_s)} | {per_base:.2f} | "
        f"{_mb(bases)} | baseline |",
        f"| backfill: {first} .. {END} as one run | 1 | {_spread(fill_s)} | {per_fill:.2f} | {_mb(fills)} | {per_fill / per_base:.2f}x |",
        "",
        f"interpreter start and imports, excluded above (median): {statistics.median(b['imports_s'] for b in bases):.1f} s and "
        f"{statistics.median(f['imports_s'] for f in fills):.1f} s",
    ]
    out = "\n".join(rows)
    print(out)
    print(json.dumps({"backfill_days": days, "backfill_s": [round(x, 1) for x in fill_s], "peak_mb": [round(f["peak_mb"]) for f in fills]}))
    return out


def _spread(samples: list[float]) -> str:
    return f"{statistics.median(samples):.1f} ({min(samples):.1f}, {max(samples):.1f})"


def _mb(children: list[dict]) -> str:
    peaks = [c["peak_mb"] for c in children]
    return f"{statistics.median(peaks):.0f} ({max(peaks):.0f})"


if __name__ == "__main__":
    main()
