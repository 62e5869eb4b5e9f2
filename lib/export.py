"""ONNX conversion and onnxruntime scoring (framework-free)."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import numpy as np
    import polars as pl

from dataclasses import dataclass

ONNX_INPUT_NAME = "features"


@dataclass(frozen=True)
class ParityReport:
    rows: int
    max_abs_diff: float
    p999_abs_diff: float
    mean_abs_diff: float

    def as_dict(self) -> dict[str, float]:
        return {
            "rows": self.rows,
            "max_abs_diff": self.max_abs_diff,
            "p999_abs_diff": self.p999_abs_diff,
            "mean_abs_diff": self.mean_abs_diff,
        }


def lgbm_to_onnx(model_text: str, n_features: int) -> bytes:
    """Convert a LightGBM text model to an ONNX graph that outputs P(churn)."""
    import onnx
    from onnxmltools import convert_lightgbm
    from onnxmltools.convert.common.data_types import FloatTensorType

    from lib.training import load_booster

    booster = load_booster(model_text)
    # zipmap=False: probabilities come out as a plain [n, 2] tensor.
    model = convert_lightgbm(booster, initial_types=[(ONNX_INPUT_NAME, FloatTensorType([None, n_features]))], zipmap=False, target_opset=15)
    # The converter declares the label output with a fixed batch size of 1;
    # onnxruntime then warns on every batch. Declare it as a batch dimension.
    for output in model.graph.output:
        dims = output.type.tensor_type.shape.dim
        if dims:
            dims[0].ClearField("dim_value")
            dims[0].dim_param = "N"
    onnx.checker.check_model(model, full_check=True)
    return model.SerializeToString()


# Rows above which scoring splits the batch across worker threads.
SHARD_MIN_ROWS = 50_000
# Rows per onnxruntime call at most. A session's memory arena keeps the largest run's buffers for its lifetime: a
# network's activations for a 500 k-row shard held about 300 MB per session (four sessions and the explainer's
# kept a scoring run about 1.2 GB higher); 65 k-row calls cost the same time and keep the arena small.
SHARD_MAX_ROWS = 65_536


def onnx_session(onnx_bytes: bytes, threads: int = 1):
    """An onnxruntime CPU session. One intra-op thread by default: `onnx_churn_probability` parallelizes by rows instead."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    return ort.InferenceSession(onnx_bytes, sess_options=options, providers=["CPUExecutionProvider"])


