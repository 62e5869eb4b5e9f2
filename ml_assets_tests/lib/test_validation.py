"""Row rules (the GX suite) on hand-built rows: each bad row is quarantined with its rule."""

from __future__ import annotations

import datetime as dt

import polars as pl
import pytest

from lib.expectations import RAW_RULE_NAMES, RawContract, quarantine, raw_row_rules, unknown_values
from lib.schema import CATEGORIES, CHANNELS, PAYMENT_METHODS, RAW_SCHEMA

DAY = dt.date(2025, 1, 10)
NOW = dt.datetime(2025, 1, 10, 18)
GOOD = {
    "transaction_id": 1,
    "customer_id": "C00000001",
    "ts": dt.datetime(2025, 1, 10, 12),
    "amount": 10.0,
    "quantity": 1,
    "channel": "web",
    "category": "grocery",
    "payment_method": "card",
}

CASES = [
    ({"customer_id": None}, "customer_id_not_null"),
    ({"amount": None}, "amount_not_null"),
    ({"quantity": None}, "quantity_not_null"),
    ({"amount": float("nan")}, "amount_finite"),
    ({"amount": float("inf")}, "amount_finite"),
    ({"amount": -3.0}, "amount_positive"),
    ({"amount": 5e9}, "amount_plausible"),
    ({"quantity": 0}, "quantity_in_range"),
    ({"channel": "fax"}, "channel_known"),
    ({"category": "weapons"}, "category_known"),
    ({"payment_method": "barter"}, "payment_method_known"),
    ({"customer_id": "   "}, "customer_id_well_formed"),
    ({"customer_id": ""}, "customer_id_well_formed"),
    ({"customer_id": "C00000042\n"}, "customer_id_well_formed"),
    ({"customer_id": " C00000042"}, "customer_id_well_formed"),
    ({"customer_id": "C1\x00"}, "customer_id_well_formed"),
    ({"customer_id": "C" + "9" * 10_000}, "customer_id_well_formed"),
    ({"ts": dt.datetime(2025, 1, 10, 20)}, "ts_not_in_future"),
]


# The generator's vocabularies declared closed: what a user asks for with CHURN_CLOSED_VOCABULARIES.
CLOSED = RawContract(closed_vocabularies={"channel": CHANNELS, "category": CATEGORIES, "payment_method": PAYMENT_METHODS})


def _run(rows: list[dict], seen_before: set[int] | None = None, contract: RawContract = CLOSED) -> tuple[pl.DataFrame, pl.DataFrame]:
    frame = pl.DataFrame(rows, schema=RAW_SCHEMA)
    result = quarantine(frame, [DAY], seen_before or set(), NOW, contract)
    assert result.valid.height + result.rejected.height == frame.height
    return result.valid, result.rejected


@pytest.mark.parametrize(("change", "rule"), CASES, ids=[c[1] + "-" + str(i) for i, c in enumerate(CASES)])
def test_bad_row_is_quarantined_with_its_rule(change: dict[str, object], rule: str) -> None:
    valid, rejected = _run([{**GOOD, "transaction_id": 2}, {**GOOD, **change}])
    assert valid["transaction_id"].to_list() == [2]
    assert rule in rejected["rejected_reasons"][0].split(";")


def test_duplicate_ids_keep_the_first_and_quarantine_the_rest() -> None:
    valid, rejected = _run([GOOD, {**GOOD, "amount": 11.0}, {**GOOD, "amount": 12.0}])
    assert valid["amount"].to_list() == [10.0]
    assert rejected["rejected_reasons"].to_list() == ["transaction_id_unique"] * 2


def test_an_id_recorded_on_an_earlier_day_is_quarantined() -> None:
    valid, rejected = _run([GOOD, {**GOOD, "transaction_id": 2}], seen_before={2})
    assert valid["transaction_id"].to_list() == [1]
    assert rejected["rejected_reasons"].to_list() == ["transaction_id_new"]


