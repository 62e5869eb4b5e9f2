"""Safe rollout as pure functions: who is in the canary arm, how two models compare on matured outcomes, and when the
registry promotes a challenger or rolls the champion back by itself.

Every comparison is paired: the champion and a challenger are scored on the
same customers of the same day (the challenger in shadow), and their
difference is bootstrapped over customers, so a verdict says with what
confidence one model is better, not only that its figure is higher.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import numpy as np

CHAMPION_ARM, CANARY_ARM, SHADOW_ARM = "champion", "canary", "shadow"
ARM_SALT = "churn-canary"
METRICS = ("roc_auc", "log_loss", "ece", "precision_at_budget")
# Customers a bootstrap resamples at most. Above it the draws run on a seeded subsample of this many and their spread
# around the subsample's own figure is scaled by sqrt(subsample / pool) onto the whole pool's figure (the m-out-of-n
# bootstrap, sound for these smooth metrics, whose spread shrinks as 1/sqrt(n)). A day's verdict then costs the same
# at any size: at 10 M transactions a year a pool of 3 matured days held 1.2 M customers, a minute a day. The demo's
# pools (5,000 customers a day) stay under it and keep the exact bootstrap.
BOOTSTRAP_ROWS = 20_000
# Higher is better for these; lower for the others.
HIGHER_IS_BETTER = {"roc_auc": True, "precision_at_budget": True, "log_loss": False, "ece": False}


def arm_of(customer_id: str, canary_share: float, salt: str = ARM_SALT) -> str:
    """`canary` for a stable ``canary_share`` of customers (a hash of the id: a customer stays in one arm), else `champion`."""
    if canary_share <= 0.0:
        return CHAMPION_ARM
    digest = hashlib.sha256(f"{salt}:{customer_id}".encode()).digest()
    return CANARY_ARM if int.from_bytes(digest[:8], "big") < canary_share * 2**64 else CHAMPION_ARM


def precision_at_budget(y: np.ndarray, scores: np.ndarray, budget: float) -> float:
    """Share of churners among the top ``budget`` share of customers by score: what a retention team contacting them finds."""
    import numpy as np

    from lib.business import top_k

    return float(np.mean(y[top_k(scores, budget)]))


def outcome_metrics(y: np.ndarray, scores: np.ndarray, budget: float, bins: int = 10) -> dict[str, float]:
    """ROC-AUC, log loss, calibration error and precision at the contact budget of one model's matured scores.

    In numpy (the bootstrap calls it hundreds of times); the same definitions as
    lib/evaluation.py: ROC-AUC by average ranks (ties count half), log loss on
    scores clipped to [1e-7, 1 - 1e-7], row-weighted calibration error over
    equal-width bins.
    """
    import numpy as np
    from scipy.stats import rankdata

    y = np.asarray(y, dtype=np.float64)
    s = np.asarray(scores, dtype=np.float64)
    positives = y.sum()
    negatives = len(y) - positives
    ranks = rankdata(s)
    auc = (ranks[y == 1].sum() - positives * (positives + 1) / 2) / (positives * negatives)
    clipped = np.clip(s, 1e-7, 1 - 1e-7)
    loss = -np.mean(y * np.log(clipped) + (1 - y) * np.log(1 - clipped))
    index = np.clip(np.digitize(s, np.linspace(0.0, 1.0, bins + 1)[1:-1]), 0, bins - 1)
    rows = np.bincount(index, minlength=bins)
    gap = np.abs(np.bincount(index, weights=s, minlength=bins) - np.bincount(index, weights=y, minlength=bins))
    ece = float(gap.sum() / rows.sum())
    return {"roc_auc": float(auc), "log_loss": float(loss), "ece": ece, "precision_at_budget": precision_at_budget(y, s, budget)}


class WeightedMetrics:
    """``outcome_metrics`` of bootstrap draws given as multiplicities (how often each customer was drawn).

    The scores are sorted and grouped by value once; a draw then costs a few
    weighted sums (O(n)) instead of a sort, and a rollout evaluation runs
    hundreds of draws a day. ROC-AUC (ties count half), log loss and calibration
    error equal ``outcome_metrics`` of the resampled rows; precision at the
    budget counts the customers tied at the budget's edge by their share
    instead of by the draw's order.
    """

    def __init__(self, y: np.ndarray, scores: np.ndarray, budget: float, bins: int = 10) -> None:
        import numpy as np

        s = np.asarray(scores, dtype=np.float64)
        self.order = np.argsort(s, kind="stable")
        self.y, self.s = np.asarray(y, dtype=np.float64)[self.order], s[self.order]
        self.group = np.concatenate([[0], np.cumsum(np.diff(self.s) != 0)]).astype(np.int64)
        self.groups = int(self.group[-1]) + 1 if len(s) else 0
        clipped = np.clip(self.s, 1e-7, 1 - 1e-7)
        self.loss = -(self.y * np.log(clipped) + (1 - self.y) * np.log(1 - clipped))
        self.bin = np.clip(np.digitize(self.s, np.linspace(0.0, 1.0, bins + 1)[1:-1]), 0, bins - 1)
        self.bins, self.budget = bins, budget

    def __call__(self, counts: np.ndarray) -> dict[str, float]:
        import numpy as np

        w = np.asarray(counts, dtype=np.float64)[self.order]
        n = w.sum()
        positive = np.bincount(self.group, weights=w * self.y, minlength=self.groups)
        total = np.bincount(self.group, weights=w, minlength=self.groups)
        negative = total - positive
        below = np.cumsum(negative) - negative
        auc = float((positive * (below + 0.5 * negative)).sum() / (positive.sum() * negative.sum()))
        rows = np.bincount(self.bin, weights=w, minlength=self.bins)
        gap = np.abs(
            np.bincount(self.bin, weights=w * self.s, minlength=self.bins) - np.bincount(self.bin, weights=w * self.y, minlength=self.bins)
        )
        k = max(1, int(round(n * self.budget)))
        top_total, top_positive = total[::-1], positive[::-1]
        reached = np.cumsum(top_total)
        edge = int(np.searchsorted(reached, k))
        taken = k - (reached[edge] - top_total[edge])
        hits = top_positive[:edge].sum() + taken * top_positive[edge] / top_total[edge]
        return {
            "roc_auc": auc,
            "log_loss": float((w * self.loss).sum() / n),
            "ece": float(gap.sum() / rows.sum()),
            "precision_at_budget": float(hits / k),
        }


@dataclass(frozen=True)
class Interval:
    estimate: float
    low: float
    high: float

    def as_dict(self) -> dict[str, float]:
        return {"estimate": self.estimate, "low": self.low, "high": self.high}


@dataclass(frozen=True)
class Comparison:
    """A challenger against the champion on the same matured customers: each model's figures and the paired differences
    (challenger minus champion) with bootstrap confidence intervals."""

    champion: str
    challenger: str
    rows: int
    days: int
    champion_metrics: dict[str, float]
    challenger_metrics: dict[str, float]
    difference: dict[str, Interval]
    confidence: float

    def as_dict(self) -> dict[str, Any]:
        return {
            "champion": self.champion,
            "challenger": self.challenger,
            "rows": self.rows,
            "days": self.days,
            "confidence": self.confidence,
            "champion_metrics": self.champion_metrics,
            "challenger_metrics": self.challenger_metrics,
            "difference": {k: v.as_dict() for k, v in self.difference.items()},
        }


def compare(
    y: np.ndarray,
    champion_scores: np.ndarray,
    challenger_scores: np.ndarray,
    *,
    champion: str,
    challenger: str,
    days: int,
    budget: float,
    confidence: float = 0.95,
    resamples: int = 300,
    seed: int = 7,
) -> Comparison:
    """Paired comparison on the same customers; intervals from a seeded bootstrap over customers (percentile method;
    over a subsample, its spread scaled, above ``BOOTSTRAP_ROWS`` customers)."""
    _, comparisons = judge(
        y,
        champion_scores,
        {challenger: challenger_scores},
        champion=champion,
        days=days,
        budget=budget,
        confidence=confidence,
        resamples=resamples,
        seed=seed,
    )
    return comparisons[0]


def judge(
    y: np.ndarray,
    champion_scores: np.ndarray,
    challengers: Mapping[str, np.ndarray],
    *,
    champion: str,
    days: int,
    budget: float,
    confidence: float = 0.95,
    resamples: int = 300,
    seed: int = 7,
) -> tuple[Matured, list[Comparison]]:
    """``matured`` for the champion and ``compare`` for each challenger, all on the same customers, from one set of
    bootstrap draws: each draw weighs the champion once, not once per figure (the same numbers as calling each)."""
    import numpy as np

    y = np.asarray(y, dtype=np.int8)
    a = np.asarray(champion_scores, float)
    others = {name: np.asarray(scores, float) for name, scores in challengers.items()}
    base = outcome_metrics(y, a, budget)
    figures = {name: outcome_metrics(y, b, budget) for name, b in others.items()}
    rows, scale = _bootstrap_rows(len(y), seed)
    ys, sa = y[rows], a[rows]
    wa = WeightedMetrics(ys, sa, budget)
    weighted = {name: WeightedMetrics(ys, b[rows], budget) for name, b in others.items()}
    centre_a = outcome_metrics(ys, sa, budget) if scale != 1.0 else base
    centre = {name: _difference(outcome_metrics(ys, b[rows], budget), centre_a) for name, b in others.items()} if scale != 1.0 else {}
    own: list[float] = []
    diffs: dict[str, dict[str, list[float]]] = {name: {m: [] for m in METRICS} for name in others}
    for idx in _resamples(ys, resamples, seed):
        counts = np.bincount(idx, minlength=len(ys))
        ma = wa(counts)
        own.append(ma["roc_auc"] if scale == 1.0 else base["roc_auc"] + (ma["roc_auc"] - centre_a["roc_auc"]) * scale)
        for name, w in weighted.items():
            mb = w(counts)
            for m in METRICS:
                d = mb[m] - ma[m]
                diffs[name][m].append(d if scale == 1.0 else figures[name][m] - base[m] + (d - centre[name][m]) * scale)
    matured_auc = Matured(champion, _interval(base["roc_auc"], own, confidence), days, len(y), confidence)
    return matured_auc, [
        Comparison(
            champion=champion,
            challenger=name,
            rows=len(y),
            days=days,
            champion_metrics=base,
            challenger_metrics=figures[name],
            difference={m: _interval(figures[name][m] - base[m], diffs[name][m], confidence) for m in METRICS},
            confidence=confidence,
        )
        for name in others
    ]


def _bootstrap_rows(n: int, seed: int) -> tuple[np.ndarray, float]:
    """(the rows the bootstrap draws from, the factor its spread is scaled by): every row and 1 up to
    ``BOOTSTRAP_ROWS``, else a seeded subsample of that many rows and sqrt(BOOTSTRAP_ROWS / n)."""
    import numpy as np

    cap = BOOTSTRAP_ROWS
    if n <= cap:
        return np.arange(n), 1.0
    return np.sort(np.random.default_rng(seed).choice(n, cap, replace=False)), float(np.sqrt(cap / n))


def _difference(challenger: dict[str, float], champion: dict[str, float]) -> dict[str, float]:
    return {m: challenger[m] - champion[m] for m in METRICS}


def _resamples(y: np.ndarray, resamples: int, seed: int) -> Iterator[np.ndarray]:
    """Seeded bootstrap index draws over customers; a draw with one outcome class (no ROC-AUC) is skipped."""
    import numpy as np

    rng = np.random.default_rng(seed)
    for _ in range(resamples):
        idx = rng.integers(0, len(y), len(y))
        if y[idx].min() != y[idx].max():
            yield idx


def _interval(estimate: float, draws: list[float], confidence: float) -> Interval:
    """The percentile interval of the draws around ``estimate``; NaN bounds (never acted on) without draws."""
    import numpy as np

    if not draws:
        return Interval(float(estimate), float("nan"), float("nan"))
    tail = (1.0 - confidence) / 2 * 100
    low, high = np.percentile(draws, [tail, 100 - tail])
    return Interval(float(estimate), float(low), float(high))


@dataclass(frozen=True)
class RolloutPolicy:
    """When the registry acts on matured outcomes by itself (the `rollout` section of the settings)."""

    min_matured_days: int = 3
    promote_margin: float = 0.01
    rollback_floor: float = 0.6
    rollback_margin: float = 0.01
    auto_promote: bool = True
    auto_rollback: bool = True


@dataclass(frozen=True)
class Verdict:
    """What to do: `rollback` (to `target`), `promote` (`target`) or `none`, and why, with the comparison it rests on."""

    action: str
    reason: str
    target: str | None = None
    evidence: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Matured:
    """The champion's own matured figures: ROC-AUC with its interval, over how many days and customers."""

    champion: str
    roc_auc: Interval
    days: int
    rows: int
    confidence: float


