"""The performance verdict as a pure function: matured scores against what the scoring model promised."""

from __future__ import annotations

import datetime as dt

import polars as pl

from lib.performance import performance_verdict, promised_roc_auc, scored_day

SCORED = dt.date(2025, 5, 18)
AFTER_CUTOFF = dt.datetime(2025, 6, 1)  # bought within the horizon: did not churn


def _scores(probabilities: list[float]) -> pl.DataFrame:
    return pl.DataFrame({"customer_id": ["C1", "C2", "C3", "C4"], "snapshot_date": [SCORED] * 4, "churn_probability": probabilities})


BUYERS = pl.DataFrame({"customer_id": ["C2", "C4"], "last_tx_ts": [AFTER_CUTOFF, AFTER_CUTOFF]})


def test_the_scored_day_is_a_horizon_back() -> None:
    assert scored_day(dt.date(2025, 6, 17), 30) == SCORED and scored_day(dt.date(2025, 6, 8), 21) == SCORED


def test_the_promise_is_out_of_time_when_there_is_a_backtest() -> None:
    assert promised_roc_auc({"backtest_roc_auc": 0.81, "test_roc_auc": 0.85}) == ("backtest", 0.81)
    assert promised_roc_auc({"test_roc_auc": 0.85}) == ("test", 0.85)


def test_matured_scores_are_labelled_as_training_labels_and_judged_against_the_promise() -> None:
    good = performance_verdict(_scores([0.9, 0.1, 0.8, 0.2]), BUYERS, SCORED, ("backtest", 0.95), 0.05)
    # C1 and C3 bought nothing after the cutoff: they churned, and the scores ranked them first.
    assert good["matured_roc_auc"] == 1.0 and good["matured_churn_rate"] == 0.5 and good["matured_rows"] == 4
    assert good["performance_drift"] is False and good["scoring_model_backtest_roc_auc"] == 0.95
    bad = performance_verdict(_scores([0.1, 0.9, 0.2, 0.8]), BUYERS, SCORED, ("backtest", 0.95), 0.05)
    assert bad["matured_roc_auc"] == 0.0 and bad["performance_drift"] is True and bad["roc_auc_drop"] == 0.95
    # No promise (an unknown scoring model): figures, no verdict.
    assert "performance_drift" not in performance_verdict(_scores([0.9, 0.1, 0.8, 0.2]), BUYERS, SCORED, None, 0.05)


def test_nothing_to_judge_says_why() -> None:
    assert performance_verdict(_scores([0.5] * 4).clear(), BUYERS, SCORED, None, 0.05)["performance_status"] == f"no scores on {SCORED}"
    everyone_bought = pl.DataFrame({"customer_id": ["C1", "C2", "C3", "C4"], "last_tx_ts": [AFTER_CUTOFF] * 4})
    status = performance_verdict(_scores([0.5] * 4), everyone_bought, SCORED, None, 0.05)["performance_status"]
    assert "single outcome class" in status
