"""The drift rule on generated populations: quiet on a stationary one that ages and on one ageing cohort, an event soon
after a planted shift in either."""

from __future__ import annotations

import datetime as dt

import numpy as np
import pandas as pd
import polars as pl
import pytest

from lib.datagen import GeneratorConfig, RetailConfig, generate_retail, generate_transactions, retail_as_transactions
from lib.drift import (
    SIGNIFICANCE,
    DriftResult,
    active_customers,
    column_scores,
    compute_drift,
    judged,
    normed_wasserstein,
    permutation_p_value,
    sample_rows,
)
from lib.features import FEATURE_COLUMNS, WINDOW_DAYS, feature_columns, snapshots_features

START = dt.date(2025, 1, 1)
LAG = 28
SHARE = 0.25  # the default drift_share_threshold


def _verdicts(drift_date: dt.date | None, days: list[dt.date]) -> dict[dt.date, tuple[bool, float, list[str]]]:
    tx = generate_transactions(GeneratorConfig(start=START, end=max(days), customers=2_500, seed=3, drift_date=drift_date))
    needed = sorted({*days, *(d - dt.timedelta(days=LAG) for d in days)})
    features = snapshots_features(tx, needed)
    columns = list(FEATURE_COLUMNS)
    out = {}
    for day in days:
        ref_day = day - dt.timedelta(days=LAG)
        ref = active_customers(features.filter(pl.col("snapshot_date") == ref_day)).select(columns).to_pandas()
        cur = active_customers(features.filter(pl.col("snapshot_date") == day)).select(columns).to_pandas()
        r = compute_drift(
            sample_rows(ref, 5_000, 11), sample_rows(cur, 5_000, 13), columns, 0.1, SHARE, judged(START, ref_day, WINDOW_DAYS)
        )
        out[day] = (r.dataset_drift, r.drift_share, r.drifted_columns)
    return out


@pytest.mark.slow
def test_a_stationary_population_raises_no_event_while_it_ages() -> None:
    # From day 118 the reference's 90-day windows are full; the dormant pool keeps growing every day.
    days = [START + dt.timedelta(days=i) for i in range(118, 150, 4)]
    verdicts = _verdicts(None, days)
    assert not any(v[0] for v in verdicts.values()), verdicts
    # During warm-up the windows fill up, which would read as drift: no verdict is given.
    assert not judged(START, START + dt.timedelta(days=60), WINDOW_DAYS) and judged(START, START + dt.timedelta(days=89), WINDOW_DAYS)


@pytest.mark.slow
def test_a_planted_shift_is_an_event_within_two_weeks() -> None:
    shift = START + dt.timedelta(days=120)
    days = [shift + dt.timedelta(days=i) for i in (-7, 3, 7, 10, 14)]
    verdicts = _verdicts(shift, days)
    assert not verdicts[days[0]][0], verdicts[days[0]]
    first = min((d for d in days[1:] if verdicts[d][0]), default=None)
    assert first is not None and (first - shift).days <= 14, verdicts
    # Larger baskets and a move to mobile are what drifted, not the ageing features.
    assert {"avg_basket", "mobile_share"} & set(verdicts[days[-1]][2]), verdicts[days[-1]]


# --- one ageing cohort, as a log cut from a shop's first months (lib.datagen.RetailConfig) ---------------------

COHORT_START = dt.date(2024, 1, 1)


def _cohort_verdicts(drift_date: dt.date | None, days: list[dt.date]) -> dict[dt.date, DriftResult]:
    """Every customer acquired in the first 12 weeks, buying about every 14 days with interest that fades with age:
    the whole population ages together and its active part shrinks every day."""
    log = generate_retail(
        RetailConfig(
            start=COHORT_START, end=max(days), customers=10_000, seed=3, acquisition_days=84, rate_scale=0.1, drift_date=drift_date
        )
    )
    tx = retail_as_transactions(log)
    columns = list(feature_columns(tx.columns, channels=()))
    needed = sorted({*days, *(d - dt.timedelta(days=LAG) for d in days)})
    by_day = {
        d: f for (d,), f in snapshots_features(tx, needed, tuple(columns), channels=()).partition_by("snapshot_date", as_dict=True).items()
    }
    out = {}
    for day in days:
        ref_day = day - dt.timedelta(days=LAG)
        ref = active_customers(by_day[ref_day]).select(columns).to_pandas()
        cur = active_customers(by_day[day]).select(columns).to_pandas()
        out[day] = compute_drift(
            sample_rows(ref, 5_000, 11), sample_rows(cur, 5_000, 13), columns, 0.1, SHARE, judged(COHORT_START, ref_day, WINDOW_DAYS)
        )
    return out


@pytest.mark.slow
def test_an_ageing_single_cohort_raises_no_event() -> None:
    # Nine and ten months in: the cohort's active part has shrunk to ~1,400 customers and keeps shrinking.
    days = [COHORT_START + dt.timedelta(days=i) for i in range(260, 305, 6)]
    verdicts = _cohort_verdicts(None, days)
    assert all(r.judged for r in verdicts.values())
    assert not any(r.dataset_drift for r in verdicts.values()), {d: r.reason for d, r in verdicts.items()}
    assert all(r.reason.startswith("not counted: ") for r in verdicts.values())


