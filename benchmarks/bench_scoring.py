"""Batch scoring end to end (features frame in, predictions frame out): the champion's ONNX path against native
LightGBM `predict` on the same rows and the same two threads; the PyTorch network's ONNX graph against native torch."""

from __future__ import annotations

import argparse
import time

import numpy as np

from benchmarks.common import repeat, table


def _features(rows: int):
    import polars as pl

    from lib.export import golden_features
    from lib.features import FEATURE_COLUMNS

    # Seeded rows over each feature's plausible range (the parity golden set's generator, at any size).
    x = golden_features(FEATURE_COLUMNS, random_rows=rows)[:rows]
    frame = pl.DataFrame({c: x[:, j].astype(np.float64) for j, c in enumerate(FEATURE_COLUMNS)})
    return frame.with_columns(
        pl.Series("customer_id", [f"C{i:09d}" for i in range(rows)]),
        pl.lit(np.datetime64("2025-06-30", "D")).cast(pl.Date).alias("snapshot_date"),
    )


def main(argv: list[str] | None = None) -> str:
    import lightgbm as lgb
    import polars as pl
    import torch

    from lib.export import lgbm_to_onnx, onnx_churn_probability, onnx_session, parity, score_frame
    from lib.features import FEATURE_COLUMNS
    from lib.torch_net import TorchTrainConfig, load_net, net_to_onnx, predict_proba, train_net
    from lib.training import feature_matrix, float32_exact_thresholds

    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--rows", type=int, default=1_000_000)
    args = parser.parse_args(argv)
    rows = 20_000 if args.quick else args.rows
    n = 2 if args.quick else 5
    torch.set_num_threads(2)
    cols = tuple(FEATURE_COLUMNS)

    frame = _features(rows)
    rng = np.random.default_rng(0)
    x_train = feature_matrix(_features(50_000), cols)
    y_train = (np.log1p(x_train[:, 0]) - np.log1p(x_train[:, 6]) * 0.3 + 0.2 * x_train[:, 12] + rng.normal(size=50_000) > 0).astype(int)
    # A model of the production shape: same features, a few hundred trees (the demo champion has fewer; this is the harder case).
    booster = lgb.train({"objective": "binary", "verbosity": -1, "num_threads": 2, "num_leaves": 31}, lgb.Dataset(x_train, y_train), 300)
    text = float32_exact_thresholds(booster.model_to_string())
    native_model = lgb.Booster(model_str=text)
    onnx_bytes = lgbm_to_onnx(text, len(cols))
    session = onnx_session(onnx_bytes)  # what batch scoring uses: 1 intra-op thread, rows sharded over 2 workers
    intra_op = onnx_session(onnx_bytes, threads=2)

    def native_end_to_end() -> pl.DataFrame:
        scores = native_model.predict(feature_matrix(frame, cols), num_threads=2)
        return frame.select("customer_id", "snapshot_date").with_columns(
            pl.Series("churn_probability", scores, dtype=pl.Float64), pl.lit("native").alias("model_version")
        )

    native = repeat(f"native LightGBM predict, end to end, {rows:,} rows, 2 threads", native_end_to_end, n)
    onnx = repeat(
        f"champion path: onnxruntime `score_frame`, {rows:,} rows, 2 row shards", lambda: score_frame(session, frame, cols, "v"), n
    )
    plain = repeat(
        "onnxruntime with 2 intra-op threads instead of shards (matrix only)",
        lambda: onnx_churn_probability(intra_op, feature_matrix(frame, cols), workers=1),
        n,
    )
    # Where the ONNX path's time goes.
    t0 = time.perf_counter()
    matrix = feature_matrix(frame, cols)
    t1 = time.perf_counter()
    onnx_churn_probability(session, matrix)
    t2 = time.perf_counter()
    agreement = parity(native_model.predict(matrix, num_threads=2), onnx_churn_probability(session, matrix))

    sample = feature_matrix(_features(20_000), cols)
    net = train_net(
        x_train[:20_000], y_train[:20_000], sample[:5_000], y_train[20_000:25_000], TorchTrainConfig(max_epochs=3, device="cpu")
    )
    model = load_net(net.state, net.architecture)
    torch_session = onnx_session(net_to_onnx(model, len(cols)))
    torch_native = repeat(f"native torch MLP (64-32), {rows:,} rows, 2 threads", lambda: predict_proba(model, matrix), n)
    torch_onnx = repeat(f"onnxruntime, the MLP's ONNX graph, {rows:,} rows", lambda: onnx_churn_probability(torch_session, matrix), n)
    torch_agreement = parity(predict_proba(model, matrix), onnx_churn_probability(torch_session, matrix))

    out = table("Batch scoring (time; ratio below 1 means faster than the baseline)", [native.row(), onnx.row(native), plain.row(native)])
    out += "\n" + table("PyTorch network", [torch_native.row(), torch_onnx.row(torch_native)])
    out += (
        f"\n\nLightGBM: throughput onnxruntime end to end {rows / onnx.median:,.0f} rows/s vs native {rows / native.median:,.0f} rows/s "
        f"= {native.median / onnx.median:.2f}x (target 1.5x); of one ONNX pass, feature matrix {t1 - t0:.3f}s, onnxruntime {t2 - t1:.3f}s; "
        f"max |onnx - native| {agreement.max_abs_diff:.2e} over {agreement.rows:,} rows"
        f"\nPyTorch: onnxruntime {torch_native.median / torch_onnx.median:.2f}x native torch; max |onnx - native| {torch_agreement.max_abs_diff:.2e}"
    )
    print(out)
    return out


if __name__ == "__main__":
    main()
