"""The promotion decision as pure functions: the baseline gate, the BG/NBD fallback, the champion comparison."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import pytest

from lib.promotion import BestBaseline, baseline_refusal, decide, eligibility

BASELINES = BestBaseline("bgnbd", 0.80)


@dataclass
class V:
    version: str
    kind: str = "lightgbm"
    metrics: dict[str, Any] = field(default_factory=dict)
    promotable: bool = True


def test_a_learned_model_must_beat_the_best_baseline_by_the_margin() -> None:
    assert baseline_refusal({"backtest_roc_auc": 0.803}, BASELINES, 0.002) is None
    assert "does not beat the best baseline bgnbd 0.8000 by 0.002" in baseline_refusal({"backtest_roc_auc": 0.801}, BASELINES, 0.002)
    # Without an out-of-time figure there is nothing to compare: refused, not waved through.
    assert "no out-of-time backtest" in baseline_refusal({"test_roc_auc": 0.99}, BASELINES, 0.002)
    assert "no out-of-time backtest" in baseline_refusal({"backtest_roc_auc": float("nan")}, BASELINES, 0.0)


def test_bgnbd_is_the_candidate_only_when_no_learned_model_qualifies() -> None:
    good, weak = V("lgbm-1", metrics={"backtest_roc_auc": 0.83}), V("torch-1", "torch", {"backtest_roc_auc": 0.79})
    fallback = V("bgnbd-1", "bgnbd", {"backtest_roc_auc": 0.80})
    gate = eligibility([good, weak], fallback, BASELINES, 0.002)
    assert [c.version for c in gate.eligible] == ["lgbm-1"] and set(gate.refused) == {"torch-1"}
    gate = eligibility([weak], fallback, BASELINES, 0.002)
    assert [c.version for c in gate.eligible] == ["bgnbd-1"]
    # A failed parity check refuses any model, the fallback included.
    broken = V("bgnbd-2", "bgnbd", promotable=False)
    gate = eligibility([V("lgbm-2", metrics={"backtest_roc_auc": 0.9}, promotable=False)], broken, BASELINES, 0.002)
    assert gate.eligible == [] and gate.refused == {"lgbm-2": "no passed ONNX parity check", "bgnbd-2": "no passed ONNX parity check"}


def test_the_best_candidate_by_backtest_must_beat_the_champion_on_the_same_rows() -> None:
    a = V("lgbm-a", metrics={"backtest_roc_auc": 0.85})
    b = V("torch-b", "torch", {"backtest_roc_auc": 0.84})
    champion = V("lgbm-old")
    on_test = {"lgbm-a": {"roc_auc": 0.86}, "torch-b": {"roc_auc": 0.90}, "lgbm-old": {"roc_auc": 0.855}}
    # a leads out of time (b's better test figure does not choose it); a beats the champion by 0.005 >= 0.002.
    d = decide([a, b], champion, on_test, "roc_auc", 0.002)
    assert (d.action, d.winner, d.candidate) == ("promoted", "lgbm-a", "lgbm-a") and "beats champion lgbm-old" in d.reason
    d = decide([a, b], champion, on_test, "roc_auc", 0.01)
    assert (d.action, d.winner, d.candidate) == ("kept", "lgbm-old", "lgbm-a") and "does not beat" in d.reason
    assert decide([a], None, on_test, "roc_auc", 0.5).action == "promoted"
    assert decide([], champion, on_test, "roc_auc", 0.0).winner == "lgbm-old"
    # Lower is better for log loss.
    loss = {"lgbm-a": {"log_loss": 0.30}, "lgbm-old": {"log_loss": 0.35}}
    assert decide([V("lgbm-a")], champion, loss, "log_loss", 0.01).action == "promoted"
    with pytest.raises(ValueError, match="not one of"):
        decide([a], None, on_test, "accuracy", 0.0)
