"""The champion's model card (lib/model_card.py), gathered by champion_model and stored beside the other reports."""

from __future__ import annotations

import datetime as dt
from typing import Any

import dagster as dg
import numpy as np
import polars as pl

from lib.training import feature_matrix
from resources import ArtifactStore, Lake
from resources.registry import ModelVersion

CARDS = "model_cards"
DRIFT_DAYS_SHOWN = 30


def card_name(version: str) -> str:
    return f"{version}.html"


def write_card(
    champion: ModelVersion,
    decision: str,
    reason: str,
    test: pl.DataFrame,
    scores: np.ndarray,
    session: Any,
    backtest: list[dict[str, Any]],
    business: list[dict[str, Any]],
    budget: float,
    artifacts: ArtifactStore,
    lake: Lake,
) -> str:
    """Build and store the champion's card from its test scores and its verified ONNX session; its location."""
    from lib.business import gains_figure
    from lib.evaluation import calibration_bins, calibration_figure, classification_metrics, png_base64, roc_pr_figure
    from lib.explain import explain, first_reason_summary
    from lib.export import onnx_churn_probability
    from lib.model_card import CardFacts, card_html, card_sample, permutation_importance
    from ml_assets.assets.features import FEATURE_DESCRIPTIONS
    from ml_assets.champion import explain_spec

    columns = tuple(champion.features)
    y, x = test["churned"].to_numpy(), feature_matrix(test, columns)
    metrics = classification_metrics(y, scores)
    reasons = [
        {"feature": name, "what it measures": FEATURE_DESCRIPTIONS.get(name, name), "ROC-AUC drop when shuffled": round(drop, 4)}
        for name, drop in permutation_importance(lambda rows: onnx_churn_probability(session, rows), x, y, columns, scores)[:10]
    ]
    title = f"{champion.version}, test split ({len(y):,} rows)"
    spec = explain_spec(champion, artifacts)
    explained = card_sample(len(y))
    facts = CardFacts(
        version=champion.version,
        kind=champion.kind,
        created_at=f"{champion.created_at:%Y-%m-%d %H:%M} UTC",
        code_version=champion.code_version,
        horizon_days=champion.horizon_days,
        decision=decision,
        reason=reason,
        data_window=dict(champion.data_window),
        population={
            "test rows (customer snapshots)": int(len(y)),
            "test customers": int(test["customer_id"].n_unique()),
            "test churn rate": round(float(np.mean(y)), 4) if len(y) else None,
            "features": ", ".join(columns),
        },
        out_of_time=backtest,
        test_metrics={k: round(float(v), 5) for k, v in metrics.items()},
        calibration=[{k: round(float(v), 4) for k, v in b.items()} for b in calibration_bins(y, scores)],
        business=business,
        reasons=reasons,
        first_reasons=first_reason_summary(explain(spec, x[explained]).contributions, columns) if len(y) else [],
        first_reasons_rows=len(explained) if len(explained) < len(y) else None,
        drift=_drift_since(lake, champion),
        figures={
            "ROC and precision-recall, test split": png_base64(roc_pr_figure(y, scores, title), dpi=80),
            "calibration, test split": png_base64(calibration_figure(y, scores, title), dpi=80),
            f"cumulative gains and lift at a {budget:.0%} contact budget, test split": png_base64(
                gains_figure(y, scores, budget, title), dpi=80
            ),
        },
    )
    return artifacts.put_named(CARDS, card_name(champion.version), card_html(facts).encode()).uri


def _drift_since(lake: Lake, champion: ModelVersion) -> list[dict[str, Any]]:
    """Per day scored after the model's newest test snapshot (the newest shown): how many monitored columns drifted."""
    last = (champion.data_window.get("test") or {}).get("last_snapshot")
    key = dg.AssetKey("drift_report")
    days = [d for d in lake.existing_partitions(key) if last and d > str(last)][-DRIFT_DAYS_SHOWN:]
    if not days:
        return []
    table = lake.read_partitions(key, days)
    rows = table.group_by("snapshot_date").agg(
        pl.len().alias("columns"),
        pl.col("drifted").sum().alias("drifted"),
        pl.col("column").filter(pl.col("drifted")).sort().str.join(", ").alias("drifted columns"),
    )
    return [
        {"day": d.isoformat() if isinstance(d, dt.date) else str(d), "monitored": n, "drifted": k, "which": which}
        for d, n, k, which in rows.sort("snapshot_date").iter_rows()
    ]
