"""Whether a calendar can give a training set, and the settings that would: decided before anything is ingested.

A training set needs labelled snapshot days: a snapshot ``S`` with
``min_history_days`` of history before it whose label has matured inside the
days training may read (``S + horizon`` on or before the last of them), on
the weekly grid `lib.training.plan_snapshots` uses, with at least one train
snapshot a whole horizon before the first held-out one. These functions run
that same plan on the calendar's days, so what they promise is what
`training_set` will find; `churn init` uses them to propose settings from the
table's span, `churn run` and `training_set` to refuse a plan that cannot work
with the smallest values that would.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Any

from lib.training import plan_snapshots

# What a proposal aims for: enough train snapshots to learn from and cutoffs to judge on.
TARGET_TRAIN_SNAPSHOTS = 6
TARGET_CUTOFFS = 3
# min_history_days values `churn init` tries, the most history first.
HISTORY_STEPS = (180, 150, 120, 90, 75, 60, 45, 30, 21, 14, 7, 0)


@dataclass(frozen=True)
class Plan:
    """The settings that shape the training set (the `training_set` run config's names)."""

    horizon_days: int
    min_history_days: int
    snapshot_every_days: int = 7
    max_snapshots: int = 26
    valid_fraction: float = 0.25
    backtest_cutoffs: int = 3
    backtest_every_days: int = 28


@dataclass(frozen=True)
class Outcome:
    train: int
    held_out: int
    cutoffs: int

    @property
    def feasible(self) -> bool:
        return self.train >= 1 and self.held_out >= 1


def plan_of(settings: Any) -> Plan:
    """The plan a `Settings` object describes (the training_set config's other values are its defaults)."""
    return Plan(
        horizon_days=settings.label_horizon_days,
        min_history_days=settings.min_history_days,
        backtest_cutoffs=settings.backtest_cutoffs,
        backtest_every_days=settings.backtest_every_days,
    )


def days_between(first: dt.date, last: dt.date) -> list[dt.date]:
    return [first + dt.timedelta(days=i) for i in range((last - first).days + 1)] if last >= first else []


def outcome(first: dt.date, last: dt.date, plan: Plan) -> Outcome:
    """What `training_set` would get from features materialized for every day of [first, last]."""
    from lib.backtest import plan_backtest

    split = plan_snapshots(
        days_between(first, last),
        plan.horizon_days,
        plan.snapshot_every_days,
        plan.max_snapshots,
        plan.valid_fraction,
        plan.min_history_days,
    )
    labelled = [*split.train_dates, *split.gap_dates, *split.valid_dates]
    folds = plan_backtest(labelled, plan.horizon_days, plan.backtest_cutoffs, plan.backtest_every_days)
    return Outcome(len(split.train_dates), len(split.valid_dates), len(folds))


def largest_history(first: dt.date, last: dt.date, plan: Plan) -> int | None:
    """The most min_history_days (at most the plan's) that still gives a training set, or None when even 0 does not."""
    for history in range(plan.min_history_days, -1, -1):
        if outcome(first, last, _with(plan, min_history_days=history)).feasible:
            return history
    return None


def largest_horizon(first: dt.date, last: dt.date, plan: Plan) -> int | None:
    """The longest label horizon (at most the plan's) that gives a training set with min_history_days 0, or None."""
    for horizon in range(plan.horizon_days, 0, -1):
        if outcome(first, last, _with(plan, horizon_days=horizon, min_history_days=0)).feasible:
            return horizon
    return None


def days_needed(plan: Plan) -> int | None:
    """The fewest calendar days that give a training set with the plan as it is (None beyond ten years)."""
    first = dt.date(2000, 1, 1)
    for days in range(plan.horizon_days + 1, plan.horizon_days + plan.min_history_days + 3650):
        if outcome(first, first + dt.timedelta(days=days - 1), plan).feasible:
            return days
    return None


def refusal(first: dt.date, last: dt.date, plan: Plan, where: str) -> str | None:
    """Why [first, last] cannot give a training set under ``plan``, with the smallest changes that would; None when it can."""
    have = outcome(first, last, plan)
    if have.feasible:
        return None
    span = (last - first).days + 1
    fixes = []
    history = largest_history(first, last, plan)
    if history is not None:
        fixes.append(f"min_history_days {history} or less (CHURN_MIN_HISTORY_DAYS={history})")
    else:
        horizon = largest_horizon(first, last, plan)
        if horizon is not None:
            fixes.append(f"label_horizon_days {horizon} or less with min_history_days 0")
    needed = days_needed(plan)
    if needed:
        fixes.append(f"at least {needed} days of data before the scored days (have {span})")
    return (
        f"{where}: the days {first}..{last} ({span} days) cannot give a training set: with label_horizon_days "
        f"{plan.horizon_days}, min_history_days {plan.min_history_days} and a snapshot every {plan.snapshot_every_days} days "
        f"they label {have.train} train and {have.held_out} held-out snapshots (a snapshot needs min_history_days before it "
        f"and its horizon inside these days; training needs one of each). Smallest change that works: {'; or '.join(fixes) or 'none found'}."
    )


@dataclass(frozen=True)
class Proposal:
    plan: Plan
    outcome: Outcome
    why: str


def propose(first: dt.date, last: dt.date, horizon_days: int, score_days: int, base: Plan | None = None) -> Proposal | None:
    """Settings for a log spanning [first, last] whose last ``score_days`` are scored (training reads the days before):
    the most history (of `HISTORY_STEPS`) that still leaves `TARGET_TRAIN_SNAPSHOTS` train snapshots, else the most that
    gives any; backtest cutoffs spaced to fit. None when no history gives a training set (the horizon is too long)."""
    base = base or Plan(horizon_days=horizon_days, min_history_days=180)
    train_last = last - dt.timedelta(days=score_days)
    tried = [_with(base, horizon_days=horizon_days, min_history_days=h) for h in HISTORY_STEPS if h <= max(base.min_history_days, 0)]
    tried = tried or [_with(base, horizon_days=horizon_days, min_history_days=0)]
    feasible = [(p, outcome(first, train_last, p)) for p in tried]
    feasible = [(p, o) for p, o in feasible if o.feasible]
    if not feasible:
        return None
    good = [(p, o) for p, o in feasible if o.train >= TARGET_TRAIN_SNAPSHOTS]
    plan, got = good[0] if good else feasible[-1]
    plan, got = _fit_cutoffs(first, train_last, plan)
    why = (
        f"the days {first}..{train_last} before the {score_days} scored days give, with min_history_days {plan.min_history_days}, "
        f"{got.train} train and {got.held_out} held-out snapshots and {got.cutoffs} backtest cutoffs {plan.backtest_every_days} days apart"
    )
    if not good:
        why += f" (fewer than the {TARGET_TRAIN_SNAPSHOTS} train snapshots a model learns well from: more history would help)"
    return Proposal(plan, got, why)


def _fit_cutoffs(first: dt.date, last: dt.date, plan: Plan) -> tuple[Plan, Outcome]:
    """The widest cutoff spacing (28 days down to 7) that gives `TARGET_CUTOFFS` cutoffs, else the one giving the most."""
    best = (plan, outcome(first, last, plan))
    for every in (28, 21, 14, 7):
        candidate = _with(plan, backtest_every_days=every)
        got = outcome(first, last, candidate)
        if got.cutoffs >= TARGET_CUTOFFS:
            return candidate, got
        if got.cutoffs > best[1].cutoffs:
            best = (candidate, got)
    return best


def _with(plan: Plan, **changes: int) -> Plan:
    from dataclasses import replace

    return replace(plan, **changes)


def table_shape(first: dt.date, last: dt.date, days_with_rows: int, customers_by_month: dict[str, int]) -> list[str]:
    """What `churn init` says about a table's shape: how many days carry rows, and when customers first bought.

    A log whose customers mostly arrived in its first three months is one
    ageing cohort: its active population shrinks every day, which is worth
    knowing before reading the drift reports and the baselines' margins.
    """
    span = (last - first).days + 1
    lines = [f"days with rows: {days_with_rows:,} of {span:,} ({days_with_rows / span:.0%})"]
    total = sum(customers_by_month.values())
    if not total:
        return lines
    months = list(customers_by_month)
    shown = [f"{m} {customers_by_month[m] / total:.0%}" for m in months[:12]]
    if len(months) > 12:
        shown.append(f"later {sum(customers_by_month[m] for m in months[12:]) / total:.0%}")
    shares = ", ".join(shown)
    lines.append(f"customers by month of first purchase ({total:,}): {shares}")
    # The calendar months the span's first 90 days touch (a month with no new customer still counts).
    third = (first + dt.timedelta(days=89)).isoformat()[:7]
    early = sum(n for m, n in customers_by_month.items() if m <= third) / total
    if span > 183 and early >= 0.8:
        lines.append(
            f"one acquisition cohort: {early:.0%} of customers first bought in the first three months; "
            "its active population shrinks as it ages (see docs/model-quality.md, Drift)"
        )
    return lines
