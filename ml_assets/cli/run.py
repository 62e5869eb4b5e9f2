"""churn demo and churn run: the whole graph in one process, stage by stage, then the summary."""

from __future__ import annotations

import argparse
import datetime as dt
import sys
import time
from typing import Any

from ml_assets.cli.common import date_arg, demo_calendar
from ml_assets.cli.data import seed_warehouse


def cmd_demo(args: argparse.Namespace) -> int:
    from lib.settings import Source, load_settings

    loaded = load_settings()
    demo = demo_calendar()
    # The demo replaces the embedded warehouse's table: never a user's source.
    if loaded.source != Source() or "CHURN_WAREHOUSE_URL" in loaded.environment or loaded.partitions_start > demo.start:
        print(
            "churn demo seeds and replaces the embedded demo warehouse, but the settings point at another source or calendar "
            "(churn.yaml, CHURN_SETTINGS_FILE or CHURN_WAREHOUSE_URL). Run it without them, e.g. CHURN_SETTINGS_FILE=none "
            "make demo, or use `churn run` for your own source.",
            file=sys.stderr,
        )
        return 2
    print("== 1/5 seeding the embedded warehouse")
    # A few defective rows, so the quarantine has something to show.
    print(
        seed_warehouse(
            demo.start,
            demo.end,
            args.customers or loaded.deployment.demo_customers,
            seed=7,
            drift_date=demo.drift,
            bad_rows=70,
            replace=True,
        )
    )
    return run_pipeline(demo.start, demo.end, demo.score_from, args.log_level, drift_note=f"behaviour shift injected {demo.drift}")


def cmd_run(args: argparse.Namespace) -> int:
    """The whole graph on the configured source, as the schedules and the drift sensor would run it, in one process."""
    from lib.feasibility import plan_of, refusal
    from lib.settings import settings

    loaded = settings()
    start = args.start or loaded.partitions_start
    try:
        end = _end_day(args.end, loaded)
    except RunRefused as exc:
        print(f"churn run: {exc}", file=sys.stderr)
        return 2
    score_from = end - dt.timedelta(days=args.score_days - 1)
    if score_from <= start:
        print(f"churn run: --score-days {args.score_days} leaves no history before {score_from} (calendar starts {start})", file=sys.stderr)
        return 2
    # Before anything is ingested: a calendar that cannot give a training set fails now, not after the features.
    why = refusal(start, score_from - dt.timedelta(days=1), plan_of(loaded), "churn run")
    if why:
        print(why, file=sys.stderr)
        return 2
    print(f"churn run: {start}..{end}, training on the days before {score_from}, scoring {score_from}..{end}")
    return run_pipeline(start, end, score_from, args.log_level)


class RunRefused(Exception):
    """A calendar `churn run` will not work through (printed as one line, exit status 2)."""


# How far past the source's last day an --end may reach before the run is refused: a few quiet days are normal.
MAX_DAYS_PAST_SOURCE = 7


def _end_day(asked: dt.date | None, loaded: Any) -> dt.date:
    """The last day to run: the source's last day (not after yesterday) by default; an --end far past it is refused."""
    from resources import SourceSchemaError, build_warehouse

    yesterday = dt.datetime.now(dt.UTC).date() - dt.timedelta(days=1)
    try:
        _, _, last = build_warehouse(loaded, resolve_env=True).time_range()
    except (SourceSchemaError, ValueError, ConnectionError) as exc:
        if asked is not None:
            print(f"churn run: could not read the source's time range ({exc}); running to --end {asked} as given", file=sys.stderr)
            return asked
        raise RunRefused(f"cannot read the source's time range: {exc}; pass --end YYYY-MM-DD") from None
    if last is None:
        raise RunRefused("the source has no readable timestamp: nothing to run (check source.columns.ts)")
    if asked is None:
        return min(last, yesterday)
    if (asked - last).days > MAX_DAYS_PAST_SOURCE:
        raise RunRefused(
            f"--end {asked} is {(asked - last).days} days after the source's last day {last}: every day after it would be empty "
            f"and the days before it would not be scored. Pass --end {last} (or leave --end out: it defaults to the source's last day)."
        )
    return asked


