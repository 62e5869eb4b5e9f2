"""Training set assembly, LightGBM training and evaluation metrics (framework-free)."""

from __future__ import annotations

import datetime as dt
import hashlib
import re
import zlib
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import polars as pl

from lib.features import model_features

if TYPE_CHECKING:
    import lightgbm
    import numpy as np


@dataclass(frozen=True)
class SplitPlan:
    train_dates: list[dt.date]
    valid_dates: list[dt.date]
    # Snapshots between the train split and the held-out one (their labels overlap the held-out
    # snapshots): kept in the training set for the out-of-time backtest only.
    gap_dates: list[dt.date] = field(default_factory=list)


def plan_snapshots(
    available: list[dt.date],
    horizon_days: int,
    every_days: int,
    max_snapshots: int,
    valid_fraction: float,
    min_history_days: int,
) -> SplitPlan:
    """Choose labelled snapshot days and split them by time.

    A snapshot day ``S`` is usable when the feature partition ``S + horizon``
    exists (its label has matured) and ``S`` has at least ``min_history_days`` of
    partitions before it.  The newest snapshots form the validation split; train
    snapshots stop ``horizon`` days before it so no train label window overlaps
    a validation snapshot's features.
    """
    have = set(available)
    if not have:
        return SplitPlan([], [])
    first = min(have)
    usable = sorted(d for d in have if (d + dt.timedelta(days=horizon_days)) in have and (d - first).days >= min_history_days)
    # Anchor the weekly grid on the newest usable day so the freshest labels are used.
    if not usable:
        return SplitPlan([], [])
    newest = usable[-1]
    picked = [d for d in usable if (newest - d).days % every_days == 0][-max_snapshots:]
    n_valid = max(1, int(round(len(picked) * valid_fraction)))
    valid = picked[-n_valid:]
    gap_end = valid[0] - dt.timedelta(days=horizon_days)
    train = [d for d in picked[:-n_valid] if d <= gap_end]
    if not train:
        # A horizon longer than the picked weeks leaves them all in the gap: train on the grid days before it instead.
        grid = [d for d in usable if (newest - d).days % every_days == 0]
        train = [d for d in grid if d <= gap_end][-max(1, max_snapshots - n_valid) :]
    return SplitPlan(train, valid, [d for d in picked[:-n_valid] if d > gap_end])


@dataclass
class TrainedModel:
    model_text: str
    best_iteration: int
    params: dict[str, Any]
    trials: list[dict[str, Any]] = field(repr=False)

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.model_text.encode()).hexdigest()


# Domain knowledge the model must respect: a longer time since the last
# purchase never makes churn less likely. Enforcing it keeps scores sane for
# customers outside the training distribution (and is tested as behaviour).
MONOTONE_INCREASING = ("recency_days",)


def feature_matrix(frame: pl.DataFrame, columns: tuple[str, ...] | None = None) -> np.ndarray:
    """Model input matrix in the fixed feature order (default: every feature column the frame has), float32 as ONNX expects."""
    import numpy as np

    columns = model_features(frame) if columns is None else columns
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        raise KeyError(f"feature columns missing from frame: {missing}")
    return frame.select(columns).to_numpy().astype(np.float32, copy=False)


def split_holdout(frame: pl.DataFrame, test_share: float, salt: str = "churn-holdout") -> pl.Series:
    """Assign each customer of the holdout period to `valid` (early stopping, tuning) or `test` (reported metrics).

    By customer, with a stable hash, so one customer's snapshots stay on one
    side and the assignment is the same in every run and library version.
    """
    ids = frame["customer_id"].unique().sort()
    cut = int(test_share * 2**32)
    side = pl.DataFrame({"customer_id": ids, "_side": [("test" if zlib.crc32(f"{salt}:{c}".encode()) < cut else "valid") for c in ids]})
    return frame.select("customer_id").join(side, on="customer_id", how="left", maintain_order="left")["_side"]


def search_grid(num_leaves: list[int], min_data_in_leaf: list[int], max_trials: int) -> list[dict[str, int]]:
    """The bounded hyperparameter grid, in a fixed order, cut at max_trials."""
    grid = [{"num_leaves": nl, "min_data_in_leaf": md} for nl in num_leaves for md in min_data_in_leaf]
    return grid[:max_trials]


