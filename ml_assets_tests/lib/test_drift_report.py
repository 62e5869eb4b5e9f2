"""The drift report a person opens: the verdict on every column, plots where they matter, evidently's bundle once."""

from __future__ import annotations

import html
import re

import numpy as np
import pandas as pd

from lib.drift import compute_drift
from lib.drift_report import (
    FONT,
    bundle_name,
    demoted_latest,
    detail_columns,
    lib_files,
    read_verdict,
    render_report,
    report_placement,
    verdict_page,
    verdict_record,
)


def _samples(shifted: dict[str, float]) -> tuple[pd.DataFrame, pd.DataFrame, list[str]]:
    rng = np.random.default_rng(4)
    columns = [f"feature_{i}" for i in range(8)] + ["prediction"]
    ref = pd.DataFrame({c: rng.gamma(2.0, 1.0, 3_000) for c in columns})
    cur = pd.DataFrame({c: rng.gamma(2.0, 1.0, 3_000) * shifted.get(c, 1.0) for c in columns})
    return ref, cur, columns


def test_an_event_report_states_the_verdict_on_every_column_and_plots_only_those_that_reached_the_threshold() -> None:
    ref, cur, columns = _samples({"feature_1": 1.6, "feature_2": 1.5, "feature_5": 1.4})
    result = compute_drift(ref, cur, columns, 0.1, 0.25)
    assert result.dataset_drift and detail_columns(result) == sorted(result.drifted_columns, key=lambda c: -result.column_scores[c])
    page = render_report(ref, cur, result, "2025-06-07", "_lib/").decode()
    # The verdict, first thing on the page, with every column; the reason as the asset states it (escaped).
    verdict = page[page.index("<body>") : page.index("</table>")]
    assert "Drift on 2025-06-07: drift event" in verdict and "3 of 8 features drifted" in verdict
    assert all(f"<td>{c}</td>" in verdict for c in columns)
    # evidently's bundle and font are referenced, not inlined; its plots cover the three drifted columns only.
    assert f'<script src="_lib/{bundle_name()}"></script>' in page and f"url(_lib/{FONT})" in page
    assert len(page) < 600_000 and len(page) < len(lib_files()[bundle_name()]) / 5
    # evidently's plot data sits in the page head, before the body that opens with the verdict.
    plotted = set(re.findall(r"feature_\d", page[: page.index("<body>")]))
    assert plotted == {"feature_1", "feature_2", "feature_5"}


def test_a_report_plots_at_most_report_plots_columns_the_farthest_first_and_says_which() -> None:
    ref, cur, columns = _samples({"feature_1": 1.9, "feature_2": 1.6, "feature_5": 1.4, "feature_6": 1.3})
    result = compute_drift(ref, cur, columns, 0.1, 0.25)
    reached = sorted((c for c in columns if result.column_scores[c] >= 0.1), key=lambda c: -result.column_scores[c])
    assert len(reached) == 4
    assert detail_columns(result, 2) == reached[:2] and detail_columns(result, 0) == detail_columns(result, 9) == reached
    page = render_report(ref, cur, result, "2025-06-09", "_lib/", plots=2).decode()
    assert set(re.findall(r"feature_\d", page[: page.index("<body>")])) == set(reached[:2])
    # The verdict still names every column, and says the plots are the two farthest of four, and how to see all.
    verdict = page[page.index("<body>") : page.index("</table>")]
    assert all(f"<td>{c}</td>" in verdict for c in columns)
    assert "the 2 farthest of the 4 that reached it" in verdict and "churn report drift 2025-06-09" in verdict
    assert "farthest of the" not in render_report(ref, cur, result, "2025-06-09", "_lib/").decode()


def test_a_quiet_report_plots_the_closest_columns_and_escapes_what_it_prints() -> None:
    ref, cur, columns = _samples({})
    ref, cur = ref.rename(columns={"feature_0": "<b>odd</b>"}), cur.rename(columns={"feature_0": "<b>odd</b>"})
    columns = ["<b>odd</b>", *columns[1:]]
    result = compute_drift(ref, cur, columns, 0.1, 0.25)
    assert not result.dataset_drift and len(detail_columns(result)) == 3
    page = render_report(ref, cur, result, "2025-06-08", "../_lib/").decode()
    verdict = page[page.index("<body>") : page.index("</table>")]
    assert "no drift event" in verdict and "&lt;b&gt;odd&lt;/b&gt;" in verdict and "<b>odd</b>" not in verdict
    assert f'<script src="../_lib/{bundle_name()}"></script>' in page


def test_a_full_report_is_given_to_events_asked_days_and_the_newest_day_only_until_a_newer_one() -> None:
    assert report_placement(event=True, asked=False, latest=False) == "drift event"
    assert report_placement(event=True, asked=True, latest=True) == "drift event"
    assert report_placement(event=False, asked=True, latest=True) == "asked"
    assert report_placement(event=False, asked=False, latest=True) == "latest"
    assert report_placement(event=False, asked=False, latest=False) is None
    # The previous newest day loses the report it had for being the newest; an event's or an asked-for one stays.
    assert demoted_latest("2025-06-07", "latest", "2025-06-08")
    assert not demoted_latest("2025-06-08", "latest", "2025-06-08")
    assert not demoted_latest("2025-06-07", "drift event", "2025-06-08")
    assert not demoted_latest("2025-06-07", "asked", "2025-06-08")
    assert not demoted_latest(None, None, "2025-06-08")


def test_the_verdict_page_is_rebuilt_from_the_stored_verdict_alone_and_states_every_column() -> None:
    ref, cur, columns = _samples({"feature_1": 1.6})
    ref, cur = ref.rename(columns={"feature_0": "<b>odd</b>"}), cur.rename(columns={"feature_0": "<b>odd</b>"})
    columns = ["<b>odd</b>", *columns[1:]]
    result = compute_drift(ref, cur, columns, 0.1, 0.25)
    stored = verdict_record(result, "2025-06-08", "active customers on 2025-05-11", None)
    assert len(stored) < 5_000
    back, record = read_verdict(stored)
    # The same verdict, column for column, and the same reason the asset logged.
    assert back.column_scores == result.column_scores and back.p_values == result.p_values
    assert back.drifted_columns == result.drifted_columns and back.reason == result.reason
    assert record["full_report"] is None and record["dataset_drift"] == result.dataset_drift
    page = verdict_page(back, "2025-06-08", str(record["reference"])).decode()
    assert page == verdict_page(result, "2025-06-08", "active customers on 2025-05-11").decode()
    assert all(f"<td>{html.escape(c)}</td>" in page for c in columns) and "<b>odd</b>" not in page
    assert "churn report drift 2025-06-08" in page and "<script" not in page and len(page) < 10_000
