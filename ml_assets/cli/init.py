"""churn init: inspect the user's table and write the settings file."""

from __future__ import annotations

import argparse
import datetime as dt
import sys
from pathlib import Path
from typing import Any

from ml_assets.cli.common import date_arg


class InitError(Exception):
    """A refusal of `churn init`: printed as one line, exit status 2."""


def cmd_init(args: argparse.Namespace) -> int:
    """Inspect a source table, propose the column mapping and the calendar, and write the settings file."""
    from lib.settings import settings_path

    out = Path(args.out) if args.out else (settings_path() or Path("churn.yaml"))
    try:
        if out.exists() and not args.force:
            raise InitError(f"{out} exists; pass --force to replace it (or --out for another file)")
        wh, mapping = _propose_mapping(args, _fixed_mapping(args))
        proposed, start = _proposed_settings(args, wh, mapping)
        _write(out, proposed, args, () if "channel" in mapping else ("source.channels",))
    except InitError as exc:
        print(f"churn init: {exc}", file=sys.stderr)
        return 2
    print(f"next: CHURN_SETTINGS_FILE={out} make ui   (or churn demo-style runs through the UI: daily_pipeline_job from {start})")
    return 0


def _fixed_mapping(args: argparse.Namespace) -> dict[str, str]:
    from lib.schema import RAW_COLUMNS, check_identifier

    fixed = {}
    for item in args.map:
        canonical, _, column = item.partition("=")
        if canonical not in RAW_COLUMNS or not column:
            raise InitError(f"--map {item!r}: expected CANONICAL=COLUMN with CANONICAL one of {list(RAW_COLUMNS)}")
        if canonical in fixed:
            raise InitError(f"--map names {canonical!r} twice ({fixed[canonical]!r} and {column!r})")
        try:
            fixed[canonical] = check_identifier(column, f"--map {canonical}: column")
        except ValueError as exc:
            raise InitError(str(exc)) from None
    if len(set(fixed.values())) != len(fixed):
        raise InitError(f"--map gives one column two meanings: {fixed}")
    return fixed


def _propose_mapping(args: argparse.Namespace, fixed: dict[str, str]) -> tuple[Any, dict[str, str]]:
    """Describe the table and propose which of its columns is which canonical column; a reader over that mapping."""
    import sqlalchemy as sa

    from lib.contract import preview_text, propose_mapping
    from lib.schema import RAW_COLUMNS, check_identifier
    from resources import SourceSchemaError, SqlWarehouse

    try:
        probe = SqlWarehouse(url=args.url, table=args.table, db_schema=args.schema, categoricals=args.categorical)
        columns = probe.describe_table()
    except (SourceSchemaError, ValueError, ConnectionError) as exc:
        raise InitError(str(exc)) from None
    print(f"table {args.table!r} in {sa.make_url(args.url).render_as_string(hide_password=True)}:")
    for c in columns:
        shown = ", ".join(repr(preview_text(v, 40)) for v in c["samples"])
        print(f"  {c['name']:24s} {c['type']:20s} {c['family']:12s} e.g. {shown}")
    # A column named as a further categorical is not proposed for anything else.
    mapping = propose_mapping([c for c in columns if c["name"] not in args.categorical], fixed)
    missing = [n for n, (_, required, _) in RAW_COLUMNS.items() if required and n not in mapping]
    if missing:
        raise InitError(f"no column found for {missing}; name it with --map, e.g. --map ts=purchase_date")
    for canonical, column in mapping.items():
        try:
            check_identifier(column, f"the column proposed for {canonical!r}:")
        except ValueError as exc:
            raise InitError(str(exc)) from None
    wh = probe.model_copy(update={"column_map": mapping})
    if "transaction_id" in mapping and "transaction_id" not in fixed and not wh.is_unique("transaction_id"):
        print(f"  {mapping['transaction_id']!r} repeats values: not a transaction id (rows get a derived identity instead)")
        del mapping["transaction_id"]
        wh = probe.model_copy(update={"column_map": mapping})
    return wh, mapping


