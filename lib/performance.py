"""Performance drift: how the scores of a day did once their outcomes matured, against what the scoring model promised.

`drift_report` reads the lake and the registry; the verdict is here. A
customer scored on day S churned when they bought nothing after S's cutoff
up to the day a horizon later: exactly the training label (`churn_labels`),
read from that later day's features (their last purchase). The horizon is the
scoring model's own (recorded on its registry version), never a setting read
again here.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from typing import Any

import polars as pl


def scored_day(day: dt.date, horizon_days: int) -> dt.date:
    """The day whose scores mature on ``day`` for a model of this horizon."""
    return day - dt.timedelta(days=horizon_days)


def promised_roc_auc(metrics: Mapping[str, Any]) -> tuple[str, float]:
    """(split, ROC-AUC) a model promised for later days: out of time when it has a backtest, else its test split's."""
    split = "backtest" if "backtest_roc_auc" in metrics else "test"
    return split, float(metrics.get(f"{split}_roc_auc", metrics.get("roc_auc", float("nan"))))


def performance_verdict(
    scored: pl.DataFrame,
    last_purchases: pl.DataFrame,
    day_scored: dt.date,
    promise: tuple[str, float] | None,
    max_roc_auc_drop: float,
) -> dict[str, Any]:
    """Matured ROC-AUC, calibration and churn rate of ``scored`` (one day's predictions), and performance drift when the
    ROC-AUC fell ``max_roc_auc_drop`` or more below ``promise``; a status line says why when nothing can be judged."""
    from lib.evaluation import classification_metrics
    from lib.features import churn_labels

    if scored.is_empty():
        return {"performance_status": f"no scores on {day_scored}"}
    labelled = churn_labels(scored, last_purchases.select("customer_id", "last_tx_ts"), day_scored)
    y = labelled["churned"].to_numpy()
    if len(set(y.tolist())) < 2:
        return {"performance_status": f"scores of {day_scored} have a single outcome class; ROC-AUC undefined"}
    metrics = classification_metrics(y, labelled["churn_probability"].to_numpy())
    out: dict[str, Any] = {
        "performance_status": "evaluated",
        "matured_scores_day": day_scored.isoformat(),
        "matured_rows": int(metrics["rows"]),
        "matured_roc_auc": metrics["roc_auc"],
        "matured_ece": metrics["ece"],
        "matured_churn_rate": metrics["positive_rate"],
    }
    if promise is not None:
        split, promised = promise
        drop = promised - metrics["roc_auc"]
        out.update({f"scoring_model_{split}_roc_auc": promised, "roc_auc_drop": drop, "performance_drift": drop >= max_roc_auc_drop})
    return out
