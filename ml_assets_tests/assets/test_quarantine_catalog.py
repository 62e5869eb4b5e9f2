"""The bad-input catalog, run through the real assets on a real SQLite source.

Each case plants bad input for one day among good rows, materializes
raw -> validated + quarantined for that day, and checks the stated outcome:
quarantined with a named rule, or a clear failure that names the problem.
Every case also checks that nothing is lost: each source row of the day is in
exactly one of the two outputs.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import dagster as dg
import polars as pl
import pytest
import sqlalchemy as sa

from lib.datagen import GeneratorConfig, generate_transactions
from ml_assets_tests.conftest import resources_for
from resources import SqlWarehouse

DAY = dt.date(2025, 1, 10)
KEYS = ["raw_transactions", "validated_transactions", "quarantined_transactions"]
BAD_ID = 9_000_001


LOOSE_TABLE = (
    "create table transactions (transaction_id integer, customer_id text, ts timestamp, amount real, "
    "quantity integer, channel text, category text, payment_method text)"
)


def _good_rows() -> pl.DataFrame:
    tx = generate_transactions(GeneratorConfig(start=DAY, end=DAY, customers=400, seed=4))
    return tx.head(30)


def _row(**change: object) -> dict[str, object]:
    row = {
        "transaction_id": BAD_ID,
        "customer_id": "C00000042",
        "ts": "2025-01-10 12:00:00.000000",
        "amount": 12.5,
        "quantity": 2,
        "channel": "web",
        "category": "home",
        "payment_method": "card",
    }
    row.update(change)
    return row


def insert(*rows: dict[str, object]) -> Callable[[sa.Engine], None]:
    def plant(engine: sa.Engine) -> None:
        with engine.begin() as conn:
            for row in rows:
                cols = ", ".join(row)
                # Column names come from the test's own fixed rows; values are bound parameters.
                conn.execute(sa.text(f"insert into transactions ({cols}) values ({', '.join(':' + c for c in row)})"), row)  # noqa: S608

    return plant


def ddl(statement: str) -> Callable[[sa.Engine], None]:
    def run(engine: sa.Engine) -> None:
        with engine.begin() as conn:
            conn.execute(sa.text("drop table transactions"))
            conn.execute(sa.text(statement))

    return run


def raw_bytes_customer(engine: sa.Engine) -> None:
    with engine.begin() as conn:
        conn.execute(
            sa.text("insert into transactions values (:i, cast(:c as text), '2025-01-10 09:00:00.000000', 5.0, 1, 'web', 'home', 'card')"),
            {"i": BAD_ID, "c": b"C12\xff\xfe"},
        )


def blob_amount(engine: sa.Engine) -> None:
    with engine.begin() as conn:
        conn.execute(
            sa.text("insert into transactions values (:i, 'C7', '2025-01-10 09:00:00', :a, 1, 'web', 'home', 'card')"),
            {"i": BAD_ID, "a": b"\x00\x01\xff"},
        )


CLOSED = {
    "closed_vocabularies": {
        "channel": ["web", "mobile", "store"],
        "category": ["grocery", "electronics", "apparel", "home", "beauty", "sports"],
    }
}


@dataclass(frozen=True)
class Case:
    name: str
    plant: Callable[[sa.Engine], None]
    rule: str | None = None  # the row BAD_ID is quarantined with this rule
    error: str | None = None  # or the run fails with this text
    valid: bool = False  # or the planted row is valid
    elsewhere: bool = False  # or it belongs to a neighbouring day: not in this day, counted as set aside
    unplaceable: str | None = None  # or it belongs to no day: kept in unplaceable_transactions with this reason
    warehouse: dict[str, object] | None = None  # settings of the source (closed vocabularies, id pattern)


CASES = [
    *[
        Case(f"null {c}", insert(_row(**{c: None})), rule=f"{c}_not_null")
        for c in ("customer_id", "amount", "quantity", "channel", "category")
    ],
    Case("null transaction_id", insert(_row(transaction_id=None)), rule="transaction_id_not_null"),
    Case("negative amount", insert(_row(amount=-4.0)), rule="amount_positive"),
    Case("zero amount, zero_amount quarantine", insert(_row(amount=0.0)), rule="amount_positive", warehouse={"zero_amount": "quarantine"}),
    Case("zero amount, zero_amount keep (the default)", insert(_row(amount=0.0)), valid=True),
    Case("NaN amount", insert(_row(amount="NaN")), rule="values_have_expected_types"),
    Case("infinite amount", insert(_row(amount=float("inf"))), rule="amount_finite"),
    Case("absurd amount", insert(_row(amount=3.5e12)), rule="amount_plausible"),
    Case("amount as text", insert(_row(amount="twelve")), rule="values_have_expected_types"),
    Case("amount as plain decimal text", insert(_row(amount="12.50")), valid=True),
    Case("amount with a digit separator", insert(_row(amount="1_000")), rule="values_have_expected_types"),
    Case("amount in Arabic-Indic digits", insert(_row(amount="\u0661\u0660")), rule="values_have_expected_types"),
    Case("amount as bytes", blob_amount, rule="values_have_expected_types"),
    Case("quantity with a fraction", insert(_row(quantity=2.5)), rule="values_have_expected_types"),
    Case("quantity above 2^31", insert(_row(quantity=2**31 + 5)), rule="values_have_expected_types"),
    Case("transaction id of 1e20", insert(_row(transaction_id=1e20)), rule="transaction_id_not_null"),
    Case("duplicate id within the day", insert(_row(), _row(amount=99.0)), rule="transaction_id_unique"),
    Case("id already recorded the day before", insert(_row(ts="2025-01-09 10:00:00.000000"), _row()), rule="transaction_id_new"),
    Case("time-zone-aware, on the day before in UTC", insert(_row(ts="2025-01-10 02:00:00+05:00")), elsewhere=True),
    Case("time-zone-aware, inside the day in UTC", insert(_row(ts="2025-01-10 12:00:00+01:00")), valid=True),
    Case("time-zone-aware, from the day before into this one", insert(_row(ts="2025-01-09T22:00:00-05:00")), valid=True),
    Case("midnight without a fraction", insert(_row(ts="2025-01-10 00:00:00")), valid=True),
    Case("next day's midnight without a fraction", insert(_row(ts="2025-01-11 00:00:00")), elsewhere=True),
    Case("date only", insert(_row(ts="2025-01-10")), valid=True),
    Case("ISO with T and Z", insert(_row(ts="2025-01-10T23:59:59.999999Z")), valid=True),
    Case("nanosecond fraction", insert(_row(ts="2025-01-10 08:00:00.123456789")), valid=True),
    Case("leap second", insert(_row(ts="2025-01-10 23:59:60")), rule="values_have_expected_types"),
    Case("hour 25", insert(_row(ts="2025-01-10 25:00:00")), rule="values_have_expected_types"),
    Case("unparseable timestamp", insert(_row(ts="2025-01-10 noon")), rule="values_have_expected_types"),
    Case("epoch seconds", insert(_row(ts=1736500000)), unplaceable="ts_unreadable"),
    Case("slashes", insert(_row(ts="2025/01/10 12:00:00")), unplaceable="ts_unreadable"),
    Case("empty timestamp", insert(_row(ts="")), unplaceable="ts_unreadable"),
    Case("zero date", insert(_row(ts="0000-00-00")), unplaceable="ts_unreadable"),
    Case("null timestamp", insert(_row(ts=None)), unplaceable="ts_missing"),
    Case("infinity", insert(_row(ts="infinity")), unplaceable="ts_out_of_range"),
    Case("-infinity", insert(_row(ts="-infinity")), unplaceable="ts_out_of_range"),
    Case("year 0", insert(_row(ts="0000-01-01 00:00:00")), unplaceable="ts_out_of_range"),
    Case("year 10000", insert(_row(ts="10000-01-01 00:00:00")), unplaceable="ts_out_of_range"),
    Case("1970", insert(_row(ts="1970-01-01 00:00:00")), unplaceable="ts_before_calendar"),
    Case("9999", insert(_row(ts="9999-12-31 23:59:59")), unplaceable="ts_after_calendar"),
    Case("unknown channel (open vocabulary)", insert(_row(channel="carrier pigeon")), valid=True),
    Case("unknown channel (closed vocabulary)", insert(_row(channel="carrier pigeon")), rule="channel_known", warehouse=CLOSED),
    Case("unknown category (closed vocabulary)", insert(_row(category="weapons")), rule="category_known", warehouse=CLOSED),
    Case("numeric customer id", insert(_row(customer_id=42)), valid=True),
    Case("UUID customer id", insert(_row(customer_id="0b6f3c1e-8d1a-4f4e-9c55-0a4f2d9e7b11")), valid=True),
    Case("customer id with a trailing newline", insert(_row(customer_id="C00000042\n")), rule="customer_id_well_formed"),
    Case("empty customer id", insert(_row(customer_id="")), rule="customer_id_well_formed"),
    Case("whitespace customer id", insert(_row(customer_id="  \t ")), rule="customer_id_well_formed"),
    Case("10 KB customer id", insert(_row(customer_id="C" + "1" * 10_240)), rule="customer_id_well_formed"),
    Case("SQL-looking customer id", insert(_row(customer_id="C1'); DROP TABLE transactions; --")), valid=True),
    Case(
        "customer id off the declared pattern",
        insert(_row(customer_id="42")),
        rule="customer_id_well_formed",
        warehouse={"customer_id_pattern": r"C[0-9]{8}"},
    ),
    Case("non-UTF-8 customer id", raw_bytes_customer, rule="values_have_expected_types"),
    # The bytes spell a valid id, but a binary value is not text: a type error, never read as that customer.
    Case("BLOB customer id", insert(_row(customer_id=b"C00000042")), rule="values_have_expected_types"),
    Case("BLOB channel", insert(_row(channel=b"web")), rule="values_have_expected_types"),
    Case(
        "missing required column",
        ddl(
            "create table transactions (transaction_id integer, customer_id text, ts timestamp, quantity integer, channel text, category text)"
        ),
        error="'amount'",
    ),
    Case(
        "renamed column",
        ddl(
            "create table transactions (transaction_id integer, customer_id text, created_at timestamp, amount real, "
            "quantity integer, channel text, category text)"
        ),
        error="CHURN_COLUMN_MAP",
    ),
    Case(
        "column of the wrong type",
        ddl(
            "create table transactions (transaction_id integer, customer_id blob, ts timestamp, amount real, "
            "quantity integer, channel text, category text)"
        ),
        error="'customer_id' is BLOB, expected a string, integer or UUID type",
    ),
]


def _run(tmp_path: Path, plant: Callable[[sa.Engine], None], good: pl.DataFrame | None = None, warehouse: dict | None = None):
    from ml_assets.definitions import ALL_ASSETS

    url = f"sqlite:///{tmp_path / 'source.sqlite'}"
    wh = SqlWarehouse(url=url)
    # A user's table, not ours: no constraints that would stop bad rows at the door.
    with sa.create_engine(url).begin() as conn:
        conn.execute(sa.text(LOOSE_TABLE))
    rows = _good_rows() if good is None else good
    wh.append(rows)
    plant(sa.create_engine(url))
    res = resources_for(tmp_path, url, **(warehouse or {}))
    result = dg.materialize(ALL_ASSETS, selection=KEYS, partition_key=DAY.isoformat(), resources=res, raise_on_error=False)
    return result, res["lake"], rows


def _md(result: dg.ExecuteInProcessResult, key: str) -> dict:
    return next(e.materialization.metadata for e in result.get_asset_materialization_events() if e.asset_key == dg.AssetKey(key))


def _read(lake, key: str) -> pl.DataFrame:
    return lake.read_partitions(dg.AssetKey(key), [DAY.isoformat()])


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_bad_input(case: Case, tmp_path: Path) -> None:
    result, lake, good = _run(tmp_path, case.plant, warehouse=case.warehouse)
    if case.error:
        assert not result.success
        failure = next(e for e in result.all_events if e.is_step_failure)
        message = failure.step_failure_data.error.message
        assert case.error in message, message
        return
    assert result.success, [e.message for e in result.all_events if e.is_failure]
    raw, valid, quarantined = (_read(lake, k) for k in KEYS)
    # Nothing lost, nothing doubled.
    assert raw.height == valid.height + quarantined.height
    assert sorted(raw["transaction_id"].drop_nulls().to_list() + [None] * raw["transaction_id"].null_count(), key=str) == sorted(
        valid["transaction_id"].to_list() + quarantined["transaction_id"].to_list(), key=str
    )
    assert set(good["transaction_id"]) <= set(valid["transaction_id"])  # good rows untouched
    checks = {c.check_name: c for c in result.get_asset_check_evaluations()}
    assert checks["source_rows_accounted"].passed and checks["rows_conserved"].passed
    unplaceable = lake.read_single(dg.AssetKey("unplaceable_transactions"))
    if case.elsewhere or case.unplaceable:
        assert BAD_ID not in raw["transaction_id"].to_list()
        accounted = checks["source_rows_accounted"].metadata
        if case.elsewhere:
            assert accounted["rows_of_neighbouring_days"].value == 1 and unplaceable.is_empty()
        else:
            assert unplaceable.select("transaction_id", "unplaceable_reason").rows() == [(str(BAD_ID), case.unplaceable)]
            assert _md(result, "raw_transactions")["source_unplaceable_rows"].value == 1
        return
    if case.valid:
        assert BAD_ID in valid["transaction_id"].to_list() and quarantined.is_empty()
        return
    planted = quarantined.filter(
        pl.col("transaction_id").is_null() if case.rule == "transaction_id_not_null" else pl.col("transaction_id") == BAD_ID
    )
    assert planted.height >= 1, quarantined
    assert case.rule in planted["rejected_reasons"][-1].split(";")


def test_unparseable_and_text_values_keep_the_original(tmp_path: Path) -> None:
    _, lake, _ = _run(tmp_path, insert(_row(amount="twelve")))
    row = _read(lake, "quarantined_transactions").row(0, named=True)
    assert row["_type_errors"] == '{"amount": "twelve"}'


def test_extra_column_is_reported_and_ignored(tmp_path: Path) -> None:
    def add_column(engine: sa.Engine) -> None:
        with engine.begin() as conn:
            conn.execute(sa.text("alter table transactions add column loyalty_tier text"))

    result, lake, good = _run(tmp_path, add_column)
    assert result.success
    assert _read(lake, "validated_transactions").height == good.height
    assert "loyalty_tier" not in _read(lake, "raw_transactions").columns
    assert _md(result, "raw_transactions")["ignored_source_columns"].value == ["loyalty_tier"]


def test_a_huge_value_is_kept_whole_in_the_lake_and_bounded_in_metadata(tmp_path: Path) -> None:
    huge = "9" * 1_000_000 + "x"
    result, lake, _ = _run(tmp_path, insert(_row(amount=huge)))
    assert result.success
    row = _read(lake, "quarantined_transactions").row(0, named=True)
    assert row["_type_errors"] == '{"amount": "%s"}' % huge  # noqa: UP031
    for event in result.get_asset_materialization_events():
        size = sum(len(str(v.value)) for v in event.materialization.metadata.values())
        assert size < 20_000, (event.asset_key, size)


def test_the_unplaceable_rows_are_an_asset_with_their_counts(tmp_path: Path) -> None:
    result, lake, _ = _run(tmp_path, insert(_row(ts=None), _row(transaction_id=BAD_ID + 1, ts="yesterday")))
    assert result.success
    event = next(e for e in result.get_asset_materialization_events() if e.asset_key == dg.AssetKey("unplaceable_transactions"))
    assert event.materialization.metadata["by_reason"].value == {"ts_missing": 1, "ts_unreadable": 1}
    kept = lake.read_single(dg.AssetKey("unplaceable_transactions"))
    assert sorted(kept["ts"].to_list(), key=str) == [None, "yesterday"] and set(kept["amount"]) == {"12.5"}


def test_empty_partition_succeeds_with_zero_rows_and_says_so(tmp_path: Path) -> None:
    result, lake, _ = _run(tmp_path, lambda engine: None, good=_good_rows().clear())
    assert result.success
    assert _read(lake, "validated_transactions").height == 0 and _read(lake, "quarantined_transactions").height == 0
    md = result.asset_materializations_for_node("validated_transactions")
    validated_md = next(m.metadata for m in md if m.asset_key == dg.AssetKey("validated_transactions"))
    assert validated_md["empty_partition"].value is True
    assert validated_md["dagster/row_count"].value == 0


def test_entirely_bad_partition_is_blocked_and_kept(tmp_path: Path) -> None:
    bad = _good_rows().with_columns(-pl.col("amount"))
    result, lake, _ = _run(tmp_path, lambda engine: None, good=bad)
    assert not result.success
    checks = {c.check_name: c for c in result.get_asset_check_evaluations()}
    assert checks["rejected_share_below_threshold"].passed is False
    assert "2025-01-10" in checks["rejected_share_below_threshold"].description
    assert "amount_positive" in checks["rejected_share_below_threshold"].description
    assert checks["rows_conserved"].passed
    assert _read(lake, "quarantined_transactions").height == bad.height
    assert _read(lake, "validated_transactions").height == 0


def test_rematerializing_after_a_fix_replaces_both_outputs(tmp_path: Path) -> None:
    from ml_assets.definitions import ALL_ASSETS

    result, lake, good = _run(tmp_path, insert(_row(amount=-1.0)))
    assert _read(lake, "quarantined_transactions").height == 1
    url = f"sqlite:///{tmp_path / 'source.sqlite'}"
    with sa.create_engine(url).begin() as conn:
        conn.execute(sa.text("update transactions set amount = 1.0 where transaction_id = :i"), {"i": BAD_ID})
    again = dg.materialize(ALL_ASSETS, selection=KEYS, partition_key=DAY.isoformat(), resources=resources_for(tmp_path, url))
    assert again.success
    assert _read(lake, "quarantined_transactions").height == 0
    valid = _read(lake, "validated_transactions")
    assert valid.height == good.height + 1 and valid["transaction_id"].is_unique().all()


def test_one_bad_row_never_blocks_a_small_day(tmp_path: Path) -> None:
    # 1 of 5 rows (20 %) is far above max_rejected_share, but one row is below min_rejected_rows: quarantined, not blocked.
    result, lake, good = _run(tmp_path, insert(_row(amount=-1.0)), good=_good_rows().head(4))
    assert result.success
    assert _read(lake, "quarantined_transactions").height == 1 and _read(lake, "validated_transactions").height == 4
    check = next(c for c in result.get_asset_check_evaluations() if c.check_name == "rejected_share_below_threshold")
    assert check.passed and check.metadata["min_rejected_rows"].value == 5
