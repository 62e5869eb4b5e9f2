"""The business view of a contact list, on a hand-checked example."""

from __future__ import annotations

import numpy as np
import pytest

from lib.business import business_view, gains, top_k


def test_the_contact_list_figures_by_hand() -> None:
    # Ten customers, 30 % budget: the list is the three highest scores (ids 0, 1, 2), two of whom churned.
    scores = np.array([0.9, 0.8, 0.7, 0.6, 0.5, 0.4, 0.3, 0.2, 0.1, 0.05])
    churned = np.array([1, 0, 1, 1, 0, 0, 0, 1, 0, 0])
    spend = np.array([100.0, 50.0, 10.0, 20.0, 0.0, 0.0, 0.0, 40.0, 0.0, 5.0])
    view = business_view(scores, spend, 0.3, churned)
    assert list(top_k(scores, 0.3)) == [0, 1, 2]
    assert view["contacted"] == 3 and view["churn_rate"] == pytest.approx(0.4)
    assert view["precision_at_budget"] == pytest.approx(2 / 3)
    assert view["recall_at_budget"] == pytest.approx(2 / 4)  # two of the four churners caught
    assert view["lift_at_budget"] == pytest.approx((2 / 3) / 0.4)
    assert view["expected_revenue_at_risk_top_k"] == pytest.approx(0.9 * 100 + 0.8 * 50 + 0.7 * 10)
    assert view["expected_churners_top_k"] == pytest.approx(2.4)
    # Ranked by P(churn) x spend instead: 90, 40 (0.8 x 50) and 12 (0.6 x 20).
    assert view["expected_revenue_at_risk_value_ranked"] == pytest.approx(90 + 40 + 12)
    # That list is ids 0, 1 and 3: ids 0 and 3 churned, spending 100 and 20.
    assert view["value_ranked_precision"] == pytest.approx(2 / 3) and view["value_ranked_revenue_of_churners_caught"] == pytest.approx(
        120.0
    )
    assert view["revenue_of_churners_caught"] == pytest.approx(110.0)
    assert view["revenue_of_all_churners"] == pytest.approx(170.0)
    # Before outcomes mature only the list and its expected figures exist.
    assert "precision_at_budget" not in business_view(scores, spend, 0.3)


def test_the_gains_curve_runs_from_nothing_to_everyone_and_beats_random_for_a_good_ranking() -> None:
    scores = np.array([0.9, 0.8, 0.7, 0.6, 0.5, 0.4, 0.3, 0.2, 0.1, 0.05])
    churned = np.array([1, 0, 1, 1, 0, 0, 0, 1, 0, 0])
    share, caught = gains(churned, scores, points=10)
    assert share[0] == 0 and caught[0] == 0 and share[-1] == 1 and caught[-1] == 1
    assert caught[3] == pytest.approx(0.5) and caught[4] == pytest.approx(0.75)  # 30 % contacted: 2 of 4; 40 %: 3 of 4
    assert np.all(np.diff(caught) >= 0)
    # A ranking that puts every churner first is a perfect list.
    perfect = business_view(churned.astype(float), np.ones(10), 0.4, churned)
    assert perfect["recall_at_budget"] == 1.0 and perfect["precision_at_budget"] == 1.0
