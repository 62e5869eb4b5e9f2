"""Whether a calendar can train, the settings that would, and what `churn init` says about a table's shape (pure)."""

from __future__ import annotations

import datetime as dt

from lib.feasibility import Plan, outcome, propose, refusal, table_shape

YEAR = (dt.date(2024, 1, 1), dt.date(2024, 12, 31))


def test_a_year_cannot_train_on_180_days_of_history_and_the_refusal_names_what_would() -> None:
    plan = Plan(horizon_days=90, min_history_days=180)
    train_last = YEAR[1] - dt.timedelta(days=30)
    assert not outcome(YEAR[0], train_last, plan).feasible
    text = refusal(YEAR[0], train_last, plan, "churn run")
    assert text is not None and text.startswith("churn run: the days 2024-01-01..2024-12-01 (336 days) cannot give a training set")
    history = int(text.split("min_history_days ")[-1].split(" or less")[0])
    # The value it names works, and one day more does not: the smallest change, not just a change.
    assert outcome(YEAR[0], train_last, Plan(horizon_days=90, min_history_days=history)).feasible
    assert not outcome(YEAR[0], train_last, Plan(horizon_days=90, min_history_days=history + 1)).feasible


def test_the_proposal_for_a_year_trains_and_a_horizon_the_span_cannot_label_gets_none() -> None:
    proposal = propose(*YEAR, horizon_days=90, score_days=30)
    assert proposal is not None and proposal.outcome.feasible and proposal.plan.min_history_days < 180
    assert outcome(YEAR[0], YEAR[1] - dt.timedelta(days=30), proposal.plan) == proposal.outcome
    assert propose(*YEAR, horizon_days=200, score_days=30) is None


def test_the_table_shape_says_when_customers_first_bought_and_names_one_cohort() -> None:
    cohort = {"2024-01": 500, "2024-02": 300, "2024-03": 150, **{f"2024-{m:02d}": 10 for m in range(4, 13)}}
    lines = table_shape(*YEAR, days_with_rows=300, customers_by_month=cohort)
    assert lines[0] == "days with rows: 300 of 366 (82%)"
    assert lines[1].startswith("customers by month of first purchase (1,040): 2024-01 48%, 2024-02 29%, 2024-03 14%, 2024-04 1%")
    assert lines[2].startswith("one acquisition cohort: 91% of customers first bought in the first three months")
    # CDNOW's shape: every customer arrived in the first quarter, nobody after.
    only_first_quarter = table_shape(*YEAR, 366, {"2024-01": 7, "2024-02": 8, "2024-03": 7})
    assert only_first_quarter[2].startswith("one acquisition cohort: 100% of customers")
    steady = {f"2024-{m:02d}": 100 for m in range(1, 13)}
    assert len(table_shape(*YEAR, 366, steady)) == 2  # arrivals all year: no cohort line
    many = {f"{y}-{m:02d}": 10 for y in (2023, 2024) for m in range(1, 13)}
    assert table_shape(dt.date(2023, 1, 1), YEAR[1], 700, many)[1].endswith("2023-12 4%, later 50%")
    assert table_shape(*YEAR, 0, {}) == ["days with rows: 0 of 366 (0%)"]