def _proposed_settings(args: argparse.Namespace, wh: Any, mapping: dict[str, str]) -> tuple[Any, dt.date]:
    """The settings for this table: mapping, calendar from its time range, channel vocabulary, the given thresholds."""
    import sqlalchemy as sa
    from pydantic import ValidationError

    from lib.schema import RAW_COLUMNS
    from lib.settings import Settings, Source
    from resources import SourceSchemaError

    try:
        source = wh.inspect_source()
        rows, first, last = wh.time_range(source)
    except SourceSchemaError as exc:
        raise InitError(str(exc)) from None
    print("\nproposed mapping (canonical <- your column):")
    for canonical, (_, required, _) in RAW_COLUMNS.items():
        print(f"  {canonical:16s} <- {mapping.get(canonical, '(absent)' if not required else '?')}")
    print(f"\n{rows:,} rows; timestamps ({source.time_kind}) from {first} to {last} (UTC days)")
    if first is not None and last is not None:
        from lib.feasibility import table_shape

        for line in table_shape(first, last, *wh.activity(source)):
            print(line)
    channels = wh.top_values("channel") if "channel" in mapping else []
    if channels:
        print(f"channel vocabulary (most frequent first; the first is the reference of the share features): {channels}")
    url = args.url
    if sa.make_url(url).password:
        print("the URL carries a password: it is not written to the file; export CHURN_WAREHOUSE_URL before running the pipeline")
        url = None
    start = args.partitions_start or first
    if start is None or last is None:
        raise InitError("no readable timestamp in the table; pass --partitions-start YYYY-MM-DD")
    calendar = _calendar(args, start, last)
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
            min_history_days=calendar.min_history_days,
            backtest_every_days=calendar.backtest_every_days,
            max_rejected_share=args.max_rejected_share,
            min_roc_auc=args.min_roc_auc,
        )
    except ValidationError as exc:
        raise InitError("; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())) from None
    except ValueError as exc:
        raise InitError(str(exc)) from None
    return proposed, start


def _calendar(args: argparse.Namespace, start: dt.date, last: dt.date) -> Any:
    """min_history_days and the backtest spacing that leave this span enough labelled snapshots for the horizon asked
    (or the user's --min-history-days, checked); refuses a horizon the span cannot label even with one scored day."""
    from lib.feasibility import Plan, days_needed, largest_horizon, propose, refusal
    from lib.settings import Settings

    span = (last - start).days + 1
    print(f"span: {start}..{last} ({span} days); `churn run` scores the last {args.score_days} and trains on the days before")
    # The most scored days (up to --score-days) that still leave a training set, with the proposal for them.
    for score_days in range(args.score_days, 0, -1):
        train_last = last - dt.timedelta(days=score_days)
        if args.min_history_days is not None:
            plan = Plan(horizon_days=args.horizon_days, min_history_days=args.min_history_days)
            if refusal(start, train_last, plan, "") is None:
                _fewer_scored(args.score_days, score_days)
                print(f"min_history_days {args.min_history_days} (given)")
                return plan
            continue
        proposal = propose(start, last, args.horizon_days, score_days, Plan(args.horizon_days, Settings().min_history_days))
        if proposal is not None:
            _fewer_scored(args.score_days, score_days)
            plan = proposal.plan
            print(f"proposed min_history_days {plan.min_history_days}, backtest_every_days {plan.backtest_every_days}: {proposal.why}")
            return plan
    train_last = last - dt.timedelta(days=1)
    if args.min_history_days is not None:
        plan = Plan(horizon_days=args.horizon_days, min_history_days=args.min_history_days)
        raise InitError(refusal(start, train_last, plan, f"--min-history-days {args.min_history_days}") or "no training set")
    horizon = largest_horizon(start, train_last, Plan(args.horizon_days, 0))
    needed = (days_needed(Plan(args.horizon_days, 0)) or 3650) + 1
    raise InitError(
        f"--horizon-days {args.horizon_days}: the table's {span} days cannot label it (a label needs the horizon to pass inside "
        "the days before the scored ones, twice: train and held out). "
        + (f"The longest horizon this span labels is {horizon} days; " if horizon else "")
        + f"a {args.horizon_days}-day horizon needs at least {needed} days of data."
    )


def _fewer_scored(asked: int, fits: int) -> None:
    if fits < asked:
        print(f"note: with {asked} scored days no training set is left; run `churn run --score-days {fits}` (or fewer)")


def _write(out: Path, proposed: Any, args: argparse.Namespace, omit: tuple[str, ...] = ()) -> None:
    from lib.settings import SettingsError, load_settings, to_yaml

    header = (
        f"Written by `churn init` on {dt.date.today()} from table {args.table!r}.\n"
        "Environment variables override these values (see docs/data-contract.md); keep passwords in CHURN_WAREHOUSE_URL."
    )
    text = to_yaml(proposed, {"header": header}, omit)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(text, encoding="utf-8")
    try:
        load_settings({"CHURN_SETTINGS_FILE": str(out)})
    except SettingsError as exc:  # pragma: no cover - what we wrote validated above
        raise InitError(f"the written file does not load: {exc}") from None
    print(f"\nwrote {out}:\n")
    print(text)


def register(sub: argparse._SubParsersAction) -> None:
    """churn init."""
    init = sub.add_parser("init", help="inspect your transactions table and write the settings file (column mapping, calendar, horizon)")
    init.add_argument("--url", required=True, help="SQLAlchemy URL of the source database")
    init.add_argument("--table", required=True, help="the transactions table")
    init.add_argument("--schema", default=None, help="schema holding the table (PostgreSQL), if not the default")
    init.add_argument(
        "--map", action="append", default=[], metavar="CANONICAL=COLUMN", help="fix one mapping, e.g. --map ts=purchase_date (repeatable)"
    )
    init.add_argument("--horizon-days", type=int, default=30, help="churned = no purchase for this many days (the label horizon)")
    init.add_argument(
        "--min-history-days",
        type=int,
        default=None,
        help="training snapshots need this much history before them (default: the most, up to 180, the table's span allows)",
    )
    init.add_argument(
        "--score-days", type=int, default=30, help="the days `churn run` will score (default 30): training reads the days before them"
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
        "--partitions-start", type=date_arg, default=None, help="first day of the calendar (default: the first day in the table)"
    )
    init.add_argument("--out", default=None, help="where to write the settings (default: CHURN_SETTINGS_FILE or ./churn.yaml)")
    init.add_argument("--force", action="store_true", help="replace an existing settings file")
    init.set_defaults(func=cmd_init)
