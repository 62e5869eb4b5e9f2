"""Feature math on hand-built data, leakage, and labels."""

from __future__ import annotations

import datetime as dt

import polars as pl
import pytest
from polars.testing import assert_frame_equal

from lib.features import FEATURE_COLUMNS, churn_labels, snapshot_features, snapshots_features

D = dt.date(2025, 3, 31)


def same(a: pl.DataFrame, b: pl.DataFrame) -> None:
    # Multithreaded group-by may add floats in another order: equal up to rounding.
    assert_frame_equal(a, b, check_exact=False, rel_tol=1e-9, abs_tol=1e-12)


def _tx(rows: list[tuple[str, dt.datetime, float]]) -> pl.DataFrame:
    return pl.DataFrame(
        {
            "customer_id": [r[0] for r in rows],
            "ts": [r[1] for r in rows],
            "amount": [r[2] for r in rows],
            "quantity": [1] * len(rows),
            "channel": ["mobile", "web", "store"] * (len(rows) // 3) + ["web"] * (len(rows) % 3),
            "category": ["grocery"] * len(rows),
        },
        schema_overrides={"ts": pl.Datetime("us")},
    )


def test_windows_are_measured_back_from_the_end_of_the_day() -> None:
    tx = _tx(
        [
            ("C1", dt.datetime(2025, 3, 31, 23, 0), 10.0),  # same day: counts
            ("C1", dt.datetime(2025, 3, 25, 12, 0), 20.0),  # 7d window
            ("C1", dt.datetime(2025, 3, 10, 12, 0), 30.0),  # 30d window
            ("C1", dt.datetime(2025, 1, 15, 12, 0), 40.0),  # 90d window
            ("C2", dt.datetime(2024, 12, 1, 12, 0), 50.0),  # 120 days back: whole history only
            ("C2", dt.datetime(2023, 3, 31, 12, 0), 70.0),  # two years back: still in the history
        ]
    )
    f = snapshot_features(tx, D).sort("customer_id")
    c1 = f.row(0, named=True)
    assert c1["tx_count_7d"] == 2 and c1["tx_count_30d"] == 3 and c1["tx_count_90d"] == 4
    assert c1["spend_7d"] == 30 and c1["spend_30d"] == 60 and c1["spend_90d"] == 100
    assert c1["recency_days"] == pytest.approx(1 / 24)
    assert c1["avg_basket"] == 25
    c2 = f.row(1, named=True)
    assert c2["tx_count_90d"] == 0 and c2["spend_30d"] == 0 and c2["lifetime_spend"] == 120 and c2["lifetime_tx"] == 2
    # BG/NBD's quantities: one repeat day, t_x = 611 days from first to last purchase day, T = age at the cutoff.
    assert c2["repeat_days"] == 1 and c2["active_span_days"] == 611 and c2["mean_gap_days"] == 611
    assert c2["tenure_days"] == pytest.approx(731.5) and c2["recency_days"] == pytest.approx(120.5)
    assert c2["overdue_ratio"] == pytest.approx(120.5 / 611) and c2["gap_std_days"] == 0
    # C1's purchase days are 54, 15 and 6 days apart: mean 25, spread sqrt(mean of squares - square of mean).
    gaps = [54.0, 15.0, 6.0]
    mean = sum(gaps) / 3
    assert c1["mean_gap_days"] == pytest.approx(mean) and c1["gap_std_days"] == pytest.approx(
        (sum(g * g for g in gaps) / 3 - mean**2) ** 0.5
    )
    assert set(FEATURE_COLUMNS) <= set(f.columns)
    assert not f.select(FEATURE_COLUMNS).to_numpy().__contains__(float("nan"))


def test_a_future_transaction_does_not_change_the_snapshot(small_transactions: pl.DataFrame) -> None:
    day = dt.date(2025, 1, 20)
    before = snapshot_features(small_transactions, day)
    customer = before["customer_id"][0]
    # Planted one microsecond after the cutoff, huge, for a customer who exists.
    planted = pl.DataFrame(
        {
            "transaction_id": [10**9],
            "customer_id": [customer],
            "ts": [dt.datetime(2025, 1, 21, 0, 0, 0, 1)],
            "amount": [99_999.0],
            "quantity": [50],
            "channel": ["web"],
            "category": ["electronics"],
            "payment_method": ["card"],
        },
        schema=small_transactions.schema,
    )
    after = snapshot_features(pl.concat([small_transactions, planted]), day)
    same(after, before)
    # The same transaction planted just before the cutoff does change it: the test can fail.
    inside = planted.with_columns(pl.lit(dt.datetime(2025, 1, 20, 23, 59)).cast(pl.Datetime("us")).alias("ts"))
    changed = snapshot_features(pl.concat([small_transactions, inside]), day)
    assert not changed.equals(before)
    assert changed.filter(pl.col("customer_id") == customer)["max_amount"].item() == 99_999.0


def test_many_snapshots_equal_single_snapshots(small_transactions: pl.DataFrame) -> None:
    days = [dt.date(2025, 1, 10), dt.date(2025, 1, 25)]
    many = snapshots_features(small_transactions, days)
    for day in days:
        same(many.filter(pl.col("snapshot_date") == day), snapshot_features(small_transactions, day))


def test_churn_label_is_no_purchase_within_the_horizon() -> None:
    tx = _tx(
        [
            ("BUYS_AGAIN", dt.datetime(2025, 3, 1), 10.0),
            ("BUYS_AGAIN", dt.datetime(2025, 4, 20), 10.0),
            ("GONE", dt.datetime(2025, 3, 2), 10.0),
            ("LATE", dt.datetime(2025, 3, 3), 10.0),
            ("LATE", dt.datetime(2025, 5, 2), 10.0),  # after the 30-day horizon
        ]
    )
    snap = snapshot_features(tx, D)
    later = snapshot_features(tx, D + dt.timedelta(days=30))
    labels = dict(churn_labels(snap, later, D).select("customer_id", "churned").iter_rows())
    assert labels == {"BUYS_AGAIN": 0, "GONE": 1, "LATE": 1}


def test_feature_suite_in_chunks_of_days_gives_the_whole_frame_verdicts(small_transactions: pl.DataFrame) -> None:
    """Validating a long range in chunks (bounded memory) finds exactly what one validation of all rows finds."""
    from lib.expectations import FeatureValidation, validate_features

    last = small_transactions["ts"].max().date()
    days = [last - dt.timedelta(days=i) for i in range(6)]
    frame = snapshots_features(small_transactions, days)
    day_rows = frame.filter(pl.col("snapshot_date") == days[0]).height
    # Defects planted on the newest day (the last chunk): a negative count, a share above 1, a duplicated customer.
    bad = (
        frame.with_row_index("_i")
        .with_columns(
            pl.when(pl.col("_i") == frame.height - 1).then(-1.0).otherwise(pl.col("tx_count_7d")).alias("tx_count_7d"),
            pl.when(pl.col("_i") == frame.height - 2).then(1.5).otherwise(pl.col("mobile_share")).alias("mobile_share"),
        )
        .drop("_i")
    )
    bad = pl.concat([bad, bad.tail(1)]).sort("snapshot_date")
    for data in (frame, bad):
        whole = validate_features(data, FEATURE_COLUMNS, chunk_rows=10**9)
        chunked = validate_features(data, FEATURE_COLUMNS, chunk_rows=day_rows + 1)
        assert [(o.rule, o.success, o.observed) for o in chunked] == [(o.rule, o.success, o.observed) for o in whole]
        # Handed in a day at a time, as customer_features writes them (held up to two days' rows, then validated).
        by_day = FeatureValidation(FEATURE_COLUMNS, chunk_rows=2 * day_rows)
        for (_,), part in data.partition_by("snapshot_date", as_dict=True, maintain_order=True).items():
            by_day.add(part)
        assert len(by_day.per_chunk) >= 2
        assert [(o.rule, o.success, o.observed) for o in by_day.outcomes()] == [(o.rule, o.success, o.observed) for o in whole]
    failed = {o.rule: o.observed for o in chunked if not o.success}
    assert set(failed) == {"tx_count_7d_non_negative", "mobile_share_share_range", "customer_unique_per_day"}
    assert failed["tx_count_7d_non_negative"] == 2  # the planted row and its duplicate


def test_the_feature_suite_keeps_no_copy_of_what_it_validated(small_transactions: pl.DataFrame) -> None:
    """GX's batch objects hold the validated frame in reference cycles; in a run process they lived on (a 30-day run
    at scale held 21 copies of 160 MB). What run_suite handed GX holds no rows once it returns."""
    import gc

    import pandas as pd

    from lib.expectations import validate_features

    last = small_transactions["ts"].max().date()
    frame = snapshots_features(small_transactions, [last - dt.timedelta(days=i) for i in range(3)])
    gc.disable()  # as when Python's full collection does not come: nothing is collected behind the test's back
    try:
        for _ in range(3):
            validate_features(frame, FEATURE_COLUMNS)
        held = [o for o in gc.get_objects() if type(o) is pd.DataFrame and len(o) == frame.height and len(o.columns)]
    finally:
        gc.enable()
    assert held == []


def test_features_follow_the_columns_and_the_channel_vocabulary_of_the_source(small_transactions: pl.DataFrame) -> None:
    from lib.features import check_channels, feature_columns, snapshots_features

    plain = feature_columns({"customer_id", "ts", "amount"})
    assert not {"avg_quantity", "mobile_share", "store_share", "n_categories"} & set(plain) and "weekend_share" in plain
    channels = ("online", "in-store", "phone")
    renamed = small_transactions.with_columns(pl.col("channel").replace({"web": "online", "mobile": "in-store", "store": "phone"}))
    columns = feature_columns({"channel", "quantity", "category"}, channels)
    day = renamed["ts"].max().date()
    frame = snapshots_features(renamed, [day], columns=columns, channels=channels)
    assert {"in_store_share", "phone_share"} <= set(frame.columns) and "mobile_share" not in frame.columns
    expected = snapshots_features(small_transactions, [day])
    # The same purchases under other names: the same shares.
    assert frame["in_store_share"].to_list() == expected["mobile_share"].to_list()
    assert frame["phone_share"].to_list() == expected["store_share"].to_list()
    with pytest.raises(ValueError, match="clash"):
        check_channels(["web", "weekend"])


def test_the_carried_state_folded_day_by_day_equals_the_state_rebuilt_from_history(small_transactions: pl.DataFrame) -> None:
    """What makes a daily run cheap must give exactly what a run over the whole history gives."""
    from lib.features import DEFAULT_CHANNELS
    from lib.history import fold_day, merge_states, state_from_history

    first, last = small_transactions["ts"].min().date(), small_transactions["ts"].max().date()
    day = first + dt.timedelta(days=10)
    state = state_from_history(small_transactions.filter(pl.col("ts").dt.date() < day), DEFAULT_CHANNELS)
    while day <= last:
        state = fold_day(state, small_transactions.filter(pl.col("ts").dt.date() == day), DEFAULT_CHANNELS)
        day += dt.timedelta(days=1)
    same(state, state_from_history(small_transactions, DEFAULT_CHANNELS))
    # Merging out of order is refused rather than silently wrong.
    early = state_from_history(small_transactions.filter(pl.col("ts").dt.date() == first), DEFAULT_CHANNELS)
    with pytest.raises(ValueError, match="not after"):
        merge_states(state, early)


def test_the_state_rebuilt_a_stretch_at_a_time_is_the_state_of_the_whole_history(small_transactions: pl.DataFrame) -> None:
    """A first run rebuilds the carried state a stretch of days at a time (bounded memory): the same state as from all
    of it, also when a file holds rows of the next day (they wait for the next stretch); a row older than what is
    already folded cannot be merged exactly, so the caller is told to build it whole."""
    from lib.features import DEFAULT_CHANNELS
    from lib.history import state_from_history, state_in_stretches

    days = sorted(small_transactions["ts"].dt.date().unique().to_list())
    whole = state_from_history(small_transactions, DEFAULT_CHANNELS)
    # Stretches of 4 days; each file also holds the first few rows of the next stretch's first day.
    starts = days[::4]

    def stretches(stray: bool = False):
        for i, start in enumerate(starts):
            nxt = starts[i + 1] if i + 1 < len(starts) else None
            day = pl.col("ts").dt.date()
            rows = small_transactions.filter((day >= start) & ((day < nxt) if nxt else pl.lit(True)))
            if nxt is not None:  # the next stretch's first rows arrive early, in this file
                rows = pl.concat([rows, small_transactions.filter(day == nxt).head(3)])
            if i > 0:  # ... and are not in the next one again
                rows = rows.filter(~pl.struct(rows.columns).is_in(small_transactions.filter(day == start).head(3).to_struct().implode()))
            if stray and i == 2:  # a row of an earlier stretch, in a later file
                rows = pl.concat([rows, small_transactions.filter(day == starts[0]).head(1)])
            yield nxt, rows

    assert sum(f.height for _, f in stretches()) == small_transactions.height
    rebuilt = state_in_stretches(stretches(), DEFAULT_CHANNELS)
    assert rebuilt is not None
    same(rebuilt, whole)
    assert state_in_stretches(stretches(stray=True), DEFAULT_CHANNELS) is None


def test_population_is_everyone_with_a_purchase_or_the_configured_horizon() -> None:
    tx = _tx(
        [
            ("RECENT", dt.datetime(2025, 3, 20), 10.0),
            ("ONCE_LONG_AGO", dt.datetime(2024, 1, 5), 10.0),
            ("FUTURE", dt.datetime(2025, 4, 2), 10.0),
        ]
    )
    everyone = snapshot_features(tx, D)
    assert set(everyone["customer_id"]) == {"RECENT", "ONCE_LONG_AGO"}
    recent = snapshot_features(tx, D, population_days=365)
    assert set(recent["customer_id"]) == {"RECENT"}


def test_the_window_skips_days_before_the_history_starts_and_keeps_holes_after_it() -> None:
    from lib.features import window_in_history

    window = ["2025-01-01", "2025-01-02", "2025-01-03", "2025-01-04"]
    read, before = window_in_history(window, ["2025-01-03", "2025-01-04", "2025-01-09"])
    assert read == ["2025-01-03", "2025-01-04"] and before == ["2025-01-01", "2025-01-02"]
    # A missing day after the first ingested one is a hole: still read, so the read fails and names it.
    read, before = window_in_history(window, ["2025-01-01", "2025-01-04"])
    assert read == window and before == []


def test_a_range_handed_over_day_by_day_is_the_range_kept_whole(small_transactions: pl.DataFrame) -> None:
    """customer_features writes each day as it is folded: the same frames and the same state as keeping them all."""
    from lib.features import fold_snapshots

    last = small_transactions["ts"].max().date()
    days = [last - dt.timedelta(days=i) for i in range(5, -1, -1)]
    kept, state = fold_snapshots(None, small_transactions, days)
    handed: dict[dt.date, pl.DataFrame] = {}
    none_kept, state_after = fold_snapshots(None, small_transactions, days, write_day=handed.__setitem__)
    assert none_kept == [] and list(handed) == days
    for day, frame in zip(days, kept, strict=True):
        # Equal up to the order polars sums in (two runs that both keep every day differ there too).
        assert_frame_equal(handed[day].sort("customer_id"), frame.sort("customer_id"))
    assert_frame_equal(state_after.sort("customer_id"), state.sort("customer_id"))
