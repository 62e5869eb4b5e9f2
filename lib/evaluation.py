"""Holdout metrics and the plots that explain them (framework-free).

Every model kind is evaluated by the same functions on the same rows, so the
figures on `lgbm_model`, `torch_model` and `champion_model` compare like with like.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import numpy as np
    from matplotlib.figure import Figure

CALIBRATION_BINS = 10


@dataclass(frozen=True)
class Evaluation:
    """A model's scores judged on one named split: the metrics and the figures that explain them, together."""

    split: str
    metrics: dict[str, float]
    figures: dict[str, tuple[str, Any]] = field(default_factory=dict)  # metadata key -> (caption, matplotlib Figure)

    @property
    def rows(self) -> int:
        return int(self.metrics["rows"])

    def named(self) -> dict[str, float]:
        """Every metric under its split's name (`test_roc_auc`, ...): no figure without the rows it was measured on."""
        return {f"{self.split}_{k}": v for k, v in self.metrics.items()}

    def refusal(self, floor: float) -> str | None:
        """Why a model with these figures may not be registered (ROC-AUC under `floor`), or None."""
        auc = self.metrics["roc_auc"]
        if auc < floor:
            return (
                f"{self.split} ROC-AUC {auc:.3f} is below the floor {floor}; the model is not registered. "
                "Check the training_set (label rate, snapshot count) before lowering the floor."
            )
        return None


def evaluate(y_true: np.ndarray, scores: np.ndarray, name: str, split: str = "test", figures: bool = True) -> Evaluation:
    """The metrics of `scores` on `split` and, unless `figures=False`, the ROC/PR and calibration plots titled with both."""
    metrics = classification_metrics(y_true, scores)
    plots = (
        {
            "roc_pr_curves": ("ROC and PR curves", roc_pr_figure(y_true, scores, f"{name}, {split} split")),
            "calibration_curve": ("calibration curve", calibration_figure(y_true, scores, f"{name} calibration, {split} split")),
        }
        if figures
        else {}
    )
    return Evaluation(split, metrics, plots)


def classification_metrics(y_true: np.ndarray, scores: np.ndarray) -> dict[str, float]:
    """ROC-AUC, PR-AUC, log loss, Brier score and expected calibration error of P(churn) scores."""
    import numpy as np
    from sklearn.metrics import average_precision_score, brier_score_loss, log_loss, roc_auc_score

    y_true = np.asarray(y_true)
    scores = np.asarray(scores, dtype=np.float64)
    if len(np.unique(y_true)) < 2:
        raise ValueError("the holdout has a single class; metrics are undefined (more snapshots or customers are needed)")
    clipped = np.clip(scores, 1e-7, 1 - 1e-7)
    return {
        "roc_auc": float(roc_auc_score(y_true, scores)),
        "pr_auc": float(average_precision_score(y_true, scores)),
        "log_loss": float(log_loss(y_true, clipped, labels=[0, 1])),
        "brier": float(brier_score_loss(y_true, scores)),
        "ece": expected_calibration_error(y_true, scores),
        "positive_rate": float(np.mean(y_true)),
        "rows": float(len(y_true)),
    }


def calibration_bins(y_true: np.ndarray, scores: np.ndarray, bins: int = CALIBRATION_BINS) -> list[dict[str, float]]:
    """Equal-width probability bins: mean predicted probability vs observed churn rate, with row counts."""
    import numpy as np

    y_true = np.asarray(y_true, dtype=np.float64)
    scores = np.asarray(scores, dtype=np.float64)
    edges = np.linspace(0.0, 1.0, bins + 1)
    index = np.clip(np.digitize(scores, edges[1:-1]), 0, bins - 1)
    out = []
    for b in range(bins):
        mask = index == b
        n = int(mask.sum())
        if n:
            out.append(
                {
                    "lower": float(edges[b]),
                    "upper": float(edges[b + 1]),
                    "rows": n,
                    "mean_predicted": float(scores[mask].mean()),
                    "observed_rate": float(y_true[mask].mean()),
                }
            )
    return out


