"""The model card: one HTML page per champion that an analyst can open and read without the Dagster UI.

What it says, each figure with the split it was measured on: the data window
and population, the out-of-time backtest beside the classical baselines, the
test split's metrics and calibration, the business view at the contact budget
(cumulative gains and lift), the features that move its scores most overall
(permutation importance: the drop in test ROC-AUC when one feature's values
are shuffled, the same measure for every kind of model), and the drift of the
days scored since it was trained. Every value is escaped; the plots are
embedded PNGs, so the page is one self-contained file.
"""

from __future__ import annotations

import html
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np


@dataclass
class CardFacts:
    version: str
    kind: str
    created_at: str
    code_version: str
    horizon_days: int | None
    decision: str
    reason: str
    data_window: Mapping[str, Any]
    population: Mapping[str, Any]
    out_of_time: Sequence[Mapping[str, Any]]
    test_metrics: Mapping[str, Any]
    calibration: Sequence[Mapping[str, Any]]
    business: Sequence[Mapping[str, Any]]
    reasons: Sequence[Mapping[str, Any]]
    drift: Sequence[Mapping[str, Any]]
    first_reasons: Sequence[Mapping[str, Any]] = ()
    # Test rows the first-reason table was measured on, when a sample of them (None: every test row).
    first_reasons_rows: int | None = None
    figures: dict[str, str] = field(default_factory=dict)  # caption -> base64 PNG


# Test rows explained for the card's first-reason table at most: a share measured on 20,000 rows is within about a
# percentage point of every row's, and the network's sampled explainer costs about 0.1 ms a row (10 s at 100 k).
CARD_EXPLAIN_ROWS = 20_000


def card_sample(rows: int, cap: int = CARD_EXPLAIN_ROWS, seed: int = 20261208) -> np.ndarray:
    """Row positions the card explains: every row up to ``cap``, else a seeded sample of ``cap`` of them, in order."""
    if rows <= cap:
        return np.arange(rows)
    return np.sort(np.random.default_rng(seed).choice(rows, size=cap, replace=False))


def permutation_importance(
    score: Callable[[np.ndarray], np.ndarray],
    x: np.ndarray,
    y: np.ndarray,
    columns: Sequence[str],
    scores: np.ndarray | None = None,
    seed: int = 0,
) -> list[tuple[str, float]]:
    """(feature, drop in ROC-AUC when its column is shuffled), largest first: how much the ranking leans on each feature.

    ``scores``: ``score(x)`` when the caller has it already."""
    from lib.evaluation import classification_metrics

    rng = np.random.default_rng(seed)
    base = classification_metrics(y, score(x) if scores is None else scores)["roc_auc"]
    drops = []
    for i, name in enumerate(columns):
        shuffled = x.copy()
        shuffled[:, i] = rng.permutation(shuffled[:, i])
        drops.append((name, float(base - classification_metrics(y, score(shuffled))["roc_auc"])))
    return sorted(drops, key=lambda item: -item[1])


def _table(rows: Sequence[Mapping[str, Any]], empty: str = "none") -> str:
    if not rows:
        return f"<p><em>{html.escape(empty)}</em></p>"
    head = "".join(f"<th>{html.escape(str(k))}</th>" for k in rows[0])
    body = "".join("<tr>" + "".join(f"<td>{html.escape(_fmt(v))}</td>" for v in row.values()) + "</tr>" for row in rows)
    return f"<table><tr>{head}</tr>{body}</table>"


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        if value.is_integer():
            return f"{value:,.0f}"
        return f"{value:.4f}" if abs(value) < 1000 else f"{value:,.0f}"
    if isinstance(value, int):
        return f"{value:,}"
    return "" if value is None else str(value)


def _pairs(values: Mapping[str, Any]) -> list[dict[str, Any]]:
    return [
        {"what": k, "value": v if not isinstance(v, Mapping) else ", ".join(f"{a}: {b}" for a, b in v.items())} for k, v in values.items()
    ]


def card_html(facts: CardFacts) -> str:
    """The page, every value escaped."""
    e = html.escape
    horizon = f"{facts.horizon_days} days" if facts.horizon_days else "unknown"
    sections = [
        ("Decision", f"<p><b>{e(facts.decision)}</b>: {e(facts.reason)}</p>"),
        ("Data window (registry)", _table(_pairs(facts.data_window))),
        ("Population", _table(_pairs(facts.population))),
        ("Out of time: backtest against the classical baselines (the headline)", _table(facts.out_of_time)),
        ("Test split: metrics (customers held out, newest snapshots)", _table(_pairs(facts.test_metrics))),
        ("Test split: calibration (predicted against observed churn by score bin)", _table(facts.calibration)),
        ("Test split: the contact list at the budget", _table(facts.business)),
        ("Top reasons overall (test split: drop in ROC-AUC when the feature is shuffled)", _table(facts.reasons)),
        (
            "Reasons per customer (test split"
            + (f", a seeded sample of {facts.first_reasons_rows:,} rows" if facts.first_reasons_rows else "")
            + ": how often each feature is the first reason batch scoring gives)",
            _table(facts.first_reasons, "not explained"),
        ),
        ("Drift since training (days scored after the training window)", _table(facts.drift, "no day scored since training yet")),
    ]
    figures = "".join(
        f'<figure><img alt="{e(caption)}" src="data:image/png;base64,{data}"><figcaption>{e(caption)}</figcaption></figure>'
        for caption, data in facts.figures.items()
    )
    body = "".join(f"<h2>{e(title)}</h2>{content}" for title, content in sections)
    style = (
        "body{font-family:sans-serif;max-width:60rem;margin:2rem auto;color:#222}table{border-collapse:collapse;margin:.5rem 0}"
        "td,th{border:1px solid #ccc;padding:.2rem .5rem;text-align:left;font-size:.9rem}figure{display:inline-block;margin:.5rem}"
    )
    return (
        f"<!doctype html><html><head><meta charset='utf-8'><title>Model card {e(facts.version)}</title><style>{style}</style></head>"
        f"<body><h1>Model card: {e(facts.version)}</h1>"
        f"<p>Kind {e(facts.kind)}; registered {e(facts.created_at)}; code version {e(facts.code_version)}; "
        f"predicts P(no purchase in the next {e(horizon)}).</p>{body}<h2>Plots</h2>{figures}</body></html>"
    )
