"""Batch scoring: the exported ONNX model in onnxruntime against native LightGBM `predict`, same rows, same threads."""

from __future__ import annotations

import argparse

import numpy as np

from benchmarks.common import repeat, table


def main(argv: list[str] | None = None) -> str:
    import lightgbm as lgb

    from ml_assets.lib.export import lgbm_to_onnx, onnx_churn_probability, onnx_session, parity
    from ml_assets.lib.features import FEATURE_COLUMNS
    from ml_assets.lib.training import float32_exact_thresholds

    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--rows", type=int, default=1_000_000)
    args = parser.parse_args(argv)
    rows = 20_000 if args.quick else args.rows
    n = 2 if args.quick else 5

    rng = np.random.default_rng(0)
    k = len(FEATURE_COLUMNS)
    # A model of the production shape: same feature count, a few hundred trees.
    x_train = rng.normal(size=(50_000, k)).astype(np.float32)
    y_train = (x_train[:, 0] + 0.5 * x_train[:, 3] - x_train[:, 7] + rng.normal(size=50_000) > 0).astype(int)
    booster = lgb.train({"objective": "binary", "verbosity": -1, "num_threads": 2, "num_leaves": 31}, lgb.Dataset(x_train, y_train), 300)
    text = float32_exact_thresholds(booster.model_to_string())
    native_model = lgb.Booster(model_str=text)
    session = onnx_session(lgbm_to_onnx(text, k), threads=2)
    x = rng.normal(size=(rows, k)).astype(np.float32)

    native = repeat(f"native LightGBM predict, {rows:,} rows, 2 threads", lambda: native_model.predict(x, num_threads=2), n)
    onnx = repeat(f"onnxruntime, {rows:,} rows, 2 threads", lambda: onnx_churn_probability(session, x), n)
    agreement = parity(native_model.predict(x, num_threads=2), onnx_churn_probability(session, x))
    out = table("Batch scoring", [native.row(), onnx.row(native)])
    out += (
        f"\n\nmax |onnx - native| over {agreement.rows:,} rows: {agreement.max_abs_diff:.2e}; rows/s onnxruntime: {rows / onnx.median:,.0f}"
    )
    print(out)
    return out


if __name__ == "__main__":
    main()