def test_a_row_breaking_several_rules_lists_them_all() -> None:
    _, rejected = _run([{**GOOD, "amount": -1.0, "channel": "fax"}])
    assert set(rejected["rejected_reasons"][0].split(";")) == {"amount_positive", "channel_known"}


def test_empty_input_gives_empty_outputs() -> None:
    valid, rejected = _run([])
    assert valid.is_empty() and rejected.is_empty()
    assert {"rejected_reasons", "partition_date"} <= set(rejected.columns)


def test_every_rule_is_named_once() -> None:
    names = [r.name for r in raw_row_rules()]
    assert len(names) == len(set(names))
    assert tuple(names) == RAW_RULE_NAMES


@pytest.mark.parametrize(
    "customer_id", ["42", "1234567890123", "0b6f3c1e-8d1a-4f4e-9c55-0a4f2d9e7b11", "C1'; DROP TABLE transactions;--", "Zoë 7"]
)
def test_any_printable_customer_id_is_accepted_by_default(customer_id: str) -> None:
    valid, rejected = _run([{**GOOD, "customer_id": customer_id}])
    assert valid["customer_id"].to_list() == [customer_id] and rejected.is_empty()


def test_a_declared_customer_id_pattern_must_match_the_whole_value() -> None:
    contract = RawContract(customer_id_pattern=r"C[0-9]{8}")
    valid, rejected = _run(
        [GOOD, {**GOOD, "transaction_id": 2, "customer_id": "C00000001\n"}, {**GOOD, "transaction_id": 3, "customer_id": "C1"}],
        contract=contract,
    )
    assert valid["transaction_id"].to_list() == [1]
    assert rejected["rejected_reasons"].to_list() == ["customer_id_well_formed"] * 2


def test_open_vocabularies_count_unknown_values_instead_of_quarantining() -> None:
    rows = [
        GOOD,
        {**GOOD, "transaction_id": 2, "channel": "kiosk", "category": "garden"},
        {**GOOD, "transaction_id": 3, "channel": "kiosk"},
    ]
    valid, rejected = _run(rows, contract=RawContract())
    assert valid.height == 3 and rejected.is_empty()
    assert unknown_values(valid, RawContract()) == {"channel": 2, "category": 1}


def test_a_log_without_optional_columns_has_no_rules_for_them() -> None:
    contract = RawContract(present=frozenset({"transaction_id", "customer_id", "ts", "amount"}), derived_ids=True)
    names = {r.name for r in raw_row_rules(contract)}
    assert not any(n.startswith(("quantity", "channel", "category", "payment")) for n in names)
    assert not {"transaction_id_unique", "transaction_id_new", "transaction_id_not_null"} & names
    # Two identical purchases stay two purchases.
    plain = {"transaction_id": None, "customer_id": "17", "ts": GOOD["ts"], "amount": 9.5}
    frame = pl.DataFrame([plain, plain], schema=RAW_SCHEMA).with_columns(pl.Series("transaction_id", [11, 12]))
    result = quarantine(frame, [DAY], set(), NOW, contract)
    assert result.valid.height == 2 and result.rejected.is_empty()


@pytest.mark.parametrize("setting", ["keep", "quarantine"])
def test_a_zero_amount_is_kept_or_quarantined_as_the_setting_says(setting: str) -> None:
    """Free items and promotions: by default a purchase with no spend; quarantined only when the user asks."""
    from dataclasses import replace

    valid, rejected = _run([{**GOOD, "transaction_id": 2}, {**GOOD, "amount": 0.0}], contract=replace(CLOSED, zero_amount=setting))
    if setting == "keep":
        assert sorted(valid["transaction_id"].to_list()) == [1, 2] and rejected.is_empty()
        assert valid.filter(pl.col("transaction_id") == 1)["amount"].to_list() == [0.0]
    else:
        assert valid["transaction_id"].to_list() == [2] and rejected["rejected_reasons"].to_list() == ["amount_positive"]
