"""Out-of-time evaluation: train before a cutoff, score the cutoff's snapshot once its labels have matured.

A fold's cutoff ``C`` is a labelled snapshot day. Its model learns only from
snapshots ``S`` whose labels were known on ``C`` (``S + horizon <= C``), so
nothing it sees happened after ``C``; it is scored on the customers of ``C``
against what they did in the ``horizon`` days after ``C``. Several cutoffs a
few weeks apart give the figure every model reports and the promotion gate
compares: the mean over cutoffs. The baselines run on the same folds.
"""

from __future__ import annotations

import datetime as dt
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, cast

import polars as pl

if TYPE_CHECKING:
    import numpy as np

# The split name every backtest figure carries.
SPLIT = "backtest"


@dataclass(frozen=True)
class Fold:
    cutoff: dt.date
    train_dates: tuple[dt.date, ...]


@dataclass(frozen=True)
class Backtest:
    """Per-cutoff figures and their mean, for one model or baseline."""

    name: str
    folds: list[dict[str, Any]] = field(default_factory=list)
    # Which of a baseline's rankings this is (BG/NBD's strongest on these folds), else empty.
    variant: str = ""
    # Per scored fold: (outcomes, scores) in the fold's row order, for paired comparisons (lib.margin); never serialized.
    scored: list[tuple[Any, Any]] = field(default_factory=list, repr=False, compare=False)

    @property
    def roc_auc(self) -> float:
        return _mean(f["roc_auc"] for f in self.folds)

    @property
    def pr_auc(self) -> float:
        return _mean(f["pr_auc"] for f in self.folds)

    def metrics(self) -> dict[str, float]:
        """Flat figures named by their split, as the registry and the UI show them."""
        return {f"{SPLIT}_roc_auc": self.roc_auc, f"{SPLIT}_pr_auc": self.pr_auc, f"{SPLIT}_cutoffs": float(len(self.folds))}


def _mean(values: Any) -> float:
    values = list(values)
    return float(sum(values) / len(values)) if values else float("nan")


def plan_backtest(labelled: list[dt.date], horizon_days: int, cutoffs: int, every_days: int) -> list[Fold]:
    """Up to ``cutoffs`` folds, the newest labelled snapshot first and then every ``every_days`` back, oldest first.

    A cutoff that is not itself a labelled snapshot takes the newest labelled one
    before it; a cutoff with no snapshot whose label had matured by then is skipped.
    """
    days = sorted(set(labelled))
    if not days:
        return []
    folds: list[Fold] = []
    target = days[-1]
    for _ in range(cutoffs):
        candidates = [d for d in days if d <= target]
        if not candidates:
            break
        cutoff = candidates[-1]
        train = tuple(d for d in days if d + dt.timedelta(days=horizon_days) <= cutoff)
        if train and all(f.cutoff != cutoff for f in folds):
            folds.append(Fold(cutoff, train))
        target = cutoff - dt.timedelta(days=every_days)
    return sorted(folds, key=lambda f: f.cutoff)


def fold_frames(
    frame: pl.DataFrame, fold: Fold, valid_share: float = 0.2, salt: str = "churn-backtest"
) -> tuple[pl.DataFrame, pl.DataFrame, pl.DataFrame]:
    """(fit, valid, scored): the fold's training snapshots split by a stable customer hash (valid steers early
    stopping), and the cutoff's snapshot."""
    train = frame.filter(pl.col("snapshot_date").is_in(list(fold.train_dates)))
    cut = int(valid_share * 2**32)
    ids = train["customer_id"].unique()
    side = pl.DataFrame(
        {"customer_id": ids, "_valid": [zlib.crc32(f"{salt}:{c}".encode()) < cut for c in ids]},
        schema={"customer_id": pl.String, "_valid": pl.Boolean},
    )
    train = train.join(side, on="customer_id", how="left")
    fit, valid = train.filter(~pl.col("_valid")).drop("_valid"), train.filter(pl.col("_valid")).drop("_valid")
    return fit, valid, frame.filter(pl.col("snapshot_date") == fold.cutoff)


Scorer = Callable[[pl.DataFrame, pl.DataFrame, pl.DataFrame], "np.ndarray"]