def matured(
    y: np.ndarray, scores: np.ndarray, *, champion: str, days: int, confidence: float = 0.95, resamples: int = 300, seed: int = 7
) -> Matured:
    """The champion's matured ROC-AUC with a bootstrap interval over customers."""
    own, _ = judge(y, scores, {}, champion=champion, days=days, budget=0.1, confidence=confidence, resamples=resamples, seed=seed)
    return own


def rollout_verdict(
    champion: Matured,
    comparisons: Sequence[Comparison],
    previous_champion: str | None,
    blocked: set[str],
    promotable: set[str],
    policy: RolloutPolicy,
) -> Verdict:
    """Rollback first, then promotion, each only with confidence and never to a version rolled back before.

    Rollback (to the previous champion): the champion's matured ROC-AUC is
    confidently below the floor (the interval's upper end under it), or the
    previous champion, scored in shadow on the same customers, beats it by more
    than `rollback_margin` (the difference's lower end above it). Promotion of
    a challenger: over at least `min_matured_days`, its ROC-AUC beats the
    champion's by more than `promote_margin` with confidence (lower end above
    it). A version once rolled back automatically is never promoted by this
    rule again (`blocked`): that needs a person.
    """
    auc = champion.roc_auc
    evidence: dict[str, Any] = {"champion": champion.champion, "roc_auc": auc.as_dict(), "days": champion.days, "rows": champion.rows}
    if policy.auto_rollback and previous_champion and previous_champion not in blocked and previous_champion != champion.champion:
        if auc.high == auc.high and auc.high < policy.rollback_floor:
            reason = (
                f"champion {champion.champion}'s matured ROC-AUC {auc.estimate:.3f} (upper {champion.confidence:.0%} bound {auc.high:.3f}) "
                f"is below the floor {policy.rollback_floor:.3f} over {champion.days} day(s), {champion.rows} customers"
            )
            return Verdict("rollback", reason, previous_champion, evidence)
        previous = next((c for c in comparisons if c.challenger == previous_champion), None)
        if previous is not None:
            gain = previous.difference["roc_auc"]
            if gain.low == gain.low and gain.low > policy.rollback_margin:
                reason = (
                    f"the previous champion {previous_champion} beats {champion.champion} on the same {previous.rows} customers by "
                    f"{gain.estimate:+.3f} ROC-AUC (lower {previous.confidence:.0%} bound {gain.low:+.3f} > {policy.rollback_margin:.3f})"
                )
                return Verdict("rollback", reason, previous_champion, previous.as_dict())
    if policy.auto_promote:
        for c in sorted(comparisons, key=lambda c: -c.difference["roc_auc"].estimate):
            gain = c.difference["roc_auc"]
            if c.challenger in blocked or c.challenger not in promotable or c.days < policy.min_matured_days:
                continue
            if gain.low == gain.low and gain.low > policy.promote_margin:
                reason = (
                    f"challenger {c.challenger} beats {c.champion} over {c.days} matured day(s) on {c.rows} customers by "
                    f"{gain.estimate:+.3f} ROC-AUC (lower {c.confidence:.0%} bound {gain.low:+.3f} > {policy.promote_margin:.3f})"
                )
                return Verdict("promote", reason, c.challenger, c.as_dict())
    reason = f"champion {champion.champion} holds: matured ROC-AUC {auc.estimate:.3f} [{auc.low:.3f}, {auc.high:.3f}] over {champion.days} day(s)"
    if comparisons:
        best = max(comparisons, key=lambda c: c.difference["roc_auc"].estimate)
        gain = best.difference["roc_auc"]
        reason += f"; best challenger {best.challenger} {gain.estimate:+.3f} [{gain.low:+.3f}, {gain.high:+.3f}] over {best.days} day(s)"
    return Verdict("none", reason, None, evidence)
