"""Row rules: each bad row is quarantined with the rule it broke, nothing is lost."""

from __future__ import annotations

import datetime as dt

import polars as pl
import pytest

from ml_assets.lib.validation import rule_counts, split_valid
from ml_assets.schema import RAW_SCHEMA

DAY = dt.datetime(2025, 1, 10)
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
    ({"ts": None}, "ts_not_null"),
    ({"amount": float("nan")}, "amount_finite"),
    ({"amount": float("inf")}, "amount_finite"),
    ({"amount": 0.0}, "amount_positive"),
    ({"amount": -3.0}, "amount_positive"),
    ({"amount": 5e9}, "amount_plausible"),
    ({"quantity": 0}, "quantity_in_range"),
    ({"channel": "fax"}, "channel_known"),
    ({"category": "weapons"}, "category_known"),
    ({"payment_method": "barter"}, "payment_method_known"),
    ({"customer_id": "   "}, "customer_id_well_formed"),
    ({"customer_id": "C1'; DROP TABLE transactions;--"}, "customer_id_well_formed"),
    ({"customer_id": "C" + "9" * 10_000}, "customer_id_well_formed"),
    ({"ts": dt.datetime(2025, 1, 11, 0, 0)}, "ts_in_partition"),
    ({"ts": dt.datetime(2030, 1, 1)}, "ts_in_partition"),
]


@pytest.mark.parametrize(("change", "rule"), CASES, ids=[c[1] + "-" + str(i) for i, c in enumerate(CASES)])
def test_bad_row_is_quarantined_with_its_rule(change: dict[str, object], rule: str) -> None:
    good2 = {**GOOD, "transaction_id": 2}
    frame = pl.DataFrame([good2, {**GOOD, **change}], schema=RAW_SCHEMA)
    valid, rejected = split_valid(frame, DAY, DAY + dt.timedelta(days=1))
    assert valid["transaction_id"].to_list() == [2]
    assert rejected.height == 1
    assert rule in rejected["rejected_reasons"][0].split(";")
    assert valid.height + rejected.height == frame.height


def test_duplicate_ids_keep_the_first_and_quarantine_the_rest() -> None:
    frame = pl.DataFrame([GOOD, {**GOOD, "amount": 11.0}, {**GOOD, "amount": 12.0}], schema=RAW_SCHEMA)
    valid, rejected = split_valid(frame, DAY, DAY + dt.timedelta(days=1))
    assert valid["amount"].to_list() == [10.0]
    assert rule_counts(rejected) == {"transaction_id_unique": 2}


def test_a_row_breaking_several_rules_lists_them_all() -> None:
    frame = pl.DataFrame([{**GOOD, "amount": -1.0, "channel": "fax"}], schema=RAW_SCHEMA)
    _, rejected = split_valid(frame, DAY, DAY + dt.timedelta(days=1))
    assert set(rejected["rejected_reasons"][0].split(";")) == {"amount_positive", "channel_known"}


def test_empty_input_gives_empty_outputs() -> None:
    valid, rejected = split_valid(pl.DataFrame(schema=RAW_SCHEMA), DAY, DAY + dt.timedelta(days=1))
    assert valid.is_empty() and rejected.is_empty()
    assert "rejected_reasons" in rejected.columns
