"""churn erase and churn retention: a customer who asks to be forgotten, and data past its retention."""

from __future__ import annotations

import argparse
import sys


def cmd_erase(args: argparse.Namespace) -> int:
    from lib.governance import os_identity
    from lib.settings import load_settings
    from ml_assets.governance.erasure import erase_customer
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
    from ml_assets.governance.erasure import apply_retention
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


def register(sub: argparse._SubParsersAction) -> None:
    """churn erase, churn retention."""
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