def train_lgbm(
    train: pl.DataFrame,
    valid: pl.DataFrame,
    params: dict[str, Any],
    num_boost_round: int,
    early_stopping_rounds: int,
    grid: list[dict[str, Any]] | None = None,
) -> TrainedModel:
    """Train one model per grid point with early stopping on `valid`; keep the one with the lowest validation log loss."""
    import lightgbm as lgb

    x_train, y_train = feature_matrix(train), train["churned"].to_numpy()
    x_valid, y_valid = feature_matrix(valid), valid["churned"].to_numpy()
    base = {
        "objective": "binary",
        "metric": "binary_logloss",
        "verbosity": -1,
        "deterministic": True,
        "seed": 17,
        "num_threads": 2,
        "monotone_constraints": [1 if c in MONOTONE_INCREASING else 0 for c in model_features(train)],
        **params,
    }
    dtrain = lgb.Dataset(x_train, y_train, feature_name=list(model_features(train)), free_raw_data=False)
    dvalid = lgb.Dataset(x_valid, y_valid, reference=dtrain)
    best: tuple[float, lightgbm.Booster, dict[str, Any]] | None = None
    trials = []
    for point in grid or [{}]:
        full = {**base, **point}
        booster = lgb.train(
            full,
            dtrain,
            num_boost_round=num_boost_round,
            valid_sets=[dvalid],
            callbacks=[lgb.early_stopping(early_stopping_rounds, verbose=False)],
        )
        loss = float(booster.best_score["valid_0"]["binary_logloss"])
        trials.append({**point, "best_iteration": int(booster.best_iteration), "valid_log_loss": round(loss, 6)})
        if best is None or loss < best[0]:
            best = (loss, booster, full)
    if best is None:
        raise ValueError("train_lgbm: the search space is empty (max_trials must be >= 1)")
    _, booster, chosen = best
    # Save only the trees early stopping kept, so every consumer scores the same model.
    text = float32_exact_thresholds(booster.model_to_string(num_iteration=booster.best_iteration))
    return TrainedModel(model_text=text, best_iteration=int(booster.best_iteration), params=chosen, trials=trials)


_THRESHOLD_LINE = re.compile(r"^threshold=(.*)$", re.MULTILINE)
_TREE_SIZES_LINE = re.compile(r"^tree_sizes=.*\n", re.MULTILINE)


# LightGBM reads every input with |x| <= kZeroThreshold (1e-35 as a float) as
# exactly 0 before comparing it with a threshold; ONNX compares the raw value.
LGBM_ZERO_THRESHOLD = 1.0000000180025095e-35


def float32_exact_thresholds(model_text: str) -> str:
    """Rewrite split thresholds so that a plain `x <= t` on float32 inputs decides exactly as LightGBM does.

    Model inputs are float32 (that is what ONNX serving receives).  For a
    float32 ``x`` and a double threshold ``t``, ``x <= t`` holds exactly when
    ``x <= floor32(t)``, so every threshold is rounded down to float32: ONNX's
    tree ensemble stores float32 thresholds (rounding to nearest), and with
    float32-exact thresholds the conversion is lossless.

    Thresholds inside LightGBM's zero band [-1e-35, 1e-35) need more: LightGBM
    compares such inputs as 0.  A threshold in [-1e-35, 0) then sends a value
    left only when it is below the band, and one in [0, 1e-35) sends the whole
    band left; the rewritten thresholds (the float32 just below -1e-35, and
    1e-35) say exactly that for a raw comparison, so LightGBM itself decides as
    before and ONNX decides like it. (Found by the parity check's
    threshold-edge probes on a demo retrain: 5.5e-3 apart before this.)
    """
    import numpy as np

    zero = np.float32(LGBM_ZERO_THRESHOLD)
    below_band = np.nextafter(-zero, np.float32(-np.inf))

    def snap(match: re.Match[str]) -> str:
        values = np.array(match.group(1).split(), dtype=np.float64)
        down = values.astype(np.float32)
        over = down.astype(np.float64) > values
        down[over] = np.nextafter(down[over], np.float32(-np.inf))
        down[(down >= -zero) & (down < 0)] = below_band
        down[(down >= 0) & (down < zero)] = zero
        return "threshold=" + " ".join(repr(float(v)) for v in down)

    snapped = _THRESHOLD_LINE.sub(snap, model_text)
    # tree_sizes holds each tree's byte length, now changed; without it
    # LightGBM parses the trees sequentially.
    return _TREE_SIZES_LINE.sub("", snapped)


def load_booster(model_text: str) -> lightgbm.Booster:
    import lightgbm as lgb

    return lgb.Booster(model_str=model_text)
