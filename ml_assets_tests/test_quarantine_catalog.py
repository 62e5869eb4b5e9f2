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

from ml_assets.lib.datagen import GeneratorConfig, generate_transactions
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


@dataclass(frozen=True)
class Case:
    name: str
    plant: Callable[[sa.Engine], None]
    rule: str | None = None  # the row BAD_ID is quarantined with this rule
    error: str | None = None  # or the run fails with this text
    valid: bool = False  # or the planted row is valid
    check: Callable[[dict[str, object]], None] | None = None


CASES = [
    *[
        Case(f"null {c}", insert(_row(**{c: None})), rule=f"{c}_not_null")
        for c in ("customer_id", "amount", "quantity", "channel", "category")
    ],
    Case("null transaction_id", insert(_row(transaction_id=None)), rule="transaction_id_not_null"),
    Case("negative amount", insert(_row(amount=-4.0)), rule="amount_positive"),
    Case("zero amount", insert(_row(amount=0.0)), rule="amount_positive"),
    Case("NaN amount", insert(_row(amount="NaN")), rule="amount_finite"),
    Case("infinite amount", insert(_row(amount=float("inf"))), rule="amount_finite"),
    Case("absurd amount", insert(_row(amount=3.5e12)), rule="amount_plausible"),
    Case("amount as text", insert(_row(amount="twelve")), rule="values_have_expected_types"),
    Case("quantity with a fraction", insert(_row(quantity=2.5)), rule="values_have_expected_types"),
    Case("duplicate id within the day", insert(_row(), _row(amount=99.0)), rule="transaction_id_unique"),
    Case("id already recorded the day before", insert(_row(ts="2025-01-09 10:00:00.000000"), _row()), rule="transaction_id_new"),
    Case("time-zone-aware, outside the day in UTC", insert(_row(ts="2025-01-10 02:00:00+05:00")), rule="ts_in_partition"),
    Case("time-zone-aware, inside the day in UTC", insert(_row(ts="2025-01-10 12:00:00+01:00")), valid=True),
    Case("unparseable timestamp", insert(_row(ts="2025-01-10 noon")), rule="values_have_expected_types"),
    Case("unknown channel", insert(_row(channel="carrier pigeon")), rule="channel_known"),
    Case("unknown category", insert(_row(category="weapons")), rule="category_known"),
    Case("empty customer id", insert(_row(customer_id="")), rule="customer_id_well_formed"),
    Case("whitespace customer id", insert(_row(customer_id="  \t ")), rule="customer_id_well_formed"),
    Case("10 KB customer id", insert(_row(customer_id="C" + "1" * 10_240)), rule="customer_id_well_formed"),
    Case("SQL-looking customer id", insert(_row(customer_id="C1'); DROP TABLE transactions; --")), rule="customer_id_well_formed"),
    Case("non-UTF-8 customer id", raw_bytes_customer, rule="customer_id_well_formed"),
    Case(
        "missing column",
        ddl("create table transactions (transaction_id integer, customer_id text, ts timestamp, amount real, channel text, category text)"),
        error="quantity",
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
            "create table transactions (transaction_id integer, customer_id text, ts timestamp, amount text, "
            "quantity integer, channel text, category text)"
        ),
        error="'amount' is TEXT, expected a numeric type",
    ),
]


def _run(tmp_path: Path, plant: Callable[[sa.Engine], None], good: pl.DataFrame | None = None):  # noqa: ANN202
    from ml_assets.definitions import ALL_ASSETS

    url = f"sqlite:///{tmp_path / 'source.sqlite'}"
    wh = SqlWarehouse(url=url)
    # A user's table, not ours: no constraints that would stop bad rows at the door.
    with sa.create_engine(url).begin() as conn:
        conn.execute(sa.text(LOOSE_TABLE))
    rows = _good_rows() if good is None else good
    wh.append(rows)
    plant(sa.create_engine(url))
    res = resources_for(tmp_path, url)
    result = dg.materialize(ALL_ASSETS, selection=KEYS, partition_key=DAY.isoformat(), resources=res, raise_on_error=False)
    return result, res["lake"], rows


def _read(lake, key: str) -> pl.DataFrame:  # noqa: ANN001
    return lake.read_partitions(dg.AssetKey(key), [DAY.isoformat()])


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_bad_input(case: Case, tmp_path: Path) -> None:
    result, lake, good = _run(tmp_path, case.plant)
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
    md = result.asset_materializations_for_node("raw_transactions")[0].metadata
    assert md["ignored_source_columns"].value == ["loyalty_tier"]


def test_row_without_timestamp_is_reported(tmp_path: Path) -> None:
    result, lake, good = _run(tmp_path, insert(_row(ts=None)))
    assert result.success
    md = result.asset_materializations_for_node("raw_transactions")[0].metadata
    assert md["source_rows_without_timestamp"].value == 1
    assert _read(lake, "raw_transactions").height == good.height


def test_empty_partition_succeeds_with_zero_rows_and_says_so(tmp_path: Path) -> None:
    result, lake, _ = _run(tmp_path, lambda engine: None, good=_good_rows().clear())
    assert result.success
    assert _read(lake, "validated_transactions").height == 0 and _read(lake, "quarantined_transactions").height == 0
    md = result.asset_materializations_for_node("validated_transactions")
    validated_md = next(m.metadata for m in md if m.asset_key == dg.AssetKey("validated_transactions"))
    assert validated_md["empty_partition"].value is True
    assert validated_md["dagster/row_count"].value == 0


def test_entirely_bad_partition_is_blocked_and_kept(tmp_path: Path) -> None:
    bad = _good_rows().with_columns(pl.lit("fax").alias("channel"))
    result, lake, _ = _run(tmp_path, lambda engine: None, good=bad)
    assert not result.success
    checks = {c.check_name: c for c in result.get_asset_check_evaluations()}
    assert checks["rejected_share_below_threshold"].passed is False
    assert "2025-01-10" in checks["rejected_share_below_threshold"].description
    assert "channel_known" in checks["rejected_share_below_threshold"].description
    assert checks["rows_conserved"].passed
    assert _read(lake, "quarantined_transactions").height == bad.height
    assert _read(lake, "validated_transactions").height == 0


def test_rematerializing_after_a_fix_replaces_both_outputs(tmp_path: Path) -> None:
    from ml_assets.definitions import ALL_ASSETS

    result, lake, good = _run(tmp_path, insert(_row(channel="fax")))
    assert _read(lake, "quarantined_transactions").height == 1
    url = f"sqlite:///{tmp_path / 'source.sqlite'}"
    with sa.create_engine(url).begin() as conn:
        conn.execute(sa.text("update transactions set channel = 'web' where transaction_id = :i"), {"i": BAD_ID})
    again = dg.materialize(ALL_ASSETS, selection=KEYS, partition_key=DAY.isoformat(), resources=resources_for(tmp_path, url))
    assert again.success
    assert _read(lake, "quarantined_transactions").height == 0
    valid = _read(lake, "validated_transactions")
    assert valid.height == good.height + 1 and valid["transaction_id"].is_unique().all()
