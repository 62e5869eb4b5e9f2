"""Day windows on every storage type: each row lands on its UTC day, in single-day and range runs, on SQLite, PostgreSQL and MariaDB.

Each source is a plain purchase log (customer, when, amount: no transaction id,
quantity, channel or category) whose timestamp column has one storage type.
Rows sit on both sides of midnight; each row's customer names it, so the test
can say where every row went. The real assets run (raw -> validated +
quarantined) for one day and for a three-day range; both must put every row
on its UTC day, and the source's own count must match what was read.
"""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import dagster as dg
import polars as pl
import pytest
import sqlalchemy as sa

from ml_assets_tests.conftest import PG_URL, resources_for

MARIADB_URL = "mysql+pymysql://root@127.0.0.1:3306/test"
# A session zone far from UTC: the reads must not depend on it.
PG_TOKYO_URL = PG_URL + "?options=-c%20timezone%3DAsia/Tokyo"
DAY = dt.date(2025, 1, 10)
DAYS = [DAY - dt.timedelta(days=1), DAY, DAY + dt.timedelta(days=1)]
KEYS = ["raw_transactions", "validated_transactions", "quarantined_transactions"]

pytestmark = [pytest.mark.xdist_group("sources")]


@dataclass(frozen=True)
class Source:
    name: str
    url: str
    ddl_type: str
    rows: list[tuple[str, str]]  # (customer, timestamp literal as the database takes it)
    expected: dict[str, dt.date]  # customer -> UTC day


NAIVE = [
    ("before", "2025-01-09 23:59:59.999999"),
    ("midnight", "2025-01-10 00:00:00"),
    ("noon", "2025-01-10 12:00:00"),
    ("last", "2025-01-10 23:59:59"),
    ("next", "2025-01-11 00:00:00"),
]
NAIVE_DAYS = {"before": DAYS[0], "midnight": DAY, "noon": DAY, "last": DAY, "next": DAYS[2]}
AWARE = [
    ("east", "2025-01-10 00:30:00+02:00"),  # 2025-01-09 22:30 UTC
    ("utc", "2025-01-10 12:00:00+00:00"),
    ("west", "2025-01-10 23:30:00-02:00"),  # 2025-01-11 01:30 UTC
    ("west-in", "2025-01-09 23:30:00-02:00"),  # 2025-01-10 01:30 UTC
]
AWARE_DAYS = {"east": DAYS[0], "utc": DAY, "west": DAYS[2], "west-in": DAY}
DATES = [("d-1", "2025-01-09"), ("d", "2025-01-10"), ("d+1", "2025-01-11")]
DATE_DAYS = {"d-1": DAYS[0], "d": DAY, "d+1": DAYS[2]}
TEXT = [
    *NAIVE,
    *AWARE,
    ("date-only", "2025-01-10"),
    ("iso-z", "2025-01-10T23:59:59Z"),
]
TEXT_DAYS = {**NAIVE_DAYS, **AWARE_DAYS, "date-only": DAY, "iso-z": DAY}

SOURCES = [
    Source("sqlite-text", "sqlite", "text", TEXT, TEXT_DAYS),
    Source("sqlite-datetime", "sqlite", "datetime", TEXT, TEXT_DAYS),
    Source("sqlite-date", "sqlite", "date", DATES, DATE_DAYS),
    Source("postgres-timestamp", PG_URL, "timestamp(6)", NAIVE, NAIVE_DAYS),
    Source(
        "postgres-timestamptz-tokyo-session",
        PG_TOKYO_URL,
        "timestamptz",
        AWARE + [(c, t + "+00") for c, t in NAIVE],
        {**AWARE_DAYS, **NAIVE_DAYS},
    ),
    Source("postgres-date", PG_URL, "date", DATES, DATE_DAYS),
    Source("postgres-text", PG_URL, "varchar(40)", TEXT, TEXT_DAYS),
    Source("mariadb-datetime", MARIADB_URL, "datetime(6)", NAIVE, NAIVE_DAYS),
    Source("mariadb-date", MARIADB_URL, "date", DATES, DATE_DAYS),
    Source("mariadb-timestamp", MARIADB_URL, "timestamp(6) null", NAIVE, NAIVE_DAYS),
]


