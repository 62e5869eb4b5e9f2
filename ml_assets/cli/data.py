"""churn generate: write generated transactions into a source database."""

from __future__ import annotations

import argparse
import datetime as dt
import time

from ml_assets.cli.common import date_arg, demo_calendar


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
                args.start,
                args.end,
                args.customers or (3_000 if args.transactions else 5_000),
                args.seed,
                args.drift_date,
                args.url,
                args.table or "purchases",
                args.replace,
            )
        )
        return 0
    # Neither --customers nor --transactions: the demo's 5,000 customers.
    customers = args.customers or (
        customers_for_transactions(args.transactions, args.start, args.end, args.drift_date) if args.transactions else 5000
    )
    print(seed_warehouse(args.start, args.end, customers, args.seed, args.drift_date, args.bad_rows, args.url, args.replace))
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    """churn generate."""
    gen = sub.add_parser("generate", help="write generated transactions into the source database")
    demo = demo_calendar()
    gen.add_argument("--start", type=date_arg, default=demo.start, help="first day (default: the demo's, a year before --end)")
    gen.add_argument("--end", type=date_arg, default=demo.end, help="last day, inclusive (default: yesterday, as the demo)")
    size = gen.add_mutually_exclusive_group()
    size.add_argument("--customers", type=int, default=0, help="visible customers (default 5000)")
    size.add_argument("--transactions", type=int, default=0, help="approximate number of transactions instead of --customers")
    gen.add_argument("--drift-date", type=date_arg, default=None, help="behaviour shifts from this day on")
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
