"""Command line: generate source data, and run the whole pipeline as a demo.

churn generate --start 2024-07-01 --end 2025-06-30 --customers 5000 --drift-date 2025-06-01
churn demo
churn registry
churn artifacts sweep [--older-than-hours 24] [--apply]
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import sys
import time
import warnings

# Defaults shared by the demo, the README and the tests: one year of history,
# behaviour shifting on 2025-06-01, the last six weeks scored.
DEMO_START = dt.date(2024, 7, 1)
DEMO_END = dt.date(2025, 6, 30)
DEMO_DRIFT = dt.date(2025, 6, 1)
DEMO_SCORE_FROM = dt.date(2025, 5, 18)


def _date(value: str) -> dt.date:
    try:
        return dt.date.fromisoformat(value)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"{value!r} is not a date in YYYY-MM-DD form") from exc


def cmd_generate(args: argparse.Namespace) -> int:
    from ml_assets.lib.datagen import GeneratorConfig, customers_for_transactions, generate_transactions, inject_bad_rows
    from resources import build_warehouse

    customers = args.customers or customers_for_transactions(args.transactions, args.start, args.end, args.drift_date)
    cfg = GeneratorConfig(start=args.start, end=args.end, customers=customers, seed=args.seed, drift_date=args.drift_date)
    t0 = time.perf_counter()
    frame = inject_bad_rows(generate_transactions(cfg), args.bad_rows, seed=args.seed)
    t1 = time.perf_counter()
    warehouse = build_warehouse()
    if args.url:
        warehouse = warehouse.model_copy(update={"url": args.url})
    warehouse.create_table(replace=args.replace)
    written = warehouse.append(frame)
    t2 = time.perf_counter()
    print(
        f"generated {frame.height:,} transactions of {frame['customer_id'].n_unique():,} customers "
        f"({args.start}..{args.end}, drift from {args.drift_date or 'never'}, {args.bad_rows} with a planted defect) in {t1 - t0:.1f}s; "
        f"wrote {written:,} rows to table {warehouse.table!r} in {t2 - t1:.1f}s"
    )
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    import dagster as dg

    from ml_assets.pipeline import (
        INGEST_TO_FEATURES,
        SCORING,
        TRAINING,
        materialize_range,
        materialize_unpartitioned,
        run_drift_sensor_once,
        training_run_config,
    )
    from resources import data_dir

    warnings.filterwarnings("ignore", category=dg.BetaWarning)
    gen = argparse.Namespace(
        start=DEMO_START,
        end=DEMO_END,
        customers=args.customers,
        transactions=0,
        seed=7,
        drift_date=DEMO_DRIFT,
        url=None,
        replace=True,
        # A few defective rows, so the quarantine has something to show.
        bad_rows=70,
    )
    print("== 1/5 seeding the embedded warehouse")
    cmd_generate(gen)
    instance = dg.DagsterInstance.get()
    stages = [
        (
            "2/5 ingest, validate, features",
            lambda: materialize_range(INGEST_TO_FEATURES, DEMO_START, DEMO_END, instance, log_level=args.log_level),
        ),
        (
            "3/5 training set, LightGBM + PyTorch, ONNX + parity checks, champion",
            lambda: materialize_unpartitioned(
                TRAINING, instance, training_run_config(DEMO_SCORE_FROM - dt.timedelta(days=1)), log_level=args.log_level
            ),
        ),
        (
            "4/5 online feature store, batch predictions and drift reports",
            lambda: materialize_range(SCORING, DEMO_SCORE_FROM, DEMO_END, instance, log_level=args.log_level),
        ),
    ]
    for title, run in stages:
        print(f"== {title}")
        t0 = time.perf_counter()
        result = run()
        print(f"   {'ok' if result.success else 'FAILED'} in {time.perf_counter() - t0:.1f}s (run {result.run_id})")
        if not result.success:
            return 1
    print("== 5/5 drift sensor: one evaluation, and the retraining run it requests")
    t0 = time.perf_counter()
    sensor, retrain = run_drift_sensor_once(instance, log_level=args.log_level)
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
    print(summarize(instance, data_dir(), loop))
    return 0


def summarize(instance, data_root, loop: str = "") -> str:  # noqa: ANN001
    """Rows per stage, model metrics, drift verdicts and where things are."""
    import dagster as dg

    def latest(key: str, partition: str | None = None):  # noqa: ANN202
        records = instance.fetch_materializations(
            dg.AssetRecordsFilter(asset_key=dg.AssetKey(key), asset_partitions=[partition] if partition else None), limit=1
        ).records
        return records[0].asset_materialization.metadata if records else {}

    def total_rows(key: str, start: dt.date, end: dt.date) -> int:
        keys = [(start + dt.timedelta(days=i)).isoformat() for i in range((end - start).days + 1)]
        n = 0
        for k in keys:
            md = latest(key, k)
            n += int(md["dagster/row_count"].value) if "dagster/row_count" in md else 0
        return n

    lines = ["Summary", "-------"]
    for key in ("raw_transactions", "validated_transactions", "quarantined_transactions"):
        lines.append(f"{key:28s} {total_rows(key, DEMO_START, DEMO_END):>10,} rows ({DEMO_START}..{DEMO_END})")
    feats = latest("customer_features", DEMO_END.isoformat())
    lines.append(f"{'customer_features':28s} {int(feats['dagster/row_count'].value):>10,} active customers on {DEMO_END}")
    ts = latest("training_set")
    lines.append(
        f"{'training_set':28s} {int(ts['dagster/row_count'].value):>10,} labelled snapshots, churn rate {ts['churn_rate'].value:.1%}"
    )
    from resources import build_registry

    registry = build_registry(resolve_env=True)
    for key in ("lgbm_model", "torch_model"):
        md = latest(key)
        version = registry.get(md["model_version"].value)
        parity = version.parity or {}
        worst = max((v["max_abs_diff"] for v in parity.values() if isinstance(v, dict)), default=float("nan"))
        device = f", {md['device'].value}" if "device" in md else ""
        lines.append(
            f"{key:28s} test ROC-AUC {md['roc_auc'].value:.3f}  PR-AUC {md['pr_auc'].value:.3f}  log loss {md['log_loss'].value:.3f}  "
            f"ECE {md['ece'].value:.3f}  ({version.version}{device}; ONNX parity max {worst:.1e}, {'passed' if version.parity_passed else 'FAILED'})"
        )
    fd = latest("feature_definitions")
    online = latest("online_features", DEMO_END.isoformat())
    if fd and online:
        lines.append(
            f"{'feature store (Feast)':28s} {int(fd['feature_count'].value)} features in {fd['online_store'].value} online store, "
            f"snapshot {online['snapshot_date'].value} ({int(online['customers'].value):,} customers); training_set read them in "
            f"{ts['feast_seconds'].value:.1f}s"
        )
    champion = latest("champion_model")
    lines.append(f"{'champion_model':28s} {champion['champion_version'].value}: {champion['decision'].value}, {champion['reason'].value}")
    lines.append(
        f"{'batch_predictions':28s} {total_rows('batch_predictions', DEMO_SCORE_FROM, DEMO_END):>10,} scores ({DEMO_SCORE_FROM}..{DEMO_END})"
    )
    drift_days = []
    day = DEMO_SCORE_FROM
    while day <= DEMO_END:
        md = latest("drift_report", day.isoformat())
        if md and md["dataset_drift"].value:
            drift_days.append(day)
        day += dt.timedelta(days=1)
    first = drift_days[0].isoformat() if drift_days else "none"
    lines.append(
        f"{'drift_report':28s} dataset drift on {len(drift_days)} of {(DEMO_END - DEMO_SCORE_FROM).days + 1} days, "
        f"first {first} (behaviour shift injected {DEMO_DRIFT})"
    )
    if loop:
        lines.append(f"{'closed loop':28s} {loop}")
    lines += [
        "",
        f"lake:      {data_root / 'lake'}",
        f"artifacts: {data_root / 'artifacts'} (models, ONNX, drift_reports/*.html)",
        f"registry:  {data_root / 'registry.sqlite'} (model versions, champion, promotion and rollback history)",
        f"warehouse: {data_root / 'warehouse.sqlite'}",
        f"feast:     {data_root / 'feast'} (registry, SQLite online store); CLI: .venv/bin/feast -c feature_repo feature-views list",
        "",
        "Open the UI on this instance with:  make ui   (then http://127.0.0.1:3000)",
    ]
    return "\n".join(lines)


def cmd_registry(args: argparse.Namespace) -> int:
    from resources import build_registry

    registry = build_registry(resolve_env=True)
    versions = registry.versions()
    if not versions:
        print("the model registry is empty: materialize training_job (or run `churn demo`) first")
        return 0
    print(f"{'version':20s} {'kind':9s} {'status':9s} {'created (UTC)':20s} {'test ROC-AUC':>12s}  {'ONNX parity':12s} run")
    for v in versions:
        parity = "passed" if v.parity_passed else ("FAILED" if v.parity_passed is False else "unchecked")
        print(
            f"{v.version:20s} {v.kind:9s} {v.status:9s} {v.created_at:%Y-%m-%d %H:%M:%S}  {v.metrics.get('roc_auc', float('nan')):12.4f}  "
            f"{parity:12s} {v.run_id[:8]}"
        )
    print()
    print("recent decisions (newest first):")
    for e in registry.events(args.events):
        if e["action"] in ("registered", "exported", "parity_passed", "retrained") and not args.all:
            continue
        print(f"  {e['at'][:19]}  {e['action']:12s} {e['version'] or '-':20s} by {e['actor']}: {e['reason']}")
    return 0


def cmd_artifacts_sweep(args: argparse.Namespace) -> int:
    from resources import build_artifacts, build_registry, registry_references, sweep

    store, registry = build_artifacts(), build_registry(resolve_env=True)
    found = sweep(store, registry_references(registry.versions()), older_than=dt.timedelta(hours=args.older_than_hours), apply=args.apply)
    verb = "removed" if args.apply else "would remove"
    for f in found:
        print(f"{verb}: {f.uri}  ({f.size_bytes:,} bytes, {f.age_hours:.1f} h old): {f.reason}")
    total = sum(f.size_bytes for f in found)
    print(f"{verb} {len(found)} file(s), {total:,} bytes, under {store.root}" + ("" if args.apply or not found else "; run again with --apply to delete them"))
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="churn", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)

    gen = sub.add_parser("generate", help="write generated transactions into the source database")
    gen.add_argument("--start", type=_date, default=DEMO_START)
    gen.add_argument("--end", type=_date, default=DEMO_END, help="last day, inclusive")
    size = gen.add_mutually_exclusive_group()
    size.add_argument("--customers", type=int, default=0, help="visible customers (default 5000)")
    size.add_argument("--transactions", type=int, default=0, help="approximate number of transactions instead of --customers")
    gen.add_argument("--drift-date", type=_date, default=None, help="behaviour shifts from this day on")
    gen.add_argument("--seed", type=int, default=7)
    gen.add_argument("--url", default=None, help="SQLAlchemy URL (default: CHURN_WAREHOUSE_URL or the embedded SQLite file)")
    gen.add_argument("--replace", action="store_true", help="drop and recreate the table first")
    gen.add_argument("--bad-rows", type=int, default=0, help="append this many rows with one planted defect each (quarantine demo)")
    gen.set_defaults(func=cmd_generate)

    demo = sub.add_parser("demo", help="seed the embedded warehouse and materialize the whole graph")
    demo.add_argument("--customers", type=int, default=int(os.environ.get("CHURN_DEMO_CUSTOMERS", "5000")))
    demo.add_argument("--log-level", default="ERROR", help="console log level of the runs (the instance keeps every event)")
    demo.set_defaults(func=cmd_demo)

    reg = sub.add_parser("registry", help="list model versions, the champion and recent promotion decisions")
    reg.add_argument("--events", type=int, default=20, help="how many recent registry events to read")
    reg.add_argument("--all", action="store_true", help="also show registrations, exports and passed parity checks")
    reg.set_defaults(func=cmd_registry)

    art = sub.add_parser("artifacts", help="maintain the artifact store")
    art_sub = art.add_subparsers(dest="action", required=True)
    sw = art_sub.add_parser(
        "sweep", help="list (or with --apply delete) model files no registry version refers to, e.g. left by a killed training run"
    )
    sw.add_argument(
        "--older-than-hours", type=float, default=24.0, help="only files at least this old: keeps what a running training has not registered yet"
    )
    sw.add_argument("--apply", action="store_true", help="delete them (default: only list)")
    sw.set_defaults(func=cmd_artifacts_sweep)

    args = parser.parse_args(argv)
    if args.command == "generate" and not args.customers and not args.transactions:
        args.customers = 5000
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