def onnx_churn_probability(session, features: np.ndarray, workers: int = 2) -> np.ndarray:
    """P(churn) for each row of a float32 feature matrix.

    Large batches are cut into one shard per worker, run concurrently on the
    same session (`run` is thread-safe and releases the GIL). onnxruntime's
    own intra-op threads scale the tree ensemble poorly: at 1 M rows on 2 cores,
    2 intra-op threads took 4.2 s, two 1-thread shards 3.3 s, with identical
    output (benchmarks/bench_scoring.py).
    """
    import numpy as np

    if features.shape[0] == 0:
        return np.empty(0, dtype=np.float64)
    x = np.ascontiguousarray(features, dtype=np.float32)

    def run(part: np.ndarray) -> np.ndarray:
        return np.asarray(session.run(None, {ONNX_INPUT_NAME: part})[1][:, 1], dtype=np.float64)

    if workers <= 1 or x.shape[0] < SHARD_MIN_ROWS:
        return np.concatenate([run(x[lo : lo + SHARD_MAX_ROWS]) for lo in range(0, x.shape[0], SHARD_MAX_ROWS)])
    from concurrent.futures import ThreadPoolExecutor

    pieces = max(workers, -(-x.shape[0] // SHARD_MAX_ROWS))
    with ThreadPoolExecutor(workers) as pool:
        return np.concatenate(list(pool.map(run, np.array_split(x, pieces))))


# Plausible range of each feature: the fixed golden set spans them, so a
# parity check covers inputs beyond what one training window happened to hold.
GOLDEN_RANGES: dict[str, tuple[float, float, bool]] = {
    # name: (low, high, integer-valued)
    "recency_days": (0.0, 3_650.0, False),
    "tenure_days": (0.0, 3_650.0, False),
    "lifetime_tx": (1.0, 2_000.0, True),
    "repeat_days": (0.0, 1_000.0, True),
    "active_span_days": (0.0, 3_650.0, True),
    "lifetime_spend": (0.0, 1_000_000.0, False),
    "tx_count_7d": (0.0, 20.0, True),
    "tx_count_30d": (0.0, 60.0, True),
    "tx_count_90d": (0.0, 150.0, True),
    "spend_7d": (0.0, 5_000.0, False),
    "spend_30d": (0.0, 20_000.0, False),
    "spend_90d": (0.0, 50_000.0, False),
    "avg_basket": (1.0, 2_000.0, False),
    "max_amount": (1.0, 5_000.0, False),
    "avg_quantity": (1.0, 20.0, False),
    "spend_trend": (-8.0, 8.0, False),
    "frequency_trend": (-50.0, 50.0, False),
    "mean_gap_days": (0.0, 1_000.0, False),
    "gap_std_days": (0.0, 1_000.0, False),
    "overdue_ratio": (0.0, 500.0, False),
    "active_days_90d": (0.0, 90.0, True),
    "mobile_share": (0.0, 1.0, False),
    "store_share": (0.0, 1.0, False),
    "weekend_share": (0.0, 1.0, False),
    "n_categories": (1.0, 6.0, True),
}
GOLDEN_SEED = 20250101


def golden_features(columns: tuple[str, ...] | list[str], random_rows: int = 4_000) -> np.ndarray:
    """The fixed golden set: the same float32 rows for every model version.

    Seeded draws over each feature's plausible range (log-spaced for the
    heavy-tailed money columns), plus corner rows: everything at its minimum,
    everything at its maximum, and each feature alone at either end.
    """
    import numpy as np

    # A share of the channel vocabulary (named after the user's values) ranges like any share.
    # So does the distinct-values count of a further categorical column.
    ranges = {
        c: GOLDEN_RANGES.get(c, (0.0, 1.0, False) if c.endswith("_share") else (1.0, 10.0, True) if c.endswith("_values") else None)
        for c in columns
    }
    unknown = [c for c, r in ranges.items() if r is None]
    if unknown:
        raise KeyError(f"no golden range for feature(s) {unknown}; add them to GOLDEN_RANGES")
    rng = np.random.default_rng(GOLDEN_SEED)
    known = {c: r for c, r in ranges.items() if r is not None}
    low = np.array([known[c][0] for c in columns])
    high = np.array([known[c][1] for c in columns])
    integer = np.array([known[c][2] for c in columns])
    u = rng.random((random_rows, len(columns)))
    # Money spans orders of magnitude: spread draws evenly in log space.
    heavy = high / np.maximum(low, 1.0) > 500
    values = np.where(heavy, np.expm1(u * np.log1p(high - low)) + low, low + u * (high - low))
    mid = (low + high) / 2
    corners = [low, high]
    for j in range(len(columns)):
        for end in (low[j], high[j]):
            row = mid.copy()
            row[j] = end
            corners.append(row)
    values = np.vstack([values, np.array(corners)])
    values[:, integer] = np.round(values[:, integer])
    return values.astype(np.float32)


def threshold_probe_rows(model_text: str, base: np.ndarray) -> np.ndarray:
    """Rows that sit exactly on, just above and just below every split threshold of a LightGBM model.

    Where ONNX and LightGBM could disagree is a feature value at a threshold;
    these rows put one there for every split (the other features from `base`).
    """
    import re

    import numpy as np

    pairs: set[tuple[int, float]] = set()
    for features, thresholds in zip(
        re.findall(r"^split_feature=(.*)$", model_text, re.MULTILINE),
        re.findall(r"^threshold=(.*)$", model_text, re.MULTILINE),
        strict=True,
    ):
        for f, t in zip(features.split(), thresholds.split(), strict=True):
            pairs.add((int(f), float(t)))
    rows = []
    for f, t in sorted(pairs):
        t32 = np.float32(t)
        for value in (t32, np.nextafter(t32, np.float32(np.inf)), np.nextafter(t32, np.float32(-np.inf))):
            row = base.astype(np.float32).copy()
            row[f] = value
            rows.append(row)
    return np.array(rows, dtype=np.float32).reshape(-1, base.shape[0])


def score_frame(session, features: pl.DataFrame, columns: tuple[str, ...], version: str) -> pl.DataFrame:
    """Features in, predictions out: what batch scoring writes for each customer and day."""
    import polars as pl

    from lib.training import feature_matrix

    scores = onnx_churn_probability(session, feature_matrix(features, columns))
    return features.select("customer_id", "snapshot_date").with_columns(
        pl.Series("churn_probability", scores, dtype=pl.Float64),
        pl.lit(version).alias("model_version"),
    )


def parity(native: np.ndarray, onnx_scores: np.ndarray) -> ParityReport:
    import numpy as np

    diff = np.abs(np.asarray(native, dtype=np.float64) - np.asarray(onnx_scores, dtype=np.float64))
    if diff.size == 0:
        raise ValueError("parity needs at least one row")
    return ParityReport(int(diff.size), float(diff.max()), float(np.quantile(diff, 0.999)), float(diff.mean()))