# Rows a fold's model is fitted on at most (a seeded sample beyond): a whole-history population of
# 50,000 customers over 26 weekly snapshots is 1.3 M rows, and the backtest fits every model three times.
MAX_FIT_ROWS = 300_000


def run_backtest(name: str, frame: pl.DataFrame, folds: list[Fold], scorer: Scorer, max_fit_rows: int = MAX_FIT_ROWS) -> Backtest:
    """Score every fold with ``scorer(fit, valid, scored) -> churn scores for scored's rows`` and measure them.

    A fold's fit rows beyond ``max_fit_rows`` are sampled (seeded); its scored rows never are.
    """
    import numpy as np
    from sklearn.metrics import average_precision_score, roc_auc_score

    rows, kept = [], []
    for fold in folds:
        fit, valid, scored = fold_frames(frame, fold)
        sampled = fit.height > max_fit_rows
        if sampled:
            fit = fit.sample(n=max_fit_rows, seed=23)
        y = scored["churned"].to_numpy()
        if scored.is_empty() or y.min() == y.max():
            continue  # ROC-AUC needs both classes; a degenerate cutoff says nothing
        # Rankings only: a baseline's score (days since the last purchase) need not be a probability.
        scores = np.asarray(scorer(fit, valid, scored), dtype=np.float64)
        kept.append((y, scores))
        rows.append(
            {
                "cutoff": fold.cutoff.isoformat(),
                "train_snapshots": len(fold.train_dates),
                "train_rows": fit.height + valid.height,
                "fit_rows_sampled": sampled,
                "scored_rows": scored.height,
                "churn_rate": round(float(y.mean()), 4),
                "roc_auc": float(roc_auc_score(y, scores)),
                "pr_auc": float(average_precision_score(y, scores)),
            }
        )
    return Backtest(name, rows, scored=kept)


def bgnbd_fits(frame: pl.DataFrame, folds: list[Fold]) -> dict[str, dict[str, float]]:
    """BG/NBD fitted at each cutoff on the cutoff's own (x, t_x, T), as plain parameters by cutoff day: fitted once for
    every ranking, the baseline's record and each candidate's margin (no label is used, so that is fair)."""
    from lib.baselines import bgnbd_inputs, fit_bgnbd

    fits = {}
    for fold in folds:
        cutoff = frame.filter(pl.col("snapshot_date") == fold.cutoff)
        if cutoff.height:
            fits[fold.cutoff.isoformat()] = fit_bgnbd(*bgnbd_inputs(cutoff)).as_dict()
    return fits


def baseline_scorers(horizon_days: int, fits: dict[str, dict[str, float]] | None = None) -> dict[str, Scorer]:
    """Recency alone, and each of BG/NBD's rankings (``bgnbd_<ranking>``) with BG/NBD as ``fits`` holds it for the
    cutoff (``bgnbd_fits``), fitted here on the cutoff's own customers for a cutoff it lacks."""
    from lib.baselines import RANKINGS, bgnbd_from_dict, bgnbd_inputs, fit_bgnbd, recency_scores

    fitted = {cutoff: bgnbd_from_dict(params) for cutoff, params in (fits or {}).items()}

    def ranking(name: str) -> Scorer:
        def score(fit: pl.DataFrame, valid: pl.DataFrame, scored: pl.DataFrame) -> np.ndarray:
            cutoff = cast(dt.date, scored["snapshot_date"].max()).isoformat()
            if cutoff not in fitted:
                fitted[cutoff] = fit_bgnbd(*bgnbd_inputs(scored))
            return RANKINGS[name](fitted[cutoff], *bgnbd_inputs(scored), float(horizon_days))

        return score

    return {"recency": lambda fit, valid, scored: recency_scores(scored), **{f"bgnbd_{n}": ranking(n) for n in RANKINGS}}


def baseline_backtests(
    frame: pl.DataFrame, folds: list[Fold], horizon_days: int, fits: dict[str, dict[str, float]] | None = None
) -> tuple[list[Backtest], dict[str, float]]:
    """Recency and BG/NBD on the folds, BG/NBD as the strongest of its rankings (named in ``variant``), and each
    ranking's mean backtest ROC-AUC: the gate compares with the strongest baseline there is, not a convenient one."""
    results = {name: run_backtest(name, frame, folds, scorer) for name, scorer in baseline_scorers(horizon_days, fits).items()}
    rankings = {name.removeprefix("bgnbd_"): r for name, r in results.items() if name.startswith("bgnbd_")}
    scored = {n: r for n, r in rankings.items() if r.folds}
    best = max(scored, key=lambda n: scored[n].roc_auc) if scored else "p_no_purchase"
    chosen = rankings[best]
    bgnbd = Backtest("bgnbd", chosen.folds, variant=best, scored=chosen.scored)
    return [results["recency"], bgnbd], {n: r.roc_auc for n, r in rankings.items()}


