"""What reasons per customer cost batch scoring: ONNX scoring alone (the baseline, same run) against scoring plus
`lib.explain.reasons_frame`, for each model kind, on the same rows; and the additivity each kind achieved.

Models on seeded rows over each feature's plausible range (the parity golden set's generator): LightGBM of two
shapes (300 trees of 31 leaves, the harder case; 128 trees of 7 leaves, the end-to-end run's champion's shape),
the smaller one stacked with BG/NBD, a (64, 32) network, BG/NBD alone. TreeSHAP's cost grows with trees x leaves x
depth squared, so the tree shape decides the figure.

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
    for name, (kind, artifact, graph) in _models(cols, rows).items():
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
    out = "\n".join(lines) + f"\n\n{machine()}"
    print(out)
    return out


if __name__ == "__main__":
    main()
