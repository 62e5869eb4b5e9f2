"""What reasons per customer cost batch scoring: ONNX scoring alone (the baseline, same run) against scoring plus
`lib.explain.reasons_frame`, for each model kind, on the same rows; and the additivity each kind achieved.

Models on seeded rows over each feature's plausible range (the parity golden set's generator): LightGBM of two
shapes (300 trees of 31 leaves, the harder case; 128 trees of 7 leaves, the end-to-end run's champion's shape),
the smaller one stacked with BG/NBD, a (64, 32) network, BG/NBD alone. TreeSHAP's cost grows with trees x leaves x
depth squared, so the tree shape decides the figure.

Then the network's sampled explainer on rows of real-looking customers (a generated retail log's snapshot, where
most customers sit at the reference on many features): the previous walk, which evaluated every step of every
order (kept here as the baseline, `_every_step`), against `lib.explain.path_shapley`, which skips the steps that
change nothing; the same rows, model and orders, in the same run.

    python -m benchmarks.bench_explain [--quick] [--rows N]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import time

import numpy as np

from benchmarks.common import machine


def _models(cols: tuple[str, ...], rows: int) -> dict[str, tuple[str, bytes, bytes]]:
    """(kind, explained artifact, ONNX graph) per model."""
    import lightgbm as lgb
    import torch

    from lib.baselines import BgNbd, bgnbd_to_onnx
    from lib.export import golden_features, lgbm_to_onnx
    from lib.stacking import Stack, pack, packed_to_onnx
    from lib.torch_net import TorchTrainConfig, load_net, net_to_onnx, train_net
    from lib.training import float32_exact_thresholds

    torch.set_num_threads(2)
    x = golden_features(cols, random_rows=min(rows, 50_000))
    rng = np.random.default_rng(0)
    y = (np.log1p(x[:, 0]) - np.log1p(x[:, 6]) * 0.3 + 0.2 * x[:, 12] + rng.normal(size=len(x)) > 0).astype(int)

    def lightgbm(leaves: int, trees: int) -> str:
        params = {"objective": "binary", "verbosity": -1, "num_threads": 2, "num_leaves": leaves}
        return float32_exact_thresholds(lgb.train(params, lgb.Dataset(x, y), trees).model_to_string())

    large, small = lightgbm(31, 300), lightgbm(7, 128)
    bgnbd = BgNbd(0.24, 4.4, 0.79, 2.4, -9_582.0, 2_357)
    packed = pack(small, bgnbd.as_dict(), Stack(0.8, 0.4, -0.2), 90, cols, {})
    net = train_net(
        x, y.astype(np.float32), x[:2_000], y[:2_000].astype(np.float32), TorchTrainConfig(max_epochs=2, patience=1, device="cpu")
    )
    graph = net_to_onnx(load_net(net.state, net.architecture), len(cols))
    return {
        "LightGBM, 300 trees x 31 leaves": ("lightgbm", large.encode(), lgbm_to_onnx(large, len(cols))),
        "LightGBM, 128 trees x 7 leaves": ("lightgbm", small.encode(), lgbm_to_onnx(small, len(cols))),
        "stack: the 128 x 7 LightGBM + BG/NBD": ("stack", packed, packed_to_onnx(packed)),
        "network (64, 32)": ("torch", graph, graph),
        "BG/NBD": ("bgnbd", json.dumps(bgnbd.as_dict()).encode(), bgnbd_to_onnx(bgnbd, cols, 90.0)),
    }


def _every_step(f, m: np.ndarray, ref: np.ndarray, orders: list[tuple[int, ...]]) -> np.ndarray:  # type: ignore[no-untyped-def]
    """The walk before 2026-12-07: the model evaluated at every step of every order, 4,096 rows at a time (the
    baseline of the comparison)."""
    n, d = m.shape
    contributions = np.zeros((n, d), dtype=np.float64)
    for lo in range(0, n, 4_096):
        rows = m[lo : lo + 4_096]
        start = np.broadcast_to(ref, rows.shape).astype(np.float32)
        f_start = np.asarray(f(start), dtype=np.float64)
        for order in orders:
            steps = np.empty((len(order), *rows.shape), dtype=np.float32)
            z = start.copy()
            for k, j in enumerate(order):
                z[:, j] = rows[:, j]
                steps[k] = z
            values = np.asarray(f(steps.reshape(-1, d)), dtype=np.float64).reshape(len(order), len(rows))
            previous = f_start
            for k, j in enumerate(order):
                contributions[lo : lo + len(rows), j] += values[k] - previous
                previous = values[k]
        contributions[lo : lo + len(rows)] /= len(orders)
    return contributions


def _customer_rows(cols: tuple[str, ...], rows: int) -> np.ndarray:
    """Feature rows of a generated retail log's customers (most buy once), on weekly snapshots until ``rows``."""
    import datetime as dt

    from lib.backtest import labelled_snapshots, weekly_snapshots
    from lib.datagen import RetailConfig, generate_retail, retail_as_transactions
    from lib.training import feature_matrix

    start, end = dt.date(2024, 1, 1), dt.date(2025, 6, 30)
    tx = retail_as_transactions(generate_retail(RetailConfig(start=start, end=end, customers=max(rows // 8, 1_000), seed=31)))
    frame = labelled_snapshots(tx, weekly_snapshots(start, end - dt.timedelta(days=30), 12, 180), 30, cols)
    x = feature_matrix(frame.head(rows), cols)
    return x


def network_walks(cols: tuple[str, ...], graph: bytes, rows: int) -> list[str]:
    """The previous every-step walk against the current one, on customer rows, for the network."""
    from lib.explain import _onnx_logit, path_shapley, sampled_orders
    from lib.export import onnx_session

    x = _customer_rows(cols, rows)
    ref = np.median(x, axis=0).astype(np.float32)
    logit = _onnx_logit(onnx_session(graph))
    counted = [0]

    def f(z: np.ndarray) -> np.ndarray:
        counted[0] += len(z)
        return logit(z)

    orders = sampled_orders(x.shape[1])
    f(x[:10])
    t0 = time.perf_counter()
    before = _every_step(f, x, ref, orders)
    t1 = time.perf_counter()
    every, counted[0] = counted[0], 0
    now = path_shapley(f, x, ref, range(x.shape[1]), orders)
    t2 = time.perf_counter()
    at_ref = float(np.mean(x == ref))
    diff = float(np.max(np.abs(now.contributions - before)))
    return [
        "",
        f"### The network's reasons on customer rows ({len(x):,} rows of a generated retail log, {at_ref:.0%} of values at the reference)",
        "",
        "| walk | s | rows through the model | vs baseline |",
        "|---|---|---|---|",
        f"| every step of every order (baseline, the previous walk) | {t1 - t0:.2f} | {every:,} | baseline |",
        f"| steps that change the row only (`path_shapley`) | {t2 - t1:.2f} | {counted[0]:,} | {(t1 - t0) / (t2 - t1):.2f}x faster |",
        "",
        f"Largest difference in any contribution: {diff:.1e} log-odds (the baseline's float noise on steps that change nothing).",
    ]


def main(argv: list[str] | None = None) -> str:
    from lib.explain import ExplainSpec, explain, raw_score, reasons_frame
    from lib.export import golden_features, onnx_churn_probability, onnx_session
    from lib.features import FEATURE_COLUMNS

    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--rows", type=int, default=20_000)
    args = parser.parse_args(argv)
    rows = 2_000 if args.quick else args.rows
    cols = tuple(FEATURE_COLUMNS)
    x = golden_features(cols, random_rows=rows)[:rows]
    reference = tuple(float(v) for v in np.median(x, axis=0))
    lines = [
        "",
        f"### Reasons per customer in batch scoring ({rows:,} rows, 2 cores)",
        "",
        "| model | scoring alone s (baseline) | scoring + reasons s | reasons vs scoring | reasons per 1,000 rows ms "
        "| max abs(base + sum - raw) log-odds | max abs(sigmoid(base + sum) - served P) |",
        "|---|---|---|---|---|---|---|",
    ]
    models = _models(cols, rows)
    for name, (kind, artifact, graph) in models.items():
        spec = ExplainSpec(kind, name, cols, artifact, hashlib.sha256(artifact).hexdigest(), reference, 90)
        session = onnx_session(graph)
        explain(spec, x[:10])  # load once, as a run does for its first chunk
        t0 = time.perf_counter()
        served = onnx_churn_probability(session, x)
        t1 = time.perf_counter()
        reasons_frame(spec, x)
        t2 = time.perf_counter()
        e = explain(spec, x)
        additive = float(np.max(np.abs(e.raw - raw_score(spec, x))))
        probability = float(np.max(np.abs(1 / (1 + np.exp(-e.raw)) - served)))
        score_s, reasons_s = t1 - t0, t2 - t1
        lines.append(
            f"| {name} | {score_s:.2f} | {score_s + reasons_s:.2f} | {(score_s + reasons_s) / score_s:.1f}x "
            f"| {reasons_s / rows * 1e6:.1f} | {additive:.1e} | {probability:.1e} |"
        )
    lines += network_walks(cols, models["network (64, 32)"][2], rows * 5)
    out = "\n".join(lines) + f"\n\n{machine()}"
    print(out)
    return out


if __name__ == "__main__":
    main()
