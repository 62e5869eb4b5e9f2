"""Safe rollout's rules as pure functions: stable canary arms, paired comparisons with intervals, and the policy's verdicts."""

from __future__ import annotations

import numpy as np
import pytest

from lib.rollout import (
    CANARY_ARM,
    Interval,
    Matured,
    RolloutPolicy,
    arm_of,
    compare,
    judge,
    matured,
    outcome_metrics,
    rollout_verdict,
)

POLICY = RolloutPolicy(min_matured_days=3, promote_margin=0.01, rollback_floor=0.6, rollback_margin=0.01)


def _world(n: int = 4000, seed: int = 3) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Outcomes, a good model's scores, a better one's, and noise."""
    rng = np.random.default_rng(seed)
    risk = rng.normal(size=n)
    y = (risk + rng.normal(scale=1.0, size=n) > 0.8).astype(np.int8)
    good = 1 / (1 + np.exp(-(risk + rng.normal(scale=0.9, size=n))))
    better = 1 / (1 + np.exp(-(risk + rng.normal(scale=0.4, size=n))))
    return y, good, better, rng.random(n)


def test_the_canary_arm_is_stable_per_customer_and_near_its_share() -> None:
    ids = [f"C{i:08d}" for i in range(20_000)]
    arms = [arm_of(c, 0.1) for c in ids]
    assert arms == [arm_of(c, 0.1) for c in ids]  # the same customer, the same arm, every time and in every process
    share = arms.count(CANARY_ARM) / len(ids)
    assert abs(share - 0.1) < 0.01, share
    assert all(arm_of(c, 0.0) != CANARY_ARM for c in ids[:1000])
    # A larger share keeps everyone who was in the smaller one: raising it never moves a customer back.
    assert all(arm_of(c, 0.2) == CANARY_ARM for c, a in zip(ids, arms, strict=True) if a == CANARY_ARM)


def test_outcome_metrics_agree_with_the_evaluation_module() -> None:
    from lib.evaluation import classification_metrics

    y, good, _, _ = _world()
    mine, reference = outcome_metrics(y, good, 0.1), classification_metrics(y, good)
    for name in ("roc_auc", "log_loss", "ece"):
        assert mine[name] == pytest.approx(reference[name], abs=1e-9), name
    top = np.argsort(-good)[: int(len(y) * 0.1)]
    assert mine["precision_at_budget"] == pytest.approx(y[top].mean())


def test_a_paired_comparison_says_which_is_better_with_confidence() -> None:
    y, good, better, noise = _world()
    c = compare(y, good, better, champion="a", challenger="b", days=3, budget=0.1)
    gain = c.difference["roc_auc"]
    assert gain.low > 0 and gain.low < gain.estimate < gain.high
    assert c.difference["log_loss"].high < 0  # lower is better: the better model's loss is confidently lower
    same = compare(y, good, good, champion="a", challenger="a2", days=3, budget=0.1)
    assert same.difference["roc_auc"].low == 0 == same.difference["roc_auc"].high
    worse = compare(y, good, noise, champion="a", challenger="n", days=3, budget=0.1)
    assert worse.difference["roc_auc"].high < 0


def test_a_degraded_champion_is_rolled_back_and_a_good_one_never() -> None:
    y, good, _, noise = _world()
    degraded = matured(y, noise, champion="bad", days=1)
    assert degraded.roc_auc.high < POLICY.rollback_floor
    verdict = rollout_verdict(degraded, [], "good", set(), {"good"}, POLICY)
    assert verdict.action == "rollback" and verdict.target == "good" and "below the floor" in verdict.reason
    healthy = matured(y, good, champion="good", days=1)
    shadow_of_previous = compare(y, good, noise, champion="good", challenger="bad", days=1, budget=0.1)
    assert rollout_verdict(healthy, [shadow_of_previous], "bad", set(), {"bad"}, POLICY).action == "none"
    # No previous champion to return to, a version the policy rolled back, or the policy off: no rollback.
    assert rollout_verdict(degraded, [], None, set(), set(), POLICY).action == "none"
    assert rollout_verdict(degraded, [], "good", {"good"}, {"good"}, POLICY).action == "none"
    assert rollout_verdict(degraded, [], "good", set(), {"good"}, RolloutPolicy(auto_rollback=False)).action == "none"


def test_the_previous_champion_winning_in_shadow_is_a_rollback_too() -> None:
    y, good, better, _ = _world()
    champion = matured(y, good, champion="new", days=2)
    previous = compare(y, good, better, champion="new", challenger="old", days=2, budget=0.1)
    verdict = rollout_verdict(champion, [previous], "old", set(), {"old"}, POLICY)
    assert champion.roc_auc.low > POLICY.rollback_floor and verdict.action == "rollback" and verdict.target == "old"


def test_promotion_needs_enough_matured_days_a_margin_with_confidence_and_a_version_never_rolled_back() -> None:
    y, good, better, _ = _world()
    champion = matured(y, good, champion="a", days=3)
    win = compare(y, good, better, champion="a", challenger="b", days=3, budget=0.1)
    assert rollout_verdict(champion, [win], None, set(), {"b"}, POLICY).action == "promote"
    early = compare(y, good, better, champion="a", challenger="b", days=2, budget=0.1)
    assert rollout_verdict(champion, [early], None, set(), {"b"}, POLICY).action == "none"
    assert rollout_verdict(champion, [win], None, {"b"}, {"b"}, POLICY).action == "none"  # rolled back once: a person decides
    assert rollout_verdict(champion, [win], None, set(), set(), POLICY).action == "none"  # no parity, no promotion
    demanding = RolloutPolicy(promote_margin=win.difference["roc_auc"].low + 0.001)
    assert rollout_verdict(champion, [win], None, set(), {"b"}, demanding).action == "none"


def test_an_interval_without_resamples_never_acts() -> None:
    nan = float("nan")
    verdict = rollout_verdict(Matured("a", Interval(0.4, nan, nan), 1, 3, 0.95), [], "b", set(), {"b"}, POLICY)
    assert verdict.action == "none"


@pytest.mark.parametrize("ties", [False, True])
def test_a_bootstrap_draw_as_multiplicities_gives_the_metrics_of_the_resampled_rows(ties: bool) -> None:
    from lib.rollout import WeightedMetrics

    y, good, _, _ = _world()
    scores = np.round(good, 2) if ties else good  # rounded: many customers share a score, as tree models give
    weighted = WeightedMetrics(y, scores, 0.1)
    rng = np.random.default_rng(4)
    for _ in range(5):
        idx = rng.integers(0, len(y), len(y))
        mine, reference = weighted(np.bincount(idx, minlength=len(y))), outcome_metrics(y[idx], scores[idx], 0.1)
        for name in ("roc_auc", "log_loss", "ece"):
            assert mine[name] == pytest.approx(reference[name], abs=1e-12), name
        # At the budget's edge, tied customers count by their share rather than by the draw's order.
        assert mine["precision_at_budget"] == pytest.approx(reference["precision_at_budget"], abs=0.0 if not ties else 0.02)


def test_above_the_bootstrap_cap_a_subsample_gives_the_pools_interval_at_a_fixed_cost(monkeypatch: pytest.MonkeyPatch) -> None:
    """A pool above ``BOOTSTRAP_ROWS`` is resampled on a subsample whose spread is scaled to the pool: the intervals
    keep the pool's own estimate, about the width of the full bootstrap, and the same verdicts."""
    import lib.rollout as rollout

    rng = np.random.default_rng(5)
    n = 40_000
    y = (rng.random(n) < 0.4).astype(np.int8)
    good = np.clip(0.4 + 0.25 * (y - 0.4) + rng.normal(0, 0.2, n), 0.001, 0.999)
    better = np.clip(good + 0.05 * (y - 0.4) + rng.normal(0, 0.05, n), 0.001, 0.999)
    monkeypatch.setattr(rollout, "BOOTSTRAP_ROWS", n)
    full = compare(y, good, better, champion="a", challenger="b", days=3, budget=0.1)
    own = matured(y, good, champion="a", days=3)
    monkeypatch.setattr(rollout, "BOOTSTRAP_ROWS", 8_000)
    capped = compare(y, good, better, champion="a", challenger="b", days=3, budget=0.1)
    capped_own = matured(y, good, champion="a", days=3)
    assert capped.rows == n and capped.champion_metrics == full.champion_metrics
    for metric in ("roc_auc", "log_loss", "precision_at_budget"):
        a, b = full.difference[metric], capped.difference[metric]
        assert a.estimate == b.estimate and b.low < b.estimate < b.high, metric
        assert (b.high - b.low) == pytest.approx(a.high - a.low, rel=0.35), metric
    assert capped.difference["roc_auc"].low > 0 and full.difference["roc_auc"].low > 0
    assert capped_own.roc_auc.estimate == own.roc_auc.estimate
    assert (capped_own.roc_auc.high - capped_own.roc_auc.low) == pytest.approx(own.roc_auc.high - own.roc_auc.low, rel=0.35)
    # One set of draws for the champion and every challenger gives what each call alone gives.
    for cap in (8_000, n):
        monkeypatch.setattr(rollout, "BOOTSTRAP_ROWS", cap)
        alone = [compare(y, good, s, champion="a", challenger=k, days=3, budget=0.1) for k, s in (("b", better), ("g", good))]
        together = judge(y, good, {"b": better, "g": good}, champion="a", days=3, budget=0.1)
        assert together == (matured(y, good, champion="a", days=3), alone)