def run_pipeline(start: dt.date, end: dt.date, score_from: dt.date, log_level: str, drift_note: str = "") -> int:
    """Ingest [start, end], train on snapshots before score_from, score [score_from, end], one drift-sensor evaluation, summary.

    No run config anywhere: every run takes its settings from the settings file, as a scheduled or sensor-launched run does.
    """
    import dagster as dg

    from ml_assets.cli.progress import watching
    from ml_assets.cli.summary import summarize
    from ml_assets.pipeline import (
        INGEST_TO_FEATURES,
        SCORING,
        TRAINING,
        materialize_range,
        materialize_unpartitioned,
        run_drift_sensor_once,
    )
    from resources import data_dir

    instance = dg.DagsterInstance.get()
    train_until = {"ops": {"training_set": {"config": {"latest_snapshot": (score_from - dt.timedelta(days=1)).isoformat()}}}}
    stages = [
        ("2/5 ingest, validate, features", lambda: materialize_range(INGEST_TO_FEATURES, start, end, instance, log_level=log_level)),
        (
            "3/5 training set, LightGBM + PyTorch + their stack with BG/NBD, ONNX + parity checks, champion",
            lambda: materialize_unpartitioned(TRAINING, instance, train_until, log_level=log_level),
        ),
        (
            "4/5 online feature store, batch predictions and drift reports",
            lambda: materialize_range(SCORING, score_from, end, instance, log_level=log_level),
        ),
    ]
    for title, run in stages:
        print(f"== {title}", flush=True)
        t0 = time.perf_counter()
        with watching(instance):
            result = run()
        print(f"   {'ok' if result.success else 'FAILED'} in {time.perf_counter() - t0:.1f}s (run {result.run_id})")
        if not result.success:
            return 1
    print("== 5/5 drift sensor: one evaluation, and the retraining run it requests", flush=True)
    t0 = time.perf_counter()
    with watching(instance):
        sensor, retrain = run_drift_sensor_once(instance, log_level=log_level)
    if retrain is None:
        loop = f"no retraining requested: {sensor.skip_reason.skip_message if sensor.skip_reason else 'no request'}"
    else:
        print(f"   {'ok' if retrain.success else 'FAILED'} in {time.perf_counter() - t0:.1f}s (run {retrain.run_id})")
        if not retrain.success:
            return 1
        request = sensor.run_requests[0]
        decision = next(m for m in retrain.get_asset_materialization_events() if m.asset_key == dg.AssetKey("champion_model"))
        md = decision.materialization.metadata
        loop = (
            f"drift event on {request.tags['ml/drift_partition']} (drift share {request.tags['ml/drift_share']}, "
            f"champion {request.tags['ml/drift_champion']}) -> retraining run {retrain.run_id[:8]} (run key {request.run_key}) -> "
            f"{md['decision'].value}: champion now {md['champion_version'].value} ({md['reason'].value})"
        )
    print()
    print(summarize(instance, data_dir(), start, end, score_from, loop=loop, drift_note=drift_note))
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    """churn demo, churn run."""
    demo = sub.add_parser("demo", help="seed the embedded warehouse and materialize the whole graph")
    demo.add_argument("--customers", type=int, default=None, help="customers to generate (default: deployment.demo_customers, 5000)")
    demo.add_argument("--log-level", default="ERROR", help="console log level of the runs (the instance keeps every event)")
    demo.set_defaults(func=cmd_demo)

    run = sub.add_parser(
        "run", help="run the whole graph on the source the settings file describes (ingest, train, score, drift, closed loop)"
    )
    run.add_argument("--start", type=date_arg, default=None, help="first day to ingest (default: partitions_start)")
    run.add_argument("--end", type=date_arg, default=None, help="last day (default: the source's last day, at most yesterday UTC)")
    run.add_argument(
        "--score-days", type=int, default=30, help="score and watch the last this many days; train on the snapshots before them"
    )
    run.add_argument("--log-level", default="ERROR", help="console log level of the runs (the instance keeps every event)")
    run.set_defaults(func=cmd_run)
