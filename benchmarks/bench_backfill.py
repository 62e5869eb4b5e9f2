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
reported apart), peak RSS of the process, seconds per partition, and the
ratio per partition against the baseline.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
from pathlib import Path

from benchmarks.common import project_sandbox, run_pipeline_child

REPO = Path(__file__).resolve().parents[1]
START, END = dt.date(2024, 7, 1), dt.date(2025, 1, 31)

CHILD = """
    t1 = time.perf_counter()
    if mode == "per_day":
        for day in args:
            d = dt.date.fromisoformat(day)
            assert materialize_range([*INGEST_TO_FEATURES, *SCORING], d, d, instance, build_resources(), log_level="ERROR").success
    else:
        first, last = (dt.date.fromisoformat(x) for x in args)
        assert materialize_range([*INGEST_TO_FEATURES, *SCORING], first, last, instance, build_resources(), log_level="ERROR").success
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
    args = parser.parse_args(argv)
    # Quick: few customers (customer_features needs its 180 days of history whatever the size).
    days, baseline_days, customers, start = (3, 1, 150, START) if args.quick else (args.days, 6, 5000, START)
    with project_sandbox("bench_backfill_", PYTHONPATH=str(REPO)):
        return _measure(days, baseline_days, customers, start)


def _measure(days: int, baseline_days: int, customers: int, start: dt.date) -> str:
    import warnings

    import dagster as dg

    from ml_assets.lib.datagen import GeneratorConfig, generate_transactions
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
    config["ops"]["training_set"]["config"].update({"min_history_days": history, "horizon_days": min(30, history), "snapshot_every_days": 3})
    for model in ("lgbm_model", "torch_model"):
        config["ops"][model] = {"config": {"min_roc_auc": 0.5}}
    if not materialize_unpartitioned(TRAINING, instance, config, log_level="ERROR").success:
        raise RuntimeError("setup: training failed")
    tx_in_window = tx.filter(tx["ts"].dt.date() >= first).height

    base_days = [(first + dt.timedelta(days=i)).isoformat() for i in range(baseline_days)]
    base = _child("per_day", base_days)
    fill = _child("range", [first.isoformat(), END.isoformat()])
    per_base = base["work_s"] / baseline_days
    per_fill = fill["work_s"] / days
    rows = [
        "",
        f"### Backfill of {days} daily partitions ({customers:,} customers, {tx_in_window:,} transactions in the window)",
        "",
        "| what | runs | wall s (work) | s per partition | peak RSS MB | vs baseline per partition |",
        "|---|---|---|---|---|---|",
        f"| baseline: one run per day, first {baseline_days} days | {baseline_days} | {base['work_s']:.1f} | {per_base:.2f} | {base['peak_mb']:.0f} | baseline |",
        f"| backfill: {first} .. {END} as one run | 1 | {fill['work_s']:.1f} | {per_fill:.2f} | {fill['peak_mb']:.0f} | {per_fill / per_base:.2f}x |",
        "",
        f"interpreter start and imports, excluded above: {base['imports_s']:.1f} s and {fill['imports_s']:.1f} s",
    ]
    out = "\n".join(rows)
    print(out)
    print(json.dumps({"backfill_days": days, "backfill_s": round(fill["work_s"], 1), "peak_mb": round(fill["peak_mb"])}))
    return out


if __name__ == "__main__":
    main()
