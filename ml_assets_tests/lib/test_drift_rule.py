"""The drift rule on generated populations: quiet on a stationary one that ages, an event soon after a planted shift."""

from __future__ import annotations

import datetime as dt

import polars as pl
import pytest

from lib.datagen import GeneratorConfig, generate_transactions
from lib.drift import compute_drift, judged, sample_rows
from lib.features import FEATURE_COLUMNS, WINDOW_DAYS, snapshots_features
from ml_assets.assets.monitoring import _active

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
        ref = _active(features.filter(pl.col("snapshot_date") == ref_day)).select(columns).to_pandas()
        cur = _active(features.filter(pl.col("snapshot_date") == day)).select(columns).to_pandas()
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