@pytest.mark.slow
def test_a_planted_change_in_an_ageing_cohort_is_an_event_within_two_weeks() -> None:
    change = COHORT_START + dt.timedelta(days=278)
    days = [change + dt.timedelta(days=i) for i in (-6, 4, 8, 11, 14)]
    verdicts = _cohort_verdicts(change, days)
    assert not verdicts[days[0]].dataset_drift, verdicts[days[0]].reason
    first = min((d for d in days[1:] if verdicts[d].dataset_drift), default=None)
    assert first is not None and (first - change).days <= 14, {d: r.reason for d, r in verdicts.items()}
    assert verdicts[first].reason.startswith("counted: ") and "spend_7d" in verdicts[first].drifted_columns


def test_a_few_outsized_orders_or_a_small_sample_are_not_drift() -> None:
    """Tails are capped at the reference's percentiles, and a distance that sampling alone gives is not counted."""
    rng = np.random.default_rng(0)
    base = pd.DataFrame({"spend_30d": rng.gamma(2.0, 30.0, 400), "tx_count_30d": rng.poisson(1.0, 400).astype(float)})
    same = pd.DataFrame({"spend_30d": rng.gamma(2.0, 30.0, 400), "tx_count_30d": rng.poisson(1.0, 400).astype(float)})
    same.loc[:3, "spend_30d"] = 60_000.0  # four huge orders
    quiet = compute_drift(base, same, ["spend_30d", "tx_count_30d"], 0.1, SHARE)
    assert quiet.drifted_columns == [] and not quiet.dataset_drift, (quiet.column_scores, quiet.p_values)
    moved = same.assign(spend_30d=same["spend_30d"] * 1.5)
    shifted = compute_drift(base, moved, ["spend_30d", "tx_count_30d"], 0.1, SHARE)
    assert shifted.drifted_columns == ["spend_30d"] and shifted.p_values["spend_30d"] < SIGNIFICANCE
    assert "counted: 1 of 2 features drifted" in shifted.reason
    # The p-value is a share of random splits: two identical samples are never significant.
    a = rng.normal(size=300)
    assert permutation_p_value(a, a.copy(), normed_wasserstein(a, a), seed=1) == 1.0


@pytest.mark.parametrize("values", ["ties", "distinct"])
def test_the_permutation_p_value_matches_every_split_enumerated(values: str) -> None:
    """Splits drawn per distinct value (a multivariate hypergeometric) must give the p-value of all splits of the customers."""
    from itertools import combinations

    rng = np.random.default_rng(2)
    pooled = rng.poisson(1.5, 12).astype(float) if values == "ties" else rng.gamma(2.0, 1.0, 12)
    ref, cur = pooled[:6] + (0.0 if values == "ties" else 0.5), pooled[6:]
    both = np.concatenate([ref, cur])
    observed = normed_wasserstein(ref, cur)
    splits = [np.isin(np.arange(12), chosen) for chosen in combinations(range(12), 6)]
    exact = np.mean([normed_wasserstein(both[s], both[~s]) >= observed * (1.0 - 1e-9) for s in splits])
    estimate = permutation_p_value(ref, cur, observed, seed=3, permutations=20_000)
    assert 0.0 < exact < 1.0 and abs(estimate - exact) < 0.015, (estimate, exact)


def test_the_scores_equal_evidently_s_own() -> None:
    """The verdict is computed without building evidently's report; the figures must be evidently's to the last bit."""
    from evidently import DataDefinition, Dataset, Report
    from evidently.presets import DataDriftPreset

    rng = np.random.default_rng(1)
    columns = ["spend", "count", "score", "constant"]
    ref = pd.DataFrame(
        {"spend": rng.gamma(2, 1, 900), "count": rng.poisson(1, 900).astype(float), "score": rng.normal(size=900), "constant": 0.0}
    )
    cur = pd.DataFrame(
        {"spend": rng.gamma(2, 1.3, 700), "count": rng.poisson(1.2, 700).astype(float), "score": rng.normal(size=700), "constant": 1.0}
    )
    ref.loc[:30, "score"], cur.loc[:10, "spend"] = np.nan, np.inf  # missing and infinite values are left out by both
    definition = DataDefinition(numerical_columns=columns)
    snapshot = Report([DataDriftPreset(columns=columns, method="wasserstein", threshold=0.1)]).run(
        current_data=Dataset.from_pandas(cur, data_definition=definition),
        reference_data=Dataset.from_pandas(ref, data_definition=definition),
    )
    theirs = {
        m["config"]["column"]: float(m["value"]) for m in snapshot.dict()["metrics"] if m["config"].get("type", "").endswith("ValueDrift")
    }
    assert column_scores(ref, cur, columns) == theirs
