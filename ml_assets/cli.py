"""Command line: generate source data, and run the whole pipeline as a demo.

churn generate --start 2024-07-01 --end 2025-06-30 --customers 5000 --drift-date 2025-06-01
churn generate --profile retail --url sqlite:///shop.sqlite --table purchases
churn init --url sqlite:///shop.sqlite --table purchases --horizon-days 90
churn run [--start 2024-01-01] [--end 2025-06-30] [--score-days 30]
churn demo
churn registry
churn artifacts sweep [--older-than-hours 24] [--apply]
"""

from __future__ import annotations

import argparse
import datetime as dt
import sys
import time
from pathlib import Path

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


def seed_warehouse(
    start: dt.date,
    end: dt.date,
    customers: int,
    seed: int = 7,
    drift_date: dt.date | None = None,
    bad_rows: int = 0,
    url: str | None = None,
    replace: bool = False,
) -> str:
    """Write generated transactions of the default profile into the configured warehouse (or `url`); returns what it did."""
    from lib.datagen import GeneratorConfig, generate_transactions, inject_bad_rows
    from resources import build_warehouse

    cfg = GeneratorConfig(start=start, end=end, customers=customers, seed=seed, drift_date=drift_date)
    t0 = time.perf_counter()
    frame = inject_bad_rows(generate_transactions(cfg), bad_rows, seed=seed)
    t1 = time.perf_counter()
    warehouse = build_warehouse()
    if url:
        warehouse = warehouse.model_copy(update={"url": url})
    warehouse.create_table(replace=replace)
    written = warehouse.append(frame)
    t2 = time.perf_counter()
    return (
        f"generated {frame.height:,} transactions of {frame['customer_id'].n_unique():,} customers "
        f"({start}..{end}, drift from {drift_date or 'never'}, {bad_rows} with a planted defect) in {t1 - t0:.1f}s; "
        f"wrote {written:,} rows to table {warehouse.table!r} in {t2 - t1:.1f}s"
    )


def seed_retail(
    start: dt.date,
    end: dt.date,
    customers: int,
    seed: int = 7,
    drift_date: dt.date | None = None,
    url: str | None = None,
    table: str = "purchases",
    replace: bool = False,
) -> str:
    """Write a plain purchase log (the retail profile) into `table` of the configured warehouse (or `url`)."""
    from lib.datagen import RetailConfig, generate_retail
    from resources import build_warehouse
    from resources.warehouse import write_frame

    frame = generate_retail(RetailConfig(start=start, end=end, customers=customers, seed=seed, drift_date=drift_date))
    written = write_frame(url or build_warehouse().url, table, frame, replace=replace)
    buyers = frame.group_by("customer_no").len()
    return (
        f"generated a plain purchase log: {written:,} purchases of {buyers.height:,} customers ({start}..{end}, "
        f"{(buyers['len'] == 1).mean():.0%} bought once) into table {table!r}; columns {frame.columns}. "
        f"Next: churn init --url URL --table {table}"
    )


def cmd_generate(args: argparse.Namespace) -> int:
    from lib.datagen import customers_for_transactions

    if args.profile == "retail":
        print(
            seed_retail(
                args.start, args.end, args.customers or 3_000, args.seed, args.drift_date, args.url, args.table or "purchases", args.replace
            )
        )
        return 0
    customers = args.customers or customers_for_transactions(args.transactions, args.start, args.end, args.drift_date)
    print(seed_warehouse(args.start, args.end, customers, args.seed, args.drift_date, args.bad_rows, args.url, args.replace))
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from lib.settings import Source, load_settings

    loaded = load_settings()
    # The demo replaces the embedded warehouse's table: never a user's source.
    if loaded.source != Source() or "CHURN_WAREHOUSE_URL" in loaded.environment or loaded.partitions_start > DEMO_START:
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
            DEMO_START,
            DEMO_END,
            args.customers or loaded.deployment.demo_customers,
            seed=7,
            drift_date=DEMO_DRIFT,
            bad_rows=70,
            replace=True,
        )
    )
    return run_pipeline(DEMO_START, DEMO_END, DEMO_SCORE_FROM, args.log_level, drift_note=f"behaviour shift injected {DEMO_DRIFT}")


