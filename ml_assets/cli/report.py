"""churn report drift DAY: the full HTML drift report (lib/drift_report.py, evidently's plots) for a day whose page holds the verdict only."""

from __future__ import annotations

import argparse
import datetime as dt
import sys


def cmd_report_drift(args: argparse.Namespace) -> int:
    """Re-runs `drift_report` for the day with `render_every_day`: the same samples (seeded), the same verdict, and
    the full report, with every column's plot, in place of the verdict page; a new materialization of the day, kept when newer days are reported."""
    import dagster as dg

    from ml_assets.pipeline import materialize_range

    try:
        day = dt.date.fromisoformat(args.day)
    except ValueError:
        print(f"churn report drift: {args.day!r} is not a day (YYYY-MM-DD)", file=sys.stderr)
        return 2
    # Asked for: the plot of every column that reached the threshold, not only the farthest `report_plots`.
    config = {"ops": {"drift_report": {"config": {"render_every_day": True, "report_plots": 0}}}}
    with dg.DagsterInstance.get() as instance:
        result = materialize_range(["drift_report"], day, day, instance, run_config=config, log_level=args.log_level)
    metadata = next(m.metadata for m in result.asset_materializations_for_node("drift_report") if m.partition == day.isoformat())
    path = metadata["report_path"].value
    print(f"drift report for {day}: {path}")
    print(f"  {metadata['drift_reason'].value}")
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    report = sub.add_parser("report", help="render a report on demand")
    kinds = report.add_subparsers(dest="report", required=True)
    drift = kinds.add_parser("drift", help="the full HTML drift report for DAY (drift events and the newest day have one already)")
    drift.add_argument("day", help="YYYY-MM-DD, a day with scored customers")
    drift.add_argument("--log-level", default="WARNING", help="console log level of the run (default WARNING)")
    drift.set_defaults(func=cmd_report_drift)