@pytest.fixture
def source_table(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[tuple[Source, str, dict[str, object]]]:
    """The source's table with its rows, and the warehouse settings that point at it; dropped afterwards."""
    source: Source = request.param
    url = f"sqlite:///{tmp_path / 'source.sqlite'}" if source.url == "sqlite" else source.url
    table = f"purchases_{uuid.uuid4().hex[:8]}"
    engine = sa.create_engine(url)
    try:
        with engine.connect() as conn:
            conn.execute(sa.text("select 1"))
    except sa.exc.OperationalError as exc:  # pragma: no cover - CI and the dev machine run all three
        pytest.fail(f"{source.name}: the database at {url} is required: {exc}")
    with engine.begin() as conn:
        # Identifiers are the test's own; values are bound parameters.
        conn.execute(sa.text(f"create table {table} (customer_no varchar(64), purchased_at {source.ddl_type}, total double precision)"))
        for customer, ts in source.rows:
            conn.execute(sa.text(f"insert into {table} values (:c, :t, 10.0)"), {"c": customer, "t": ts})  # noqa: S608 (the test's own table name; values bound)
    settings = {"table": table, "column_map": {"customer_id": "customer_no", "ts": "purchased_at", "amount": "total"}}
    try:
        yield source, url, settings
    finally:
        with engine.begin() as conn:
            conn.execute(sa.text(f"drop table {table}"))
        engine.dispose()


def _placed(lake, days: list[dt.date]) -> dict[str, dt.date]:
    """customer -> the day whose validated partition holds it (and nothing quarantined)."""
    placed: dict[str, dt.date] = {}
    for day in days:
        assert lake.read_partitions(dg.AssetKey("quarantined_transactions"), [day.isoformat()]).is_empty()
        for customer in lake.read_partitions(dg.AssetKey("validated_transactions"), [day.isoformat()])["customer_id"]:
            assert customer not in placed, f"{customer} on two days"
            placed[customer] = day
    return placed


@pytest.mark.parametrize("source_table", SOURCES, ids=[s.name for s in SOURCES], indirect=True)
def test_every_row_lands_on_its_utc_day_in_single_day_and_range_runs(source_table, tmp_path: Path) -> None:
    from ml_assets.definitions import ALL_ASSETS
    from ml_assets.pipeline import materialize_range

    source, url, settings = source_table
    # One run per day, as the daily schedule does.
    single = resources_for(tmp_path / "single", url, **settings)
    for day in DAYS:
        result = dg.materialize(ALL_ASSETS, selection=KEYS, partition_key=day.isoformat(), resources=single)
        accounted = next(c for c in result.get_asset_check_evaluations() if c.check_name == "source_rows_accounted")
        assert accounted.passed, accounted.metadata
    on_day = {c: d for c, d in source.expected.items() if d in DAYS}
    assert _placed(single["lake"], DAYS) == on_day
    # One run for the whole range, as a backfill does: the same answer.
    ranged = resources_for(tmp_path / "range", url, **settings)
    with dg.instance_for_test() as instance:
        assert materialize_range(KEYS, DAYS[0], DAYS[-1], instance, ranged).success
    assert _placed(ranged["lake"], DAYS) == on_day
    # The same rows get the same derived transaction ids in both runs.
    ids = [
        res["lake"]
        .read_partitions(dg.AssetKey("validated_transactions"), [d.isoformat() for d in DAYS])
        .sort("customer_id")["transaction_id"]
        for res in (single, ranged)
    ]
    assert ids[0].to_list() == ids[1].to_list() and ids[0].is_unique().all()


@pytest.mark.parametrize("url", ["sqlite", PG_URL, MARIADB_URL], ids=["sqlite", "postgres", "mariadb"])
def test_a_value_that_does_not_fit_never_fails_the_run(url: str, tmp_path: Path) -> None:
    """Out-of-range integers, huge ids and NaN numerics are quarantined with the original value; the good rows are written."""
    from ml_assets.definitions import ALL_ASSETS

    url = f"sqlite:///{tmp_path / 'source.sqlite'}" if url == "sqlite" else url
    table = f"tx_{uuid.uuid4().hex[:8]}"
    engine = sa.create_engine(url)
    numeric = "numeric" if engine.dialect.name == "postgresql" else "double precision"
    rows = [
        {"i": 1, "c": "good", "q": 2, "a": "10.5"},
        {"i": 2, "c": "big-quantity", "q": 2**31 + 7, "a": "10.5"},
        {"i": 3, "c": "nan-amount", "q": 1, "a": "NaN" if engine.dialect.name == "postgresql" else None},
    ]
    with engine.begin() as conn:
        conn.execute(
            sa.text(f"create table {table} (transaction_id bigint, customer_id varchar(64), ts date, amount {numeric}, quantity bigint)")
        )
        for row in rows:
            conn.execute(sa.text(f"insert into {table} values (:i, :c, '2025-01-10', :a, :q)"), row)  # noqa: S608 (the test's own table name; values bound)
    try:
        res = resources_for(tmp_path, url, table=table)
        # Two of three rows are bad: let the day through the quarantine-share gate to look at the rows.
        config = {"ops": {"validated_transactions": {"config": {"max_rejected_share": 1.0}}}}
        result = dg.materialize(
            ALL_ASSETS, selection=KEYS, partition_key=DAY.isoformat(), resources=res, run_config=config, raise_on_error=False
        )
        assert result.success
        lake = res["lake"]
        valid = lake.read_partitions(dg.AssetKey("validated_transactions"), [DAY.isoformat()])
        quarantined = lake.read_partitions(dg.AssetKey("quarantined_transactions"), [DAY.isoformat()]).sort("transaction_id")
        assert valid["customer_id"].to_list() == ["good"]
        assert quarantined["customer_id"].to_list() == ["big-quantity", "nan-amount"]
        assert '"quantity": "2147483655"' in quarantined["_type_errors"][0]
        assert pl.Series(quarantined["rejected_reasons"]).str.contains("amount").to_list()[1]
    finally:
        with engine.begin() as conn:
            conn.execute(sa.text(f"drop table {table}"))
        engine.dispose()


OUT_OF_RANGE = [
    ("postgres-timestamp", PG_URL, "timestamp", ["infinity", "-infinity", "0001-01-01 00:00:00 BC", "10000-01-01 00:00:00"]),
    ("postgres-timestamptz", PG_URL, "timestamptz", ["infinity", "-infinity", "0044-03-15 12:00:00+00 BC", "12000-06-01 00:00:00+00"]),
    ("postgres-date", PG_URL, "date", ["infinity", "-infinity", "0001-01-01 BC", "10000-01-01"]),
    ("mariadb-datetime", MARIADB_URL, "datetime(6)", ["0000-01-01 00:00:00"]),
    ("mariadb-text", MARIADB_URL, "varchar(40)", ["infinity", "-infinity", "0000-01-01 00:00:00", "10000-01-01 00:00:00"]),
    ("sqlite-text", "sqlite", "text", ["infinity", "-infinity", "0000-01-01 00:00:00", "10000-01-01 00:00:00"]),
]


@pytest.mark.parametrize(("name", "url", "ddl", "values"), OUT_OF_RANGE, ids=[c[0] for c in OUT_OF_RANGE])
def test_an_out_of_range_timestamp_is_set_aside_and_never_fails_the_run(
    name: str, url: str, ddl: str, values: list[str], tmp_path: Path
) -> None:
    """Infinity, years before 1 and after 9999 (what each database can hold) are set aside as ts_out_of_range; the run
    succeeds, the good row is validated and every source row is accounted for."""
    from ml_assets.definitions import ALL_ASSETS

    url = f"sqlite:///{tmp_path / 'source.sqlite'}" if url == "sqlite" else url
    table = f"tx_{uuid.uuid4().hex[:8]}"
    engine = sa.create_engine(url)
    with engine.begin() as conn:
        conn.execute(sa.text(f"create table {table} (transaction_id bigint, customer_id varchar(64), ts {ddl}, amount double precision)"))
        conn.execute(sa.text(f"insert into {table} values (1, 'good', '2025-01-10 10:00:00', 5.0)"))  # noqa: S608 (the test's own table name)
        for i, value in enumerate(values):
            conn.execute(sa.text(f"insert into {table} values (:i, :c, :t, 5.0)"), {"i": i + 2, "c": f"far{i}", "t": value})  # noqa: S608 (the test's own table name; values bound)
    try:
        res = resources_for(tmp_path, url, table=table)
        result = dg.materialize(ALL_ASSETS, selection=KEYS, partition_key=DAY.isoformat(), resources=res)
        assert result.success
        lake = res["lake"]
        assert lake.read_partitions(dg.AssetKey("validated_transactions"), [DAY.isoformat()])["customer_id"].to_list() == ["good"]
        aside = lake.read_single(dg.AssetKey("unplaceable_transactions")).sort("transaction_id")
        assert aside["unplaceable_reason"].to_list() == ["ts_out_of_range"] * len(values), aside
        assert aside["customer_id"].to_list() == [f"far{i}" for i in range(len(values))]
        assert all(aside["ts"].str.len_chars() > 0)  # the original value, as the database writes it
        checks = {c.check_name: c for c in result.get_asset_check_evaluations()}
        assert checks["source_rows_accounted"].passed
    finally:
        with engine.begin() as conn:
            conn.execute(sa.text(f"drop table {table}"))
        engine.dispose()


def test_a_further_categorical_column_reaches_the_lake_and_the_features(tmp_path: Path) -> None:
    from lib.datagen import RetailConfig, generate_retail
    from lib.features import feature_columns, snapshots_features
    from ml_assets.pipeline import materialize_range
    from resources.warehouse import write_frame

    url = f"sqlite:///{tmp_path / 'shop.sqlite'}"
    log = generate_retail(RetailConfig(start=DAYS[0] - dt.timedelta(days=20), end=DAYS[-1], customers=300))
    log = log.with_columns(pl.when(pl.col("amount") > 30).then(pl.lit("NL")).otherwise(pl.lit("BE")).alias("country"))
    write_frame(url, "purchases", log)
    settings = {"table": "purchases", "column_map": {"customer_id": "customer_no", "ts": "purchase_date"}, "categoricals": ["country"]}
    res = resources_for(tmp_path, url, **settings)
    with dg.instance_for_test() as instance:
        assert materialize_range(KEYS, DAYS[0], DAYS[-1], instance, res).success
    lake = res["lake"]
    valid = lake.read_partitions(dg.AssetKey("validated_transactions"), [d.isoformat() for d in DAYS])
    assert set(valid["cat_country"]) == {"NL", "BE"}
    # The features asset computes this from the warehouse's extra columns (its inputs span 180 days: too long to ingest here).
    extras = tuple(res["warehouse"].extra_columns)
    columns = feature_columns({"quantity"}, extras=extras)
    features = snapshots_features(valid, [DAYS[-1]], columns=columns, extras=extras)
    assert "n_country_values" in features.columns and features["n_country_values"].is_between(1, 2).all()
    # A named column the table lacks fails once, naming it and the setting.
    wrong = resources_for(tmp_path / "wrong", url, **{**settings, "categoricals": ["region"]})
    result = dg.materialize(
        __import__("ml_assets.definitions", fromlist=["ALL_ASSETS"]).ALL_ASSETS,
        selection=KEYS,
        partition_key=DAY.isoformat(),
        resources=wrong,
        raise_on_error=False,
    )
    failure = next(e for e in result.all_events if e.is_step_failure)
    assert "['region']" in failure.step_failure_data.error.message and "CHURN_CATEGORICALS" in failure.step_failure_data.error.message
