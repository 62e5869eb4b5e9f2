"""The promotion decision, framework-free: which candidates may become champion, and whether the best one does.

`champion_model` gathers the facts (registry versions, baseline figures,
metrics on the test rows) and records the outcome; everything it decides is
decided here, so tests call these functions directly.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, NamedTuple, Protocol

# Metric name -> True when higher is better.
GATE_METRICS = {"roc_auc": True, "pr_auc": True, "log_loss": False, "brier": False}


class Model(Protocol):
    """What the decision reads of a registered model version (resources.registry.ModelVersion has it)."""

    version: str
    kind: str
    metrics: dict[str, Any]

    @property
    def promotable(self) -> bool: ...


@dataclass(frozen=True)
class Decision:
    action: str  # "promoted" or "kept"
    winner: str | None
    reason: str
    candidate: str | None = None  # the best eligible candidate, when there was one


@dataclass(frozen=True)
class Eligibility:
    eligible: list[Any]
    refused: dict[str, str] = field(default_factory=dict)


class BestBaseline(NamedTuple):
    """The strongest simple baseline of the backtest (none when no cutoff had matured labels)."""

    name: str | None
    roc_auc: float | None


def baseline_refusal(metrics: dict[str, Any], baseline: BestBaseline, margin: float) -> str | None:
    """Why a candidate may not be promoted against the baselines, or None when it beats the best one by ``margin`` out of time."""
    best, best_auc = baseline
    auc = metrics.get("backtest_roc_auc")
    if best is None or best_auc is None or auc is None or not math.isfinite(float(auc)):
        return "no out-of-time backtest (no cutoff with matured labels): it cannot be compared with the baselines"
    if float(auc) < float(best_auc) + margin:
        return f"backtest ROC-AUC {float(auc):.4f} does not beat the best baseline {best} {float(best_auc):.4f} by {margin}"
    return None


def eligibility(learned: list[Model], fallback: Model, baseline: BestBaseline, margin: float) -> Eligibility:
    """Learned candidates with a passed parity check that beat the best baseline by ``margin``; when there is none,
    the baseline model itself (``fallback``, BG/NBD) if its parity passed."""
    refused = {c.version: "no passed ONNX parity check" for c in [*learned, fallback] if not c.promotable}
    for c in learned:
        if c.version not in refused and (why := baseline_refusal(c.metrics, baseline, margin)):
            refused[c.version] = why
    eligible = [c for c in learned if c.version not in refused]
    if not eligible and fallback.version not in refused:
        eligible = [fallback]
    return Eligibility(eligible, refused)


def headline(model: Model, on_test: dict[str, float], metric: str) -> float:
    """The figure that ranks this run's candidates: the backtest's when the model has one (same cutoffs for all)."""
    value = model.metrics.get(f"backtest_{metric}")
    return float(value) if value is not None else on_test[metric]


def decide(
    eligible: list[Model], current: Model | None, on_test: dict[str, dict[str, float]], metric: str, min_improvement: float
) -> Decision:
    """Promote the best eligible candidate (by backtest) if it beats the current champion on the same test rows by
    ``min_improvement``; the first model ever is promoted; otherwise the champion stays.

    The current champion's own backtest ran on older cutoffs, so against it only the same rows are fair.
    """
    if metric not in GATE_METRICS:
        raise ValueError(f"metric {metric!r} is not one of {sorted(GATE_METRICS)}")
    higher = GATE_METRICS[metric]
    previous = current.version if current else None
    if not eligible:
        return Decision("kept", previous, f"no candidate is eligible; the champion stays {previous}")
    best = max(eligible, key=lambda c: headline(c, on_test[c.version], metric) * (1 if higher else -1))
    value = on_test[best.version][metric]
    if current is None:
        return Decision(
            "promoted",
            best.version,
            f"first champion: {best.version} has the best backtest {metric} {headline(best, on_test[best.version], metric):.4f} "
            f"of {len(eligible)} eligible candidates",
            best.version,
        )
    if current.version == best.version:
        return Decision("kept", previous, f"{best.version} is the best candidate and already the champion", best.version)
    theirs = on_test[current.version][metric]
    if (value >= theirs + min_improvement) if higher else (value <= theirs - min_improvement):
        return Decision(
            "promoted",
            best.version,
            f"{best.version} test {metric} {value:.4f} beats champion {current.version} {theirs:.4f} by at least {min_improvement}",
            best.version,
        )
    return Decision(
        "kept",
        previous,
        f"best candidate {best.version} test {metric} {value:.4f} does not beat champion {current.version} {theirs:.4f} "
        f"by {min_improvement}; the champion stays",
        best.version,
    )
