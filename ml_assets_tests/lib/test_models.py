"""Pure model code: the PyTorch network, device selection, the LightGBM search, holdout split, metrics, golden set."""

from __future__ import annotations

import io
import pickle
import zipfile

import numpy as np
import polars as pl
import pytest


def _synthetic(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    x = np.column_stack([rng.exponential(20, n), rng.exponential(200, n), rng.normal(size=n)]).astype(np.float32)
    logit = 0.08 * x[:, 0] - 0.004 * x[:, 1] + 0.5 * x[:, 2] - 1.0
    y = (rng.random(n) < 1 / (1 + np.exp(-logit))).astype(np.float32)
    return x, y


@pytest.fixture(scope="module")
def trained():
    from lib.torch_net import TorchTrainConfig, train_net

    x, y = _synthetic(4000, 1)
    xv, yv = _synthetic(1000, 2)
    epochs = []
    net = train_net(x, y, xv, yv, TorchTrainConfig(hidden=(16,), max_epochs=15, patience=3, device="cpu"), on_epoch=epochs.append)
    return net, epochs, (x, y, xv, yv)


def test_cuda_is_used_when_present_and_required_only_when_asked() -> None:
    from lib.torch_net import select_device

    assert select_device("auto", cuda_available=True) == "cuda"
    assert select_device("auto", cuda_available=False) == "cpu"
    assert select_device("cpu", cuda_available=True) == "cpu"
    assert select_device("cuda", cuda_available=True) == "cuda"
    with pytest.raises(RuntimeError, match="no CUDA device"):
        select_device("cuda", cuda_available=False)
    with pytest.raises(ValueError, match="auto, cpu or cuda"):
        select_device("tpu", cuda_available=True)


def test_network_learns_reports_every_epoch_and_keeps_the_best_one(trained) -> None:
    from lib.evaluation import classification_metrics
    from lib.torch_net import load_net, predict_proba

    net, epochs, (_, _, xv, yv) = trained
    assert [e.epoch for e in epochs] == list(range(1, len(epochs) + 1)) and net.history == epochs
    assert net.best_epoch == min(epochs, key=lambda e: e.valid_loss).epoch
    assert net.device == "cpu"
    scores = predict_proba(load_net(net.state, net.architecture), xv)
    assert classification_metrics(yv, scores)["roc_auc"] > 0.75


def test_normalization_is_fitted_on_training_data_and_saved_with_the_weights(trained) -> None:
    import torch

    net, _, (x, *_) = trained
    state = torch.load(io.BytesIO(net.state), weights_only=True)
    z = np.sign(x) * np.log1p(np.abs(x))
    np.testing.assert_allclose(state["center"].numpy(), z.mean(axis=0), rtol=1e-4)
    np.testing.assert_allclose(state["scale"].numpy(), z.std(axis=0, ddof=1), rtol=1e-3)


def test_same_seed_same_weights(trained) -> None:
    from lib.torch_net import TorchTrainConfig, train_net

    net, _, (x, y, xv, yv) = trained
    again = train_net(x, y, xv, yv, TorchTrainConfig(hidden=(16,), max_epochs=15, patience=3, device="cpu"))
    assert again.state == net.state


def test_weights_are_tensors_only_and_code_in_them_is_refused(trained) -> None:
    from lib.torch_net import load_net

    net, _, _ = trained
    assert zipfile.is_zipfile(io.BytesIO(net.state))

    class Exploit:
        def __reduce__(self):
            return (print, ("pwned",))

    import torch

    buf = io.BytesIO()
    torch.save({"body.0.weight": Exploit()}, buf)
    with pytest.raises(pickle.UnpicklingError):
        load_net(buf.getvalue(), net.architecture)


def test_onnx_export_matches_the_network_at_any_batch_size(trained) -> None:
    from lib.export import onnx_churn_probability, onnx_session, parity
    from lib.torch_net import load_net, net_to_onnx, predict_proba

    net, _, (_, _, xv, _) = trained
    model = load_net(net.state, net.architecture)
    session = onnx_session(net_to_onnx(model, xv.shape[1]))
    for rows in (1, 7, len(xv)):
        report = parity(predict_proba(model, xv[:rows]), onnx_churn_probability(session, xv[:rows]))
        assert report.max_abs_diff < 1e-6, rows


def test_scoring_in_bounded_calls_gives_each_row_its_own_score(trained, monkeypatch) -> None:
    """Rows go to onnxruntime in calls of at most SHARD_MAX_ROWS (a session's arena keeps its largest call's buffers):
    one worker or two, the scores are those of one call over every row, in the rows' order."""
    import numpy as np

    from lib import export
    from lib.torch_net import load_net, net_to_onnx

    net, _, (_, _, xv, _) = trained
    session = export.onnx_session(net_to_onnx(load_net(net.state, net.architecture), xv.shape[1]))
    rows = np.tile(xv, (-(-600 // len(xv)), 1))[:600]
    whole = np.asarray(session.run(None, {export.ONNX_INPUT_NAME: np.ascontiguousarray(rows, dtype=np.float32)})[1][:, 1], dtype=np.float64)
    calls: list[int] = []
    run = session.run
    monkeypatch.setattr(session, "run", lambda out, feed: calls.append(len(feed[export.ONNX_INPUT_NAME])) or run(out, feed), raising=False)
    monkeypatch.setattr(export, "SHARD_MAX_ROWS", 64)
    monkeypatch.setattr(export, "SHARD_MIN_ROWS", 100)
    for workers in (1, 2):
        calls.clear()
        np.testing.assert_array_equal(export.onnx_churn_probability(session, rows, workers=workers), whole)
        assert max(calls) <= 64 and sum(calls) == 600, (workers, calls)


def test_holdout_split_is_by_customer_and_stable() -> None:
    from lib.training import split_holdout

    frame = pl.DataFrame({"customer_id": [f"C{i:08d}" for i in range(2000)] * 3})
    side = split_holdout(frame, 0.5)
    again = split_holdout(frame.reverse(), 0.5).reverse()
    assert side.to_list() == again.to_list()
    by_customer = frame.with_columns(side).group_by("customer_id").agg(pl.col("_side").n_unique())
    assert (by_customer["_side"] == 1).all()
    assert 0.45 < (side == "test").mean() < 0.55
    assert (split_holdout(frame, 0.0) == "valid").all() and (split_holdout(frame, 1.0) == "test").all()


def test_search_is_bounded_and_keeps_the_lowest_validation_loss() -> None:
    from lib.features import FEATURE_COLUMNS
    from lib.training import search_grid, train_lgbm

    assert len(search_grid([15, 31, 63], [20, 100], max_trials=4)) == 4
    rng = np.random.default_rng(0)

    def frame(n: int) -> pl.DataFrame:
        data = {c: rng.normal(size=n) for c in FEATURE_COLUMNS}
        y = (data["recency_days"] + 0.5 * data["spend_30d"] + rng.normal(size=n) > 0).astype(int)
        return pl.DataFrame({**data, "churned": y})

    grid = search_grid([4, 31], [5, 200], max_trials=4)
    model = train_lgbm(frame(3000), frame(1000), {"learning_rate": 0.1}, 200, 10, grid)
    assert len(model.trials) == 4
    best = min(model.trials, key=lambda t: t["valid_log_loss"])
    assert (model.params["num_leaves"], model.params["min_data_in_leaf"]) == (best["num_leaves"], best["min_data_in_leaf"])
    assert model.best_iteration == best["best_iteration"]


def test_metrics_on_known_scores() -> None:
    from lib.evaluation import calibration_bins, classification_metrics

    y = np.array([0, 0, 1, 1])
    perfect = classification_metrics(y, np.array([0.0, 0.0, 1.0, 1.0]))
    assert perfect["roc_auc"] == 1.0 and perfect["brier"] == 0.0 and perfect["ece"] == 0.0
    coin = classification_metrics(y, np.full(4, 0.5))
    assert coin["roc_auc"] == 0.5 and coin["brier"] == 0.25 and coin["ece"] == 0.0
    overconfident = classification_metrics(y, np.array([0.0, 0.9, 0.9, 0.9]))
    # One bin holds the three 0.9 scores, of which two churned: |0.9 - 2/3| weighted by 3/4.
    assert overconfident["ece"] == pytest.approx(0.75 * (0.9 - 2 / 3))
    assert sum(b["rows"] for b in calibration_bins(y, np.array([0.05, 0.15, 0.95, 1.0]))) == 4
    with pytest.raises(ValueError, match="single class"):
        classification_metrics(np.zeros(3), np.full(3, 0.2))


def test_golden_set_is_fixed_and_spans_every_range() -> None:
    from lib.export import GOLDEN_RANGES, golden_features
    from lib.features import FEATURE_COLUMNS

    golden = golden_features(FEATURE_COLUMNS)
    assert golden.dtype == np.float32 and np.array_equal(golden, golden_features(FEATURE_COLUMNS))
    for j, column in enumerate(FEATURE_COLUMNS):
        low, high, _ = GOLDEN_RANGES[column]
        assert golden[:, j].min() == np.float32(low) and golden[:, j].max() == np.float32(high), column
    with pytest.raises(KeyError, match="GOLDEN_RANGES"):
        golden_features(("not_a_feature",))


def test_threshold_probes_sit_on_every_split() -> None:
    import lightgbm as lgb

    from lib.export import threshold_probe_rows
    from lib.training import float32_exact_thresholds

    x, y = _synthetic(2000, 3)
    text = float32_exact_thresholds(
        lgb.train({"objective": "binary", "verbosity": -1, "num_leaves": 7}, lgb.Dataset(x, y), 5).model_to_string()
    )
    rows = threshold_probe_rows(text, np.zeros(3, dtype=np.float32))
    assert len(rows) % 3 == 0 and len(rows) > 0
    booster = lgb.Booster(model_str=text)
    thresholds = booster.trees_to_dataframe().dropna(subset=["threshold"])
    for feature, t in zip(thresholds["split_feature"], thresholds["threshold"], strict=True):
        j = int(feature.removeprefix("Column_"))
        assert np.float32(t) in set(rows[:, j].tolist())


def test_onnx_decides_like_lightgbm_inside_its_zero_band() -> None:
    """LightGBM reads |x| <= 1e-35 as 0; the exported thresholds must make a raw comparison agree (found by the probes on a real retrain)."""
    import lightgbm as lgb

    from lib.export import lgbm_to_onnx, onnx_churn_probability, onnx_session, threshold_probe_rows
    from lib.training import LGBM_ZERO_THRESHOLD, float32_exact_thresholds

    rng = np.random.default_rng(0)
    x = rng.choice([-2.0, -1.0, 0.0, 0.0, 1.0, 2.0], size=(3000, 1)).astype(np.float32)
    y = ((x[:, 0] < 0) ^ (rng.random(3000) < 0.1)).astype(int)
    raw = lgb.train({"objective": "binary", "verbosity": -1, "min_data_in_leaf": 5}, lgb.Dataset(x, y), 3).model_to_string()
    assert "-1.0000000180025095e-35" in raw  # LightGBM split zero from the negatives at the band's edge
    text = float32_exact_thresholds(raw)
    band = np.array(
        [[-LGBM_ZERO_THRESHOLD], [-5e-36], [0.0], [5e-36], [LGBM_ZERO_THRESHOLD], [-1.0000001e-35], [1.0000001e-35]], dtype=np.float32
    )
    probes = np.vstack([band, threshold_probe_rows(text, np.zeros(1, dtype=np.float32))])
    native_before, native_after = lgb.Booster(model_str=raw).predict(probes), lgb.Booster(model_str=text).predict(probes)
    assert np.array_equal(native_before, native_after)
    onnx = onnx_churn_probability(onnx_session(lgbm_to_onnx(text, 1)), probes)
    assert np.abs(onnx - native_after).max() < 1e-6


def test_evaluate_names_the_split_and_refuses_under_the_floor() -> None:
    import numpy as np

    from lib.evaluation import evaluate

    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 400)
    informative = np.clip(y * 0.6 + rng.random(400) * 0.4, 0, 1)
    good = evaluate(y, informative, "model", split="backtest", figures=False)
    assert set(good.named()) >= {"backtest_roc_auc", "backtest_pr_auc", "backtest_rows"} and good.rows == 400
    assert good.figures == {} and good.refusal(0.7) is None
    noise = evaluate(y, rng.random(400), "model", split="test")
    assert set(noise.figures) == {"roc_pr_curves", "calibration_curve"}
    assert "test ROC-AUC" in noise.refusal(0.7) and "below the floor 0.7" in noise.refusal(0.7)
