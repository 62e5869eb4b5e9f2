"""What acting on a churn list is worth: cumulative gains and lift, precision and recall at a contact budget, revenue at risk.

A retention team contacts the top ``budget`` share of customers by score
(``rollout.contact_budget``). For that list:

- *precision at budget*: the share of the list that churned;
- *recall at budget* ("churn caught"): the share of all churners that were on the list;
- *lift at budget*: precision over the population's churn rate (1 = no better than a random list);
- *expected revenue at risk*: the sum over the list of P(churn) x the customer's spend in the last 90 days
  (``spend_90d``): the quarter's revenue that leaves if the scores are right. When every customer of the
  history is scored, the highest probabilities belong to customers long gone, whose recent spend is 0: the
  list ranked by P(churn) then has little revenue at risk. So the same budget ranked by P(churn) x spend
  (the *value-ranked list*, whom to call to keep revenue) is reported beside it;
- once outcomes mature, *revenue of churners caught*: the 90-day spend of the list's customers who did churn,
  beside the spend of every churner (what a perfect list would have caught).

The list is the top ``k = max(1, round(n x budget))`` customers by score, ties
broken by the scores' order (stable), the same list ``lib.rollout`` ranks.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from matplotlib.figure import Figure

# The spend a customer's churn puts at risk: the windowed spend feature every source has (amount is required).
VALUE_COLUMN = "spend_90d"


def top_k(scores: np.ndarray, budget: float) -> np.ndarray:
    """Indices of the contact list: the ``budget`` share of rows with the highest scores (at least one row)."""
    k = max(1, int(round(len(scores) * budget)))
    return np.argsort(-np.asarray(scores, dtype=np.float64), kind="stable")[:k]


def gains(y: np.ndarray, scores: np.ndarray, points: int = 100) -> tuple[np.ndarray, np.ndarray]:
    """The cumulative gains curve: (share of customers contacted, share of all churners among them), from (0, 0) to (1, 1)."""
    y = np.asarray(y, dtype=np.float64)
    order = np.argsort(-np.asarray(scores, dtype=np.float64), kind="stable")
    caught = np.concatenate([[0.0], np.cumsum(y[order])])
    total = caught[-1]
    n = len(y)
    at = np.unique(np.round(np.linspace(0, n, points + 1)).astype(int))
    return at / n, (caught[at] / total if total else np.zeros(len(at)))


def business_view(scores: np.ndarray, value: np.ndarray, budget: float, y: np.ndarray | None = None) -> dict[str, float]:
    """The contact list's figures; with ``y`` (matured outcomes, 1 = churned) also what it caught."""
    scores = np.asarray(scores, dtype=np.float64)
    value = np.nan_to_num(np.asarray(value, dtype=np.float64), nan=0.0)
    if len(scores) == 0:
        return {}
    top = top_k(scores, budget)
    out: dict[str, float] = {
        "contact_budget": float(budget),
        "contacted": float(len(top)),
        "customers": float(len(scores)),
        "expected_revenue_at_risk_top_k": float(np.sum(scores[top] * value[top])),
        "expected_revenue_at_risk_all": float(np.sum(scores * value)),
        "expected_revenue_at_risk_value_ranked": float(np.sum(np.sort(scores * value)[::-1][: len(top)])),
        "expected_churners_top_k": float(np.sum(scores[top])),
    }
    if y is not None:
        y = np.asarray(y, dtype=np.float64)
        churners = float(np.sum(y))
        rate = churners / len(y)
        precision = float(np.mean(y[top]))
        out.update(
            {
                "churn_rate": rate,
                "precision_at_budget": precision,
                "recall_at_budget": float(np.sum(y[top]) / churners) if churners else 0.0,
                "lift_at_budget": precision / rate if rate else 0.0,
                "churners_caught": float(np.sum(y[top])),
                "revenue_of_churners_caught": float(np.sum(value[top] * y[top])),
                "revenue_of_all_churners": float(np.sum(value * y)),
            }
        )
        # The value-ranked list of the same size: who churned on it and what they spent (the revenue a call could keep).
        by_value = top_k(scores * value, budget)
        out.update(
            {
                "value_ranked_precision": float(np.mean(y[by_value])),
                "value_ranked_revenue_of_churners_caught": float(np.sum(value[by_value] * y[by_value])),
            }
        )
    return out


def gains_figure(y: np.ndarray, scores: np.ndarray, budget: float, title: str) -> Figure:
    """Cumulative gains and lift, with the contact budget marked."""
    from lib.evaluation import pyplot

    plt = pyplot()
    share, caught = gains(y, scores)
    fig, (gain_ax, lift_ax) = plt.subplots(1, 2, figsize=(8, 3.6))
    gain_ax.plot(share, caught, label="model")
    gain_ax.plot([0, 1], [0, 1], linestyle="--", color="grey", label="random list")
    gain_ax.axvline(budget, color="tab:red", linestyle=":", label=f"budget {budget:.0%}")
    gain_ax.set(xlabel="share of customers contacted (by score)", ylabel="share of churners caught", title="Cumulative gains")
    gain_ax.legend(loc="lower right", fontsize=8)
    rate = float(np.mean(y)) if len(y) else 0.0
    with np.errstate(divide="ignore", invalid="ignore"):
        lift = np.where(share > 0, caught / np.where(share > 0, share, 1.0), np.nan)
    lift_ax.plot(share[1:], lift[1:])
    lift_ax.axhline(1.0, linestyle="--", color="grey")
    lift_ax.axvline(budget, color="tab:red", linestyle=":")
    lift_ax.set(xlabel="share of customers contacted", ylabel="lift (churn rate in list / overall)", title=f"Lift (churn rate {rate:.1%})")
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return fig


def view_table(view: dict[str, float]) -> list[dict[str, Any]]:
    """The figures as rows an analyst reads: what, value."""
    words = {
        "contact_budget": "contact budget (share of customers)",
        "contacted": "customers on the list",
        "customers": "customers scored",
        "churn_rate": "churn rate (all customers)",
        "precision_at_budget": "precision at budget (list members who churned)",
        "recall_at_budget": "churn caught (share of all churners on the list)",
        "lift_at_budget": "lift at budget",
        "churners_caught": "churners on the list",
        "expected_churners_top_k": "expected churners on the list (sum of P(churn))",
        "expected_revenue_at_risk_top_k": "expected revenue at risk on the list (sum of P(churn) x 90-day spend)",
        "expected_revenue_at_risk_all": "expected revenue at risk, all customers",
        "expected_revenue_at_risk_value_ranked": "expected revenue at risk on a list of the same size ranked by P(churn) x spend",
        "revenue_of_churners_caught": "90-day spend of churners on the list",
        "revenue_of_all_churners": "90-day spend of all churners",
        "value_ranked_precision": "value-ranked list: share who churned",
        "value_ranked_revenue_of_churners_caught": "value-ranked list: 90-day spend of its churners",
    }
    return [{"what": words.get(k, k), "value": round(v, 4)} for k, v in view.items()]