def cmd_run(args: argparse.Namespace) -> int:
    """The whole graph on the configured source, as the schedules and the drift sensor would run it, in one process."""
    from lib.settings import settings

    start = args.start or settings().partitions_start
    end = args.end or (dt.datetime.now(dt.UTC).date() - dt.timedelta(days=1))
    score_from = end - dt.timedelta(days=args.score_days - 1)
    if score_from <= start:
        print(f"churn run: --score-days {args.score_days} leaves no history before {score_from} (calendar starts {start})", file=sys.stderr)
        return 2
    return run_pipeline(start, end, score_from, args.log_level)


def run_pipeline(start: dt.date, end: dt.date, score_from: dt.date, log_level: str, drift_note: str = "") -> int:
    """Ingest [start, end], train on snapshots before score_from, score [score_from, end], one drift-sensor evaluation, summary.

    No run config anywhere: every run takes its settings from the settings file, as a scheduled or sensor-launched run does.
    """
    import dagster as dg

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
            "3/5 training set, LightGBM + PyTorch, ONNX + parity checks, champion",
            lambda: materialize_unpartitioned(TRAINING, instance, train_until, log_level=log_level),
        ),
        (
            "4/5 online feature store, batch predictions and drift reports",
            lambda: materialize_range(SCORING, score_from, end, instance, log_level=log_level),
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
    print(summarize(instance, data_dir(), loop, start, end, score_from, drift_note))
    return 0


def summarize(  # noqa: ANN201
    instance,  # noqa: ANN001
    data_root,  # noqa: ANN001
    loop: str = "",
    start: dt.date = DEMO_START,
    end: dt.date = DEMO_END,
    score_from: dt.date = DEMO_SCORE_FROM,
    drift_note: str = "",
):
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

    import sqlalchemy as sa

    from lib.settings import load_settings
    from resources import default_warehouse_url

    loaded = load_settings()
    where = (
        "CHURN_WAREHOUSE_URL (from the environment)"
        if "CHURN_WAREHOUSE_URL" in loaded.environment
        else sa.make_url(loaded.source.url or default_warehouse_url(loaded)).render_as_string(hide_password=True)
    )
    registry_where = (
        "CHURN_REGISTRY_URL (from the environment)" if loaded.deployment.registry_url else loaded.deployment.data_path / "registry.sqlite"
    )
    lines = ["Summary", "-------"]
    for key in ("raw_transactions", "validated_transactions", "quarantined_transactions"):
        lines.append(f"{key:28s} {total_rows(key, start, end):>10,} rows ({start}..{end})")
    unplaceable = latest("unplaceable_transactions")
    if unplaceable:
        reasons = unplaceable["by_reason"].value or {}
        lines.append(
            f"{'unplaceable_transactions':28s} {int(unplaceable['dagster/row_count'].value):>10,} rows on no day of the calendar "
            f"{reasons if reasons else ''} ({unplaceable['path'].value})"
        )
    feats = latest("customer_features", end.isoformat())
    lines.append(f"{'customer_features':28s} {int(feats['dagster/row_count'].value):>10,} customers on {end}")
    ts = latest("training_set")
    lines.append(
        f"{'training_set':28s} {int(ts['dagster/row_count'].value):>10,} labelled snapshots, churn rate {ts['churn_rate'].value:.1%}"
    )
    from resources import build_registry

    registry = build_registry(resolve_env=True)
    base = latest("baseline_model")
    if base:
        lines.append(
            f"{'baseline_model':28s} backtest ROC-AUC recency {base['recency_backtest_roc_auc'].value:.3f}, "
            f"BG/NBD {base['bgnbd_backtest_roc_auc'].value:.3f} (out of time, {base['horizon_days'].value}-day horizon)"
            if "bgnbd_backtest_roc_auc" in base
            else f"{'baseline_model':28s} no backtest cutoff with matured labels"
        )
    for key in ("lgbm_model", "torch_model"):
        md = latest(key)
        version = registry.get(md["model_version"].value)
        parity = version.parity or {}
        worst = max((v["max_abs_diff"] for v in parity.values() if isinstance(v, dict)), default=float("nan"))
        device = f", {md['device'].value}" if "device" in md else ""
        lines.append(
            f"{key:28s} backtest ROC-AUC {md['backtest_roc_auc'].value:.3f}  PR-AUC {md['backtest_pr_auc'].value:.3f}  "
            f"(test split: ROC-AUC {md['test_roc_auc'].value:.3f}, ECE {md['test_ece'].value:.3f})  "
            f"({version.version}{device}; ONNX parity max {worst:.1e}, {'passed' if version.parity_passed else 'FAILED'})"
        )
    fd = latest("feature_definitions")
    online = latest("online_features", end.isoformat())
    if fd and online:
        lines.append(
            f"{'feature store (Feast)':28s} {int(fd['feature_count'].value)} features in {fd['online_store'].value} online store, "
            f"snapshot {online['snapshot_date'].value} ({int(online['customers'].value):,} customers); training_set read them in "
            f"{ts['feast_seconds'].value:.1f}s"
        )
    champion = latest("champion_model")
    lines.append(f"{'champion_model':28s} {champion['champion_version'].value}: {champion['decision'].value}, {champion['reason'].value}")
    lines.append(f"{'batch_predictions':28s} {total_rows('batch_predictions', score_from, end):>10,} scores ({score_from}..{end})")
    drift_days = []
    day = score_from
    while day <= end:
        md = latest("drift_report", day.isoformat())
        if md and md["dataset_drift"].value:
            drift_days.append(day)
        day += dt.timedelta(days=1)
    first = drift_days[0].isoformat() if drift_days else "none"
    lines.append(
        f"{'drift_report':28s} dataset drift on {len(drift_days)} of {(end - score_from).days + 1} days, "
        f"first {first}" + (f" ({drift_note})" if drift_note else "")
    )
    if loop:
        lines.append(f"{'closed loop':28s} {loop}")
    lines += [
        "",
        f"lake:      {loaded.deployment.lake}",
        f"artifacts: {loaded.deployment.artifacts} (models, ONNX, drift_reports/*.html)",
        f"registry:  {registry_where} (model versions, champion, hash-chained history, API keys, prediction record)",
        f"source:    table {loaded.source.table!r} in {where}",
        f"feast:     {data_root / 'feast'} (registry, {loaded.deployment.online_store} online store); "
        f"CLI: .venv/bin/feast -c {loaded.deployment.feast_repo_path} feature-views list",
        "",
        "Open the UI on this instance with:  make ui   (then http://127.0.0.1:3000)",
        "Score online:  KEY=$(.venv/bin/churn apikey create me --scope predict)  then  make serve  "
        "(send Authorization: Bearer $KEY; docs/operations.md)",
    ]
    return "\n".join(lines)


def cmd_init(args: argparse.Namespace) -> int:
    """Inspect a source table, propose the column mapping and the calendar, and write the settings file."""
    import sqlalchemy as sa

    from lib.contract import preview_text, propose_mapping
    from lib.schema import RAW_COLUMNS
    from lib.settings import Settings, SettingsError, Source, load_settings, settings_path, to_yaml
    from resources import SourceSchemaError, SqlWarehouse

    out = Path(args.out) if args.out else (settings_path() or Path("churn.yaml"))
    if out.exists() and not args.force:
        print(f"churn init: {out} exists; pass --force to replace it (or --out for another file)", file=sys.stderr)
        return 2
    fixed = {}
    for item in args.map:
        canonical, _, column = item.partition("=")
        if canonical not in RAW_COLUMNS or not column:
            print(f"churn init: --map {item!r}: expected CANONICAL=COLUMN with CANONICAL one of {list(RAW_COLUMNS)}", file=sys.stderr)
            return 2
        fixed[canonical] = column
    try:
        probe = SqlWarehouse(url=args.url, table=args.table, db_schema=args.schema, categoricals=args.categorical)
        columns = probe.describe_table()
    except (SourceSchemaError, ValueError, ConnectionError) as exc:
        print(f"churn init: {exc}", file=sys.stderr)
        return 2
    print(f"table {args.table!r} in {sa.make_url(args.url).render_as_string(hide_password=True)}:")
    for c in columns:
        shown = ", ".join(repr(preview_text(v, 40)) for v in c["samples"])
        print(f"  {c['name']:24s} {c['type']:20s} {c['family']:12s} e.g. {shown}")
    # A column named as a further categorical is not proposed for anything else.
    mapping = propose_mapping([c for c in columns if c["name"] not in args.categorical], fixed)
    missing = [n for n, (_, required, _) in RAW_COLUMNS.items() if required and n not in mapping]
    if missing:
        print(f"churn init: no column found for {missing}; name it with --map, e.g. --map ts=purchase_date", file=sys.stderr)
        return 2
    wh = probe.model_copy(update={"column_map": mapping})
    if "transaction_id" in mapping and "transaction_id" not in fixed and not wh.is_unique("transaction_id"):
        print(f"  {mapping['transaction_id']!r} repeats values: not a transaction id (rows get a derived identity instead)")
        del mapping["transaction_id"]
        wh = probe.model_copy(update={"column_map": mapping})
    try:
        source = wh.inspect_source()
        rows, first, last = wh.time_range(source)
    except SourceSchemaError as exc:
        print(f"churn init: {exc}", file=sys.stderr)
        return 2
    print("\nproposed mapping (canonical <- your column):")
    for canonical, (_, required, _) in RAW_COLUMNS.items():
        print(f"  {canonical:16s} <- {mapping.get(canonical, '(absent)' if not required else '?')}")
    print(f"\n{rows:,} rows; timestamps ({source.time_kind}) from {first} to {last} (UTC days)")
    channels = wh.top_values("channel") if "channel" in mapping else []
    if channels:
        print(f"channel vocabulary (most frequent first; the first is the reference of the share features): {channels}")
    url = args.url
    if sa.make_url(url).password:
        print("the URL carries a password: it is not written to the file; export CHURN_WAREHOUSE_URL before running the pipeline")
        url = None
    start = args.partitions_start or first
    if start is None:
        print("churn init: no readable timestamp in the table; pass --partitions-start YYYY-MM-DD", file=sys.stderr)
        return 2
    try:
        proposed = Settings(
            source=Source(
                url=url,
                table=args.table,
                db_schema=args.schema,
                columns={k: v for k, v in mapping.items() if k != v},
                customer_id_pattern=args.customer_id_pattern,
                categoricals=args.categorical,
                **({"channels": channels} if channels else {}),
            ),
            partitions_start=start,
            label_horizon_days=args.horizon_days,
            min_history_days=args.min_history_days if args.min_history_days is not None else Settings().min_history_days,
            max_rejected_share=args.max_rejected_share,
            min_roc_auc=args.min_roc_auc,
        )
    except ValueError as exc:
        print(f"churn init: {exc}", file=sys.stderr)
        return 2
    header = (
        f"Written by `churn init` on {dt.date.today()} from table {args.table!r}.\n"
        "Environment variables override these values (see docs/data-contract.md); keep passwords in CHURN_WAREHOUSE_URL."
    )
    text = to_yaml(proposed, {"header": header})
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(text, encoding="utf-8")
    try:
        load_settings({"CHURN_SETTINGS_FILE": str(out)})
    except SettingsError as exc:  # pragma: no cover - what we wrote validated above
        print(f"churn init: the written file does not load: {exc}", file=sys.stderr)
        return 2
    print(f"\nwrote {out}:\n")
    print(text)
    print(f"next: CHURN_SETTINGS_FILE={out} make ui   (or churn demo-style runs through the UI: daily_pipeline_job from {start})")
    return 0


def cmd_registry(args: argparse.Namespace) -> int:
    from resources import build_registry

    registry = build_registry(resolve_env=True)
    if args.action == "verify":
        return _verify_registry(registry)
    versions = registry.versions()
    if not versions:
        print("the model registry is empty: materialize training_job (or run `churn demo`) first")
        return 0
    print(f"{'version':20s} {'kind':9s} {'status':9s} {'created (UTC)':20s} {'backtest AUC':>12s}  {'ONNX parity':12s} run")
    for v in versions:
        parity = "passed" if v.parity_passed else ("FAILED" if v.parity_passed is False else "unchecked")
        print(
            f"{v.version:20s} {v.kind:9s} {v.status:9s} {v.created_at:%Y-%m-%d %H:%M:%S}  {v.metrics.get('backtest_roc_auc', float('nan')):12.4f}  "
            f"{parity:12s} {v.run_id[:8]}"
        )
    print()
    print("recent decisions (newest first):")
    for e in registry.events(args.events):
        if e["action"] in ("registered", "exported", "parity_passed", "retrained") and not args.all:
            continue
        print(f"  {e['at'][:19]}  {e['action']:12s} {e['version'] or '-':20s} by {e['actor']}: {e['reason']}")
    return 0


def _verify_registry(registry) -> int:  # noqa: ANN001
    from resources import build_artifacts

    events, head = registry.chain()
    versions = registry.versions()
    problems = registry.verify(build_artifacts())
    for problem in problems:
        print(f"FAILED: {problem}")
    if problems:
        print(f"registry verify: {len(problems)} problem(s) in {len(events)} events and {len(versions)} versions")
        return 1
    seq, digest = head or (0, "-")
    print(
        f"registry verify: OK: {len(events)} events chained unbroken (head {seq}, sha256 {digest}); "
        f"every artifact of {len(versions)} versions matches its registered sha256"
    )
    print(
        "keep the head hash somewhere else (a ticket, a log): a later verify that ends at a different hash for the same event means history was rewritten"
    )
    return 0


def cmd_apikey(args: argparse.Namespace) -> int:
    from lib.governance import os_identity
    from resources import build_registry
    from resources.registry import RegistryError

    registry = build_registry(resolve_env=True)
    if args.action == "list":
        keys = registry.api_keys(active_only=False)
        for k in keys:
            state = f"revoked {k['revoked_at']:%Y-%m-%d %H:%M}" if k["revoked_at"] else "active"
            print(
                f"{k['name']:24s} {k['key_id']}  scopes {k['scopes']:16s} created {k['created_at']:%Y-%m-%d %H:%M} by {k['created_by']}  {state}"
            )
        if not keys:
            print("no API keys yet: churn apikey create NAME --scope predict")
        return 0
    try:
        if args.action == "create":
            token = registry.create_api_key(args.name, args.scope or ["predict"], actor=os_identity())
            # The one time the key exists in clear: on stdout for the caller to store; not logged, not stored.
            print(token)
            print(
                f"(key {args.name!r}: shown once; the registry keeps only a salted digest. Send it as Authorization: Bearer <key>)",
                file=sys.stderr,
            )
            return 0
        revoked = registry.revoke_api_key(args.name, actor=os_identity())
    except (RegistryError, ValueError) as exc:
        print(f"churn apikey: {exc}", file=sys.stderr)
        return 2
    if not revoked:
        print(f"churn apikey: no active key named {args.name!r}", file=sys.stderr)
        return 1
    print(
        f"revoked {revoked} key(s) named {args.name!r}; the service stops accepting it within its reload interval (CHURN_SERVICE_RELOAD_SECONDS)"
    )
    return 0


def cmd_erase(args: argparse.Namespace) -> int:
    from lib.governance import os_identity
    from lib.settings import load_settings
    from ml_assets.erasure import erase_customer
    from resources import build_feature_store, build_registry

    settings = load_settings()
    registry = build_registry(resolve_env=True, settings=settings)
    store = build_feature_store(resolve_env=True, settings=settings)
    try:
        report = erase_customer(args.customer_id, args.reason, os_identity(), registry, store, settings.deployment.lake)
    except ValueError as exc:
        print(f"churn erase: {exc}", file=sys.stderr)
        return 2
    # The id itself is not printed (terminals and CI logs keep scrollback): the hash identifies the erasure.
    print(f"erased customer {registry.erasure_scheme}:{report.id_sha256}")
    print(f"  lake: {report.lake_rows} row(s) in {report.files_rewritten} file(s)")
    for table, rows in sorted(report.rows_by_table.items()):
        print(f"    {table}: {rows}")
    print(f"  online store: {report.online_removed} entry(ies); prediction record and the registry event: see churn registry")
    print("  ingestion now drops this customer's rows if the source still has them; delete them at the source too")
    return 0


def cmd_retention(args: argparse.Namespace) -> int:
    from lib.settings import load_settings
    from ml_assets.erasure import apply_retention
    from resources import build_registry

    settings = load_settings()
    days = args.days or settings.deployment.retention_days
    predictions_days = settings.deployment.service.prediction_retention_days
    if not days and not predictions_days:
        print("churn retention: no retention set (CHURN_RETENTION_DAYS or --days); nothing expires", file=sys.stderr)
        return 2
    instance = None
    if args.apply:
        import dagster as dg

        try:
            instance = dg.DagsterInstance.get()  # DAGSTER_HOME's instance: its expired partitions are wiped where it can
        except dg.DagsterInvariantViolationError:
            instance = None
    registry = build_registry(resolve_env=True, settings=settings)
    report = apply_retention(settings.deployment.lake, registry, days, predictions_days, args.apply, instance)
    verb = "deleted" if args.apply else "would delete"
    for _, _, path in report.files:
        print(f"{verb}: {path}")
    if days:
        print(f"{verb} {len(report.files)} raw/validated/quarantined partition file(s) older than {days} days")
    if args.apply and predictions_days:
        print(f"deleted {report.predictions_deleted} prediction record(s) older than {predictions_days} days")
    if report.wiped is False and report.files:
        print("(this Dagster instance cannot wipe single partitions: the UI still shows the deleted days as materialized)")
    if not args.apply:
        print("run again with --apply to delete (retention_job does it daily when CHURN_RETENTION_DAYS is set)")
    return 0


def cmd_artifacts_sweep(args: argparse.Namespace) -> int:
    from resources import build_artifacts, build_registry, registry_references, sweep

    store, registry = build_artifacts(), build_registry(resolve_env=True)
    found = sweep(store, registry_references(registry.versions()), older_than=dt.timedelta(hours=args.older_than_hours), apply=args.apply)
    verb = "removed" if args.apply else "would remove"
    for f in found:
        print(f"{verb}: {f.uri}  ({f.size_bytes:,} bytes, {f.age_hours:.1f} h old): {f.reason}")
    total = sum(f.size_bytes for f in found)
    print(
        f"{verb} {len(found)} file(s), {total:,} bytes, under {store.root}"
        + ("" if args.apply or not found else "; run again with --apply to delete them")
    )
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
    gen.add_argument(
        "--profile",
        choices=["default", "retail"],
        default="default",
        help="retail: a plain purchase log (customer number, date, quantity, amount; most customers buy once) in --table",
    )
    gen.add_argument("--table", default=None, help="table to write (retail profile; default purchases)")
    gen.set_defaults(func=cmd_generate)

    demo = sub.add_parser("demo", help="seed the embedded warehouse and materialize the whole graph")
    demo.add_argument("--customers", type=int, default=None, help="customers to generate (default: deployment.demo_customers, 5000)")
    demo.add_argument("--log-level", default="ERROR", help="console log level of the runs (the instance keeps every event)")
    demo.set_defaults(func=cmd_demo)

    run = sub.add_parser(
        "run", help="run the whole graph on the source the settings file describes (ingest, train, score, drift, closed loop)"
    )
    run.add_argument("--start", type=_date, default=None, help="first day to ingest (default: partitions_start)")
    run.add_argument("--end", type=_date, default=None, help="last day (default: yesterday, UTC)")
    run.add_argument(
        "--score-days", type=int, default=30, help="score and watch the last this many days; train on the snapshots before them"
    )
    run.add_argument("--log-level", default="ERROR", help="console log level of the runs (the instance keeps every event)")
    run.set_defaults(func=cmd_run)

    init = sub.add_parser("init", help="inspect your transactions table and write the settings file (column mapping, calendar, horizon)")
    init.add_argument("--url", required=True, help="SQLAlchemy URL of the source database")
    init.add_argument("--table", required=True, help="the transactions table")
    init.add_argument("--schema", default=None, help="schema holding the table (PostgreSQL), if not the default")
    init.add_argument(
        "--map", action="append", default=[], metavar="CANONICAL=COLUMN", help="fix one mapping, e.g. --map ts=purchase_date (repeatable)"
    )
    init.add_argument("--horizon-days", type=int, default=30, help="churned = no purchase for this many days (the label horizon)")
    init.add_argument(
        "--min-history-days", type=int, default=None, help="training snapshots need this much history before them (default 180)"
    )
    init.add_argument(
        "--max-rejected-share", type=float, default=0.05, help="largest share of a day's rows the quarantine may take, in [0, 1]"
    )
    init.add_argument(
        "--categorical", action="append", default=[], metavar="COLUMN", help="a further categorical column of your table (repeatable)"
    )
    init.add_argument("--min-roc-auc", type=float, default=0.7, help="a model below this test ROC-AUC fails its training run, in [0, 1]")
    init.add_argument("--customer-id-pattern", default=None, help="a regular expression the whole customer id must match")
    init.add_argument(
        "--partitions-start", type=_date, default=None, help="first day of the calendar (default: the first day in the table)"
    )
    init.add_argument("--out", default=None, help="where to write the settings (default: CHURN_SETTINGS_FILE or ./churn.yaml)")
    init.add_argument("--force", action="store_true", help="replace an existing settings file")
    init.set_defaults(func=cmd_init)

    reg = sub.add_parser("registry", help="list model versions, the champion and recent promotion decisions")
    reg.add_argument(
        "action",
        nargs="?",
        choices=["list", "verify"],
        default="list",
        help="verify: check the event hash chain and every artifact's sha256",
    )
    reg.add_argument("--events", type=int, default=20, help="how many recent registry events to read")
    reg.add_argument("--all", action="store_true", help="also show registrations, exports and passed parity checks")
    reg.set_defaults(func=cmd_registry)

    key = sub.add_parser("apikey", help="API keys of the scoring service: create (printed once), revoke, list")
    key_sub = key.add_subparsers(dest="action", required=True)
    create = key_sub.add_parser("create", help="a new key; the key is printed once and only its salted digest is stored")
    create.add_argument("name", help="who the key is for (letters, digits, . _ -): recorded with every prediction it asks for")
    create.add_argument(
        "--scope",
        action="append",
        choices=["predict", "metrics"],
        help="predict: POST /predict; metrics: /metrics and /docs (repeatable; default predict)",
    )
    create.set_defaults(func=cmd_apikey)
    revoke = key_sub.add_parser("revoke", help="revoke every active key of this name")
    revoke.add_argument("name")
    revoke.set_defaults(func=cmd_apikey)
    key_sub.add_parser("list", help="keys by name, scope and state (never the keys)").set_defaults(func=cmd_apikey)

    erase = sub.add_parser(
        "erase", help="remove one customer from the lake, the online store and the prediction record; the registry keeps a hash"
    )
    erase.add_argument("customer_id", help="the customer id as the pipeline holds it")
    erase.add_argument("--reason", required=True, help="why (e.g. the request's ticket); recorded in the registry")
    erase.set_defaults(func=cmd_erase)

    ret = sub.add_parser("retention", help="expire transaction partitions and prediction records past their retention")
    ret.add_argument("--days", type=int, default=None, help="keep this many days (default: deployment.retention_days)")
    ret.add_argument("--apply", action="store_true", help="delete (default: only list)")
    ret.set_defaults(func=cmd_retention)

    art = sub.add_parser("artifacts", help="maintain the artifact store")
    art_sub = art.add_subparsers(dest="action", required=True)
    sw = art_sub.add_parser(
        "sweep", help="list (or with --apply delete) model files no registry version refers to, e.g. left by a killed training run"
    )
    sw.add_argument(
        "--older-than-hours",
        type=float,
        default=24.0,
        help="only files at least this old: keeps what a running training has not registered yet",
    )
    sw.add_argument("--apply", action="store_true", help="delete them (default: only list)")
    sw.set_defaults(func=cmd_artifacts_sweep)

    args = parser.parse_args(argv)
    if args.command == "generate" and not args.customers and not args.transactions:
        args.customers = 5000
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
