"""Data and prediction drift with evidently (framework-free).

Every numeric column is compared with the normed Wasserstein distance (the
distance between the two distributions in units of the reference's standard
deviation) against one threshold.  Using one method for every column and every
sample size keeps verdicts comparable across days; evidently's automatic choice
would switch to a K-S p-value below 1,000 rows, whose power grows with n.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import TYPE_CHECKING

from lib.features import AGEING_FEATURES

if TYPE_CHECKING:
    import pandas as pd

DRIFT_METHOD = "wasserstein"

# A drift event whose drifted features were all seen at the last drift-triggered
# retraining, with a share at most this much higher, is the same cause.
MATERIAL_SHARE_CHANGE = 0.1


@dataclass
class DriftResult:
    column_scores: dict[str, float]
    threshold: float
    drift_share_threshold: float
    html: bytes
    # False while the windows are still filling (see ``judged``): scores are reported, no verdict is given.
    judged: bool = True

    @property
    def drifted_columns(self) -> list[str]:
        return sorted(c for c in self.feature_columns if self.column_scores[c] >= self.threshold)

    @property
    def feature_columns(self) -> list[str]:
        """The features the drift share counts: every scored column but the churn score and the ageing features."""
        return sorted(c for c in self.column_scores if c != "prediction" and c not in AGEING_FEATURES)

    @property
    def ageing_drifted(self) -> list[str]:
        return sorted(c for c in AGEING_FEATURES if self.column_scores.get(c, 0.0) >= self.threshold)

    @property
    def drift_share(self) -> float:
        n = len(self.feature_columns)
        return len(self.drifted_columns) / n if n else 0.0

    @property
    def dataset_drift(self) -> bool:
        return self.judged and self.drift_share >= self.drift_share_threshold

    @property
    def prediction_score(self) -> float | None:
        return self.column_scores.get("prediction")

    @property
    def prediction_drift(self) -> bool:
        score = self.prediction_score
        return self.judged and score is not None and score >= self.threshold


def sample_rows(frame: pd.DataFrame, max_rows: int, seed: int) -> pd.DataFrame:
    import numpy as np

    if len(frame) <= max_rows:
        return frame.reset_index(drop=True)
    rng = np.random.default_rng(seed)
    return frame.iloc[np.sort(rng.choice(len(frame), size=max_rows, replace=False))].reset_index(drop=True)


def judged(first_history_day: dt.date | None, reference_day: dt.date, window_days: int) -> bool:
    """Whether a drift verdict means anything: the reference day's windowed features must see a full window of history.

    Before that, every windowed feature grows as the log gets longer (a purchase
    count over 90 days of which only 40 exist), which is not drift.
    """
    return first_history_day is not None and (reference_day - first_history_day).days + 1 >= window_days


def compute_drift(
    reference: pd.DataFrame,
    current: pd.DataFrame,
    columns: list[str],
    threshold: float = 0.1,
    drift_share_threshold: float = 0.5,
    is_judged: bool = True,
) -> DriftResult:
    """Per-column drift of ``current`` against ``reference`` plus the HTML report."""
    from evidently import DataDefinition, Dataset, Report
    from evidently.presets import DataDriftPreset

    if current.empty:
        raise ValueError("the current data is empty: there is nothing to compare with the reference")
    definition = DataDefinition(numerical_columns=columns)
    ref = Dataset.from_pandas(reference[columns], data_definition=definition)
    cur = Dataset.from_pandas(current[columns], data_definition=definition)
    report = Report([DataDriftPreset(columns=columns, method=DRIFT_METHOD, threshold=threshold, drift_share=drift_share_threshold)])
    snapshot = report.run(current_data=cur, reference_data=ref)
    scores: dict[str, float] = {}
    for metric in snapshot.dict()["metrics"]:
        cfg = metric.get("config", {})
        if cfg.get("type", "").endswith("ValueDrift"):
            scores[cfg["column"]] = float(metric["value"])
    missing = set(columns) - set(scores)
    if missing:
        raise RuntimeError(f"evidently returned no drift score for {sorted(missing)}")
    return DriftResult(scores, threshold, drift_share_threshold, snapshot.get_html_str(as_iframe=False).encode(), is_judged)


def same_cause(previous_columns: list[str], previous_share: float, columns: list[str], share: float) -> bool:
    """Whether a drift event repeats the one the last drift-triggered retraining already answered.

    Same cause: no feature drifted that had not drifted then, and the share has
    not grown by ``MATERIAL_SHARE_CHANGE``. A retraining that kept the champion
    has shown that a new model does not help against it; asking again every
    day would not either.
    """
    return set(columns) <= set(previous_columns) and share < previous_share + MATERIAL_SHARE_CHANGE