def expected_calibration_error(y_true: np.ndarray, scores: np.ndarray, bins: int = CALIBRATION_BINS) -> float:
    """Row-weighted mean |predicted - observed| over the calibration bins (0 is perfectly calibrated)."""
    table = calibration_bins(y_true, scores, bins)
    total = sum(b["rows"] for b in table)
    return float(sum(b["rows"] * abs(b["mean_predicted"] - b["observed_rate"]) for b in table) / total)


def pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def png_base64(fig: Figure, dpi: int = 90) -> str:
    """A figure as a base64 PNG (for a Markdown image or an HTML page), closed once drawn."""
    import base64
    import io

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi, bbox_inches="tight")
    pyplot().close(fig)
    return base64.b64encode(buf.getvalue()).decode()


def roc_pr_figure(y_true: np.ndarray, scores: np.ndarray, title: str) -> Figure:
    """ROC and precision-recall curves side by side."""
    import numpy as np
    from sklearn.metrics import average_precision_score, precision_recall_curve, roc_auc_score, roc_curve

    plt = pyplot()
    fig, (roc_ax, pr_ax) = plt.subplots(1, 2, figsize=(8, 3.8))
    fpr, tpr, _ = roc_curve(y_true, scores)
    roc_ax.plot(fpr, tpr, label=f"ROC-AUC {roc_auc_score(y_true, scores):.3f}")
    roc_ax.plot([0, 1], [0, 1], linestyle="--", color="grey")
    roc_ax.set(xlabel="false positive rate", ylabel="true positive rate", title="ROC")
    roc_ax.legend(loc="lower right")
    precision, recall, _ = precision_recall_curve(y_true, scores)
    pr_ax.plot(recall, precision, label=f"PR-AUC {average_precision_score(y_true, scores):.3f}")
    # The label column is int8: a plain sum() overflows it.
    pr_ax.axhline(float(np.mean(np.asarray(y_true, dtype=np.float64))), linestyle="--", color="grey", label="churn rate")
    pr_ax.set(xlabel="recall", ylabel="precision", title="Precision-recall")
    pr_ax.legend(loc="lower left")
    fig.suptitle(title)
    return fig


def calibration_figure(y_true: np.ndarray, scores: np.ndarray, title: str) -> Figure:
    """Reliability diagram: observed churn rate against mean predicted probability per bin."""
    plt = pyplot()
    table = calibration_bins(y_true, scores)
    fig, ax = plt.subplots(figsize=(4, 4))
    ax.plot([0, 1], [0, 1], linestyle="--", color="grey", label="perfect")
    ax.plot(
        [b["mean_predicted"] for b in table],
        [b["observed_rate"] for b in table],
        marker="o",
        label=f"ECE {expected_calibration_error(y_true, scores):.3f}",
    )
    ax.set(xlabel="mean predicted probability", ylabel="observed churn rate", title=title, xlim=(0, 1), ylim=(0, 1))
    ax.legend(loc="upper left")
    return fig


def importance_figure(importance: dict[str, float], title: str, top: int = 15) -> Figure:
    plt = pyplot()
    names = list(importance)[:top][::-1]
    fig, ax = plt.subplots(figsize=(5, 4))
    ax.barh(names, [importance[n] for n in names])
    ax.set(xlabel="total gain", title=title)
    return fig


def learning_curve_figure(history: list) -> Figure:  # list of torch_net.EpochLog
    plt = pyplot()
    fig, (loss_ax, auc_ax) = plt.subplots(1, 2, figsize=(8, 3.5))
    epochs = [e.epoch for e in history]
    loss_ax.plot(epochs, [e.train_loss for e in history], label="train")
    loss_ax.plot(epochs, [e.valid_loss for e in history], label="validation")
    loss_ax.set(xlabel="epoch", ylabel="log loss", title="Loss")
    loss_ax.legend()
    auc_ax.plot(epochs, [e.valid_auc for e in history], color="tab:green")
    auc_ax.set(xlabel="epoch", ylabel="ROC-AUC", title="Validation ROC-AUC")
    return fig