def bgnbd_backtest(
    frame: pl.DataFrame, folds: list[Fold], horizon_days: int, ranking: str | None, fits: dict[str, dict[str, float]]
) -> Backtest:
    """BG/NBD's backtest as the baseline judged it (its ``ranking``, its ``fits`` by cutoff), re-scored without
    refitting: what each candidate's margin is paired with. Without a ranking (a record from before rankings were
    stored) every ranking is run again to find it."""
    from lib.baselines import RANKINGS

    if ranking not in RANKINGS:
        return baseline_backtests(frame, folds, horizon_days, fits)[0][1]
    result = run_backtest("bgnbd", frame, folds, baseline_scorers(horizon_days, fits)[f"bgnbd_{ranking}"])
    return Backtest("bgnbd", result.folds, variant=ranking, scored=result.scored)


def comparison_table(results: list[Backtest]) -> pl.DataFrame:
    """One row per model or baseline and cutoff, plus its mean: what the UI shows side by side."""
    rows = []
    for r in results:
        for f in r.folds:
            rows.append({"model": r.name, "cutoff": f["cutoff"], "roc_auc": round(f["roc_auc"], 4), "pr_auc": round(f["pr_auc"], 4)})
        rows.append({"model": r.name, "cutoff": "mean", "roc_auc": round(r.roc_auc, 4), "pr_auc": round(r.pr_auc, 4)})
    return pl.DataFrame(rows, schema={"model": pl.String, "cutoff": pl.String, "roc_auc": pl.Float64, "pr_auc": pl.Float64})


def weekly_snapshots(first: dt.date, last_labelled: dt.date, count: int, min_history_days: int) -> list[dt.date]:
    """Up to ``count`` weekly snapshot days ending at ``last_labelled``, each with ``min_history_days`` of history after ``first``."""
    days = [last_labelled - dt.timedelta(days=7 * i) for i in range(count - 1, -1, -1)]
    return [d for d in days if (d - first).days >= min_history_days]


def labelled_snapshots(transactions: pl.DataFrame, days: list[dt.date], horizon_days: int, columns: tuple[str, ...]) -> pl.DataFrame:
    """Feature snapshots of ``days`` with their churn label, straight from a transaction log (benchmarks and tests;
    the pipeline's training_set does the same through the lake and Feast)."""
    from lib.features import churn_labels, snapshots_features

    horizon = dt.timedelta(days=horizon_days)
    features = snapshots_features(transactions, sorted({*days, *(d + horizon for d in days)}), columns=columns)
    by_day = {d: features.filter(pl.col("snapshot_date") == d) for d in {*days, *(d + horizon for d in days)}}
    return pl.concat([churn_labels(by_day[d], by_day[d + horizon], d) for d in days]).with_columns(
        (pl.col("snapshot_date") + pl.duration(days=horizon_days)).alias("label_date")
    )


def label_horizon(frame: pl.DataFrame) -> int:
    """The label horizon a training set was built with: the days from a snapshot to the day its label became known."""
    if frame.is_empty():
        return 0
    return int(cast(int, (frame["label_date"] - frame["snapshot_date"]).dt.total_days().max()))


def backtest_folds(frame: pl.DataFrame) -> list[Fold]:
    """The out-of-time folds a training set names (its `backtest_cutoff` rows): the same for every model and baseline on it."""
    if frame.is_empty() or "backtest_cutoff" not in frame.columns:
        return []
    horizon = dt.timedelta(days=label_horizon(frame))
    days = sorted(frame["snapshot_date"].unique().to_list())
    cutoffs = sorted(frame.filter(pl.col("backtest_cutoff"))["snapshot_date"].unique().to_list())
    folds = [Fold(c, tuple(d for d in days if d + horizon <= c)) for c in cutoffs]
    return [f for f in folds if f.train_dates]
