"""Known customers without a score are listed with the reason, never dropped silently."""

from __future__ import annotations

import datetime as dt

import polars as pl

from lib.unscored import unscored_customers

D1, D2, D3 = dt.date(2025, 3, 1), dt.date(2025, 3, 2), dt.date(2025, 3, 3)


def test_customers_whose_every_row_was_quarantined_are_listed_with_the_rules() -> None:
    quarantined = pl.DataFrame(
        {
            "customer_id": ["00042", "00042", "00007", None, "00099"],
            "rejected_reasons": [
                "amount_positive",
                "amount_positive;quantity_in_range",
                "amount_positive",
                "customer_id_not_null",
                "amount_positive",
            ],
            "day": [D1, D2, D1, D1, D3],
        }
    )
    scored = pl.Series(["00007", "00100"])  # 00007 bought validly too: scored, not listed
    listed = unscored_customers(quarantined, scored, D2)
    assert listed["customer_id"].to_list() == ["00042"]  # 00099's row is after the day; a null id names nobody
    row = listed.row(0, named=True)
    assert row["quarantined_rows"] == 2 and row["first_row_day"] == D1 and row["snapshot_date"] == D2
    assert row["reason"] == "every row quarantined (rules: amount_positive,quantity_in_range)"
    assert unscored_customers(quarantined, scored, D3)["customer_id"].to_list() == ["00042", "00099"]
    assert unscored_customers(quarantined.clear(), scored, D3).is_empty()
