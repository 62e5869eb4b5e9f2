"""LightGBM stacked with BG/NBD: the weights, and one ONNX graph that reproduces the stack."""

from __future__ import annotations

import datetime as dt

import numpy as np
import polars as pl
import pytest

from lib.backtest import labelled_snapshots, weekly_snapshots
from lib.baselines import bgnbd_inputs, bgnbd_matrix_scores, bgnbd_to_onnx, fit_bgnbd
from lib.datagen import RetailConfig, generate_retail, retail_as_transactions
from lib.export import lgbm_to_onnx, onnx_churn_probability, onnx_session
from lib.features import feature_columns, model_features
from lib.margin import auc
from lib.stacking import Stack, fit_stack, logit, stack_probability, stack_to_onnx
from lib.training import feature_matrix, load_booster, train_lgbm

HORIZON = 90


def test_the_fitted_weights_recover_a_known_combination() -> None:
    rng = np.random.default_rng(0)
    a, b = rng.uniform(0.02, 0.98, 20_000), rng.uniform(0.02, 0.98, 20_000)
    truth = Stack(0.8, 0.5, -0.3)
    y = (rng.uniform(size=a.size) < stack_probability(truth, logit(a), logit(b))).astype(int)
    fitted = fit_stack(y, logit(a), logit(b))
    assert abs(fitted.model_weight - 0.8) < 0.05 and abs(fitted.bgnbd_weight - 0.5) < 0.05 and abs(fitted.intercept + 0.3) < 0.05
    assert np.isfinite(logit(np.array([0.0, 1.0]))).all()  # clipped, never infinite
    with pytest.raises(ValueError, match="both classes"):
        fit_stack(np.ones(5), a[:5], b[:5])


@pytest.mark.slow
def test_one_onnx_graph_reproduces_lightgbm_stacked_with_bgnbd() -> None:
    cfg = RetailConfig(start=dt.date(2024, 1, 1), end=dt.date(2025, 6, 30), customers=3_000, seed=5)
    tx = retail_as_transactions(generate_retail(cfg))
    days = weekly_snapshots(cfg.start, cfg.end - dt.timedelta(days=HORIZON), 12, 90)
    frame = labelled_snapshots(tx, days, HORIZON, feature_columns({"quantity"}))
    features = model_features(frame)
    train = frame.filter(pl.col("snapshot_date") < days[-3])
    valid = frame.filter(pl.col("snapshot_date") == days[-3])
    scored = frame.filter(pl.col("snapshot_date") == days[-1])
    model = train_lgbm(train, valid, {"learning_rate": 0.05}, 200, 20, [{"num_leaves": 15, "min_data_in_leaf": 100}])
    booster = load_booster(model.model_text)
    bgnbd = fit_bgnbd(*bgnbd_inputs(train.filter(pl.col("snapshot_date") == train["snapshot_date"].max())))

    def parts(rows: pl.DataFrame) -> tuple[np.ndarray, np.ndarray]:
        x = feature_matrix(rows, features)
        return booster.predict(x, raw_score=True), logit(bgnbd_matrix_scores(bgnbd, features, float(HORIZON), x))

    stack = fit_stack(valid["churned"].to_numpy(), *parts(valid))
    # Weights of either sign are legitimate (one logit can correct the other's calibration); they must be finite.
    assert all(np.isfinite(v) for v in stack.as_dict().values()) and stack.model_weight > 0
    graph = stack_to_onnx(lgbm_to_onnx(model.model_text, len(features)), bgnbd_to_onnx(bgnbd, features, float(HORIZON)), stack)
    x = feature_matrix(scored, features)
    native = stack_probability(stack, *parts(scored))
    served = onnx_churn_probability(onnx_session(graph), x)
    # Within the LightGBM parity tolerance, though the stack leans on the trees' raw scores (float32 sums of leaves).
    assert np.max(np.abs(served - native)) < 1e-6
    y = scored["churned"].to_numpy()
    print("auc lightgbm, bgnbd, stack:", [round(auc(y, s), 4) for s in (*parts(scored), native)])
