"""Each day's drift page across runs: the newest day's full report becomes a verdict page once a newer day is reported."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd

from lib.drift import compute_drift
from ml_assets.assets.monitoring import _report
from resources import ArtifactStore


def _day(shift: float, seed: int) -> tuple[pd.DataFrame, pd.DataFrame, list[str]]:
    rng = np.random.default_rng(seed)
    columns = ["spend_30d", "tx_count_30d", "avg_basket", "prediction"]
    ref = pd.DataFrame({c: rng.gamma(2.0, 1.0, 2_000) for c in columns})
    cur = pd.DataFrame({c: rng.gamma(2.0, 1.0, 2_000) * shift for c in columns})
    return ref, cur, columns


def _page(store: ArtifactStore, day: str, shift: float, asked: bool = False, latest: bool = False) -> dict[str, object]:
    ref, cur, columns = _day(shift, seed=len(day) + int(day[-2:]))
    result = compute_drift(ref, cur, columns, 0.1, 0.25)
    return _report(store, day, result, (ref, cur, f"active customers before {day}"), asked, latest)


def test_the_newest_day_keeps_its_full_report_only_until_a_newer_day_and_events_keep_theirs(tmp_path: Path) -> None:
    store = ArtifactStore(root=str(tmp_path))
    reports = tmp_path / "drift_reports"
    # A run of three days: a quiet day, a drift event, a quiet newest day.
    assert str(_page(store, "2025-06-01", 1.0)["report"]).startswith("verdict page")
    assert _page(store, "2025-06-02", 1.8)["report"] == "full report (drift event)"
    assert str(_page(store, "2025-06-03", 1.0, latest=True)["report"]).startswith("full report (the newest day")
    full_of_newest = (reports / "2025-06-03.html").stat().st_size
    assert full_of_newest > 10_000 and "<script src=" in (reports / "2025-06-03.html").read_text()
    # The next day's run: the day before loses the report it had for being the newest, rebuilt from its stored verdict.
    _page(store, "2025-06-04", 1.0, latest=True)
    demoted = (reports / "2025-06-03.html").read_text()
    assert "<script" not in demoted and "churn report drift 2025-06-03" in demoted and len(demoted) < full_of_newest / 5
    assert json.loads((reports / "2025-06-03.json").read_text())["full_report"] is None
    assert (reports / "latest-day.txt").read_text() == "2025-06-04"
    # The event keeps its full report; every day has a page and a verdict.
    assert "<script src=" in (reports / "2025-06-02.html").read_text()
    assert sorted(p.name for p in reports.glob("*.html")) == [f"2025-06-0{d}.html" for d in range(1, 5)]
    assert sorted(p.name for p in reports.glob("*.json")) == [f"2025-06-0{d}.json" for d in range(1, 5)]
    # An asked-for day keeps its full report when a newer day arrives.
    _page(store, "2025-06-01", 1.0, asked=True)
    _page(store, "2025-06-05", 1.0, latest=True)
    assert "<script src=" in (reports / "2025-06-01.html").read_text()
    assert "<script" not in (reports / "2025-06-04.html").read_text()


def test_the_folder_an_earlier_version_kept_the_newest_day_in_is_emptied(tmp_path: Path) -> None:
    store = ArtifactStore(root=str(tmp_path))
    legacy = tmp_path / "drift_reports" / "latest"
    legacy.mkdir(parents=True)
    (legacy / "2025-05-31.html").write_text("<html>old</html>")
    _page(store, "2025-06-01", 1.0)
    assert not list(legacy.iterdir())
