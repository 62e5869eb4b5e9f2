"""Why a customer's score is what it is: additive feature contributions in log-odds, for every model kind (framework-free).

Every model's score is P(churn) = sigmoid(raw), and every explanation here is
additive in that raw score: ``base + sum(contributions) == raw`` for each row,
so a contribution reads as "this feature moved the log-odds of churn by so
much". How the contributions are found depends on what the model is:

- **LightGBM**: TreeSHAP, LightGBM's own ``predict(pred_contrib=True)``
  (Lundberg et al. 2020): exact Shapley values of the tree ensemble; the base
  is the ensemble's expected raw score over its training rows.
- **BG/NBD**: exact baseline Shapley values (Sundararajan and Najmi 2020) over
  its three inputs (repeat purchase days, active span, customer age), every
  order of the three enumerated; the base is the score of the reference
  customer (the median training customer, feature by feature).
- **Stacked model**: its score is ``w_m * lightgbm_raw + w_b * bgnbd_logit + c``,
  so its contributions are the weighted sums of the two above (exact too).
- **Network**: baseline Shapley estimated by antithetic permutation sampling
  (Strumbelj and Kononenko 2014; what ``shap.PermutationExplainer`` does) on the
  model's own ONNX graph: a fixed set of feature orders and their reverses, the
  same for every customer and every process, so the batch and the service give
  the same numbers. Each order's steps telescope, so ``base + sum`` equals the
  network's raw score exactly; the sampling only spreads it among features.

``top_reasons`` turns contributions into the three features that pushed the
score up most, in the analyst's words (`lib.features.feature_label`).
"""

from __future__ import annotations

import hashlib
import itertools
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import numpy as np
    import polars as pl

# How many reasons each score carries.
REASONS = 3
# The network's sampled feature orders: this many random orders plus their reverses, from this seed.
NETWORK_ORDERS = 8
ORDER_SEED = 20261205
# Rows explained at once by the sampling explainer (its progress unit): an order's changed steps of this many rows go
# through the model in one call, at most (features x rows x features) float32, 40 MB; smaller calls cost more per row.
CHUNK_ROWS = 16_384
# |base + sum(contributions) - raw| allowed, in log-odds: what float32 feature values and float64 sums leave.
ADDITIVITY_TOLERANCE = 1e-6

KINDS = ("lightgbm", "bgnbd", "stack", "torch")


class ExplainDigestError(RuntimeError):
    """An artifact's bytes do not hash to the sha256 the registry holds for them."""


@dataclass(frozen=True)
class ExplainSpec:
    """Everything an explanation needs, as plain data: verified bytes and the reference row (it travels to Spark executors).

    ``artifact`` is the model's native artifact (LightGBM text, BG/NBD parameters, the stack document) or, for the
    network, its ONNX graph; ``reference`` is the median training customer, in ``features`` order.
    """

    kind: str
    version: str
    features: tuple[str, ...]
    artifact: bytes = field(repr=False)
    sha256: str
    reference: tuple[float, ...]
    horizon_days: int | None = None


@dataclass(frozen=True)
class Explanation:
    contributions: np.ndarray  # (rows, features), log-odds
    base: np.ndarray  # (rows,)

    @property
    def raw(self) -> np.ndarray:
        """The raw score the contributions add up to: log-odds of P(churn)."""
        return self.base + self.contributions.sum(axis=1)


def reference_row(sample: pl.DataFrame, features: tuple[str, ...]) -> tuple[float, ...]:
    """The reference customer: each feature's median over the model's training reference sample (0 for an empty one)."""

    def median(f: str) -> float:
        value = sample[f].cast(float).median() if sample.height and f in sample.columns else None
        return float(value) if isinstance(value, int | float) else 0.0

    return tuple(median(f) for f in features)


# Loaded models, one per artifact digest and process (a Spark executor's Python worker keeps its own).
_LOADED: dict[str, Any] = {}


def prepare(spec: ExplainSpec) -> None:
    """Check the digest and load the model now (the service does it before it answers a request)."""
    _loaded(spec)


def _loaded(spec: ExplainSpec) -> Any:
    if spec.sha256 not in _LOADED:
        digest = hashlib.sha256(spec.artifact).hexdigest()
        if digest != spec.sha256:
            raise ExplainDigestError(f"model {spec.version}: the explanation's artifact hashes to {digest}, not {spec.sha256}")
        _LOADED[spec.sha256] = _load(spec)
    return _LOADED[spec.sha256]


def _load(spec: ExplainSpec) -> Any:
    if spec.kind == "lightgbm":
        from lib.training import load_booster

        return load_booster(spec.artifact.decode())
    if spec.kind == "bgnbd":
        from lib.baselines import bgnbd_from_dict

        return bgnbd_from_dict(json.loads(spec.artifact))
    if spec.kind == "stack":
        from lib.stacking import unpack
        from lib.training import load_booster

        art = unpack(spec.artifact)
        return art, load_booster(art.model_text)
    if spec.kind == "torch":
        from lib.export import onnx_session

        return onnx_session(spec.artifact)
    raise ValueError(f"no explanation for model kind {spec.kind!r}; explained kinds: {', '.join(KINDS)}")


def explain(spec: ExplainSpec, x: np.ndarray, progress: Callable[[int], None] | None = None) -> Explanation:
    """Contributions and base for each row of a float32 model-input matrix (``spec.features`` order).

    ``progress(rows)`` is called as the sampling explainer (the network's) gets through chunks of rows: at scale it is
    the slow one (about 16 s per 200,000 rows on 2 cores), and a long run must say how far it is.
    """
    import numpy as np

    m = np.ascontiguousarray(x, dtype=np.float32).reshape(-1, len(spec.features))
    model = _loaded(spec)
    if spec.kind == "lightgbm":
        return tree_shap(model, m)
    ref = np.asarray(spec.reference, dtype=np.float32)
    if spec.kind == "bgnbd":
        return bgnbd_shapley(model, spec.features, _horizon(spec), m, ref)
    if spec.kind == "stack":
        art, booster = model
        tree, bg = tree_shap(booster, m), bgnbd_shapley(art.bgnbd, art.features, float(art.horizon_days), m, ref)
        w = art.stack
        return Explanation(
            w.model_weight * tree.contributions + w.bgnbd_weight * bg.contributions,
            w.model_weight * tree.base + w.bgnbd_weight * bg.base + w.intercept,
        )
    return path_shapley(_onnx_logit(model), m, ref, range(m.shape[1]), sampled_orders(m.shape[1]), progress)


def raw_score(spec: ExplainSpec, x: np.ndarray) -> np.ndarray:
    """The model's own raw score (log-odds) for each row, computed without the explainer: what ``explain`` must add up to."""
    import numpy as np

    from lib.stacking import bgnbd_logit

    m = np.ascontiguousarray(x, dtype=np.float32).reshape(-1, len(spec.features))
    model = _loaded(spec)
    if spec.kind == "lightgbm":
        return np.asarray(model.predict(m, raw_score=True), dtype=np.float64)
    if spec.kind == "bgnbd":
        return bgnbd_logit(model, spec.features, _horizon(spec), m)
    if spec.kind == "stack":
        art, booster = model
        w = art.stack
        lgbm = np.asarray(booster.predict(m, raw_score=True), dtype=np.float64)
        return w.model_weight * lgbm + w.bgnbd_weight * bgnbd_logit(art.bgnbd, art.features, art.horizon_days, m) + w.intercept
    return _onnx_logit(model)(m)


def _horizon(spec: ExplainSpec) -> float:
    if not spec.horizon_days:
        raise ValueError(f"model {spec.version}: a BG/NBD explanation needs the label horizon its registry version records")
    return float(spec.horizon_days)


def _onnx_logit(session: Any) -> Callable[[np.ndarray], np.ndarray]:
    from lib.export import onnx_churn_probability
    from lib.stacking import logit

    return lambda m: logit(onnx_churn_probability(session, m))


def tree_shap(booster: Any, m: np.ndarray) -> Explanation:
    """LightGBM's exact TreeSHAP: one column per feature, the last the expected raw score."""
    import numpy as np

    out = np.asarray(booster.predict(m, pred_contrib=True), dtype=np.float64)
    return Explanation(out[:, :-1], out[:, -1])


def bgnbd_shapley(model: Any, features: tuple[str, ...], horizon: float, m: np.ndarray, ref: np.ndarray) -> Explanation:
    """Exact baseline Shapley values of BG/NBD's logit over its three inputs (every order enumerated)."""
    from lib.baselines import _input_index
    from lib.stacking import bgnbd_logit

    inputs = _input_index(features)
    return path_shapley(lambda z: bgnbd_logit(model, features, horizon, z), m, ref, inputs, list(itertools.permutations(inputs)))


def sampled_orders(n_features: int, orders: int = NETWORK_ORDERS, seed: int = ORDER_SEED) -> list[tuple[int, ...]]:
    """The feature orders the sampling explainer walks: every order when there are few features, else ``orders`` random
    ones and their reverses (antithetic: each feature is early in one and late in the other). Fixed by the seed."""
    import numpy as np

    if n_features <= 4:
        return list(itertools.permutations(range(n_features)))
    rng = np.random.default_rng(seed)
    forward = [tuple(int(i) for i in rng.permutation(n_features)) for _ in range(orders)]
    return [o for order in forward for o in (order, order[::-1])]


def path_shapley(
    f: Callable[[np.ndarray], np.ndarray],
    m: np.ndarray,
    ref: np.ndarray,
    inputs: Any,
    orders: list[tuple[int, ...]],
    progress: Callable[[int], None] | None = None,
) -> Explanation:
    """Baseline Shapley values of ``f`` for the ``inputs`` columns, averaged over ``orders``.

    Along one order the row starts as the reference (on ``inputs``; the other columns keep their own values) and
    takes its own value one feature at a time; each feature is credited with the change of ``f`` at its step. The
    steps of one order add up to f(row) - f(start), so the average over orders does too, whatever the orders.
    Columns outside ``inputs`` get 0.
    """
    import numpy as np

    inputs = list(inputs)
    n, d = m.shape
    contributions = np.zeros((n, d), dtype=np.float64)
    base = np.empty(n, dtype=np.float64)
    for lo in range(0, n, CHUNK_ROWS):
        rows = m[lo : lo + CHUNK_ROWS]
        start = rows.copy()
        start[:, inputs] = ref[inputs]
        base[lo : lo + len(rows)] = f_start = np.asarray(f(start), dtype=np.float64)
        f_end = np.asarray(f(rows), dtype=np.float64)
        for order in orders:
            _walk(f, rows, ref, list(order), f_start, f_end, contributions[lo : lo + len(rows)])
        contributions[lo : lo + len(rows)] /= len(orders)
        if progress is not None:
            progress(lo + len(rows))
    return Explanation(contributions, base)


def _walk(
    f: Callable[[np.ndarray], np.ndarray],
    rows: np.ndarray,
    ref: np.ndarray,
    order: list[int],
    f_start: np.ndarray,
    f_end: np.ndarray,
    out: np.ndarray,
) -> None:
    """Add one order's steps to ``out``: f is evaluated only where a step changes the row and is not its last change.

    A step whose feature already has the reference value leaves the row as it was, so its change of f is 0 and needs
    no evaluation (most customers sit at the reference on many features: no purchase in a window, a zero share);
    after a row's last change the point is the row itself, whose f (``f_end``) is known. Each evaluated step is
    credited with the change from the step evaluated before it, so the steps still add up to f_end - f_start exactly.
    """
    import numpy as np

    k = len(order)
    steps = np.asarray(order)
    changed = rows[:, steps] != ref[steps]  # (rows, steps)
    moved = np.flatnonzero(changed.any(axis=1))
    last = k - 1 - np.argmax(changed[:, ::-1], axis=1)
    # Row-major: each row's evaluated steps in order.
    r, s = np.nonzero(changed & (np.arange(k)[None, :] < last[:, None]))
    before = f_start.copy()
    if len(r):
        # The point after step s holds the reference on the order's later features, the row's own values elsewhere.
        rank = np.full(rows.shape[1], -1, dtype=np.int64)
        rank[steps] = np.arange(k)
        values = np.asarray(f(np.where(rank[None, :] > s[:, None], ref[None, :], rows[r])), dtype=np.float64)
        first = np.ones(len(r), dtype=bool)
        first[1:] = r[1:] != r[:-1]
        previous = np.empty_like(values)
        previous[first] = f_start[r[first]]
        previous[~first] = values[:-1][~first[1:]]
        out[r, steps[s]] += values - previous
        final = np.ones(len(r), dtype=bool)
        final[:-1] = r[:-1] != r[1:]
        before[r[final]] = values[final]
    out[moved, steps[last[moved]]] += f_end[moved] - before[moved]


def ranked(contributions: np.ndarray, k: int = REASONS) -> tuple[np.ndarray, np.ndarray]:
    """The ``k`` largest contributions of each row: (feature positions, values), ranked by contribution, ties in
    feature order; a rank whose contribution is not positive is empty (position -1, value NaN): nothing else pushed
    that customer's score up."""
    import numpy as np

    c = np.asarray(contributions, dtype=np.float64)
    kk = min(k, c.shape[1])
    order = np.argsort(-c, axis=1, kind="stable")[:, :kk]
    top = np.take_along_axis(c, order, axis=1)
    positions, values = np.where(top > 0, order, -1), np.where(top > 0, top, np.nan)
    pad = k - kk
    return np.pad(positions, ((0, 0), (0, pad)), constant_values=-1), np.pad(values, ((0, 0), (0, pad)), constant_values=np.nan)


def top_reasons(contributions: np.ndarray, features: tuple[str, ...], k: int = REASONS) -> tuple[list[list[str | None]], np.ndarray]:
    """The ``k`` features that pushed each score up most: (labels per rank, contributions per rank), as ``ranked``."""
    from lib.features import feature_label

    positions, values = ranked(contributions, k)
    labels = [feature_label(f) for f in features]
    return [[labels[j] if j >= 0 else None for j in positions[:, r]] for r in range(k)], values


def first_reason_summary(contributions: np.ndarray, features: tuple[str, ...], top: int = 10) -> list[dict[str, Any]]:
    """How often each feature is a customer's first reason, with its mean contribution there: the model card's
    "reasons per customer" table (the ``top`` most frequent; customers with no positive contribution counted apart)."""
    import numpy as np

    names, values = top_reasons(contributions, features, k=1)
    n = max(len(names[0]), 1)
    rows: dict[str, list[float]] = {}
    for name, value in zip(names[0], values[:, 0], strict=True):
        rows.setdefault(name or "(nothing raised the score)", []).append(float(value) if name else 0.0)
    ranked = sorted(rows.items(), key=lambda kv: (-len(kv[1]), kv[0]))[:top]
    return [
        {"first reason": label, "share of customers": round(len(v) / n, 4), "mean contribution (log-odds)": round(float(np.mean(v)), 4)}
        for label, v in ranked
    ]


def explained_count(rows: int, share: float) -> int:
    """How many of a day's ``rows`` scores get reasons: the ``share`` with the highest scores, at least one (the count
    ``lib.business.top_k`` takes for a contact list of that share)."""
    return min(rows, max(1, int(round(rows * share)))) if rows else 0


def explained_positions(scores: np.ndarray, ids: Sequence[str], share: float) -> np.ndarray:
    """Positions of one day's rows that get reasons: the ``explained_count`` highest scores, ties broken by customer id,
    so every chunking of the day and both engines (polars, Spark) pick the same customers. Sorted ascending."""
    import numpy as np
    import polars as pl

    k = explained_count(len(scores), share)
    frame = pl.DataFrame({"score": np.asarray(scores, dtype=np.float64), "id": pl.Series(list(ids), dtype=pl.String)})
    top = frame.with_row_index("position").sort(["score", "id"], descending=[True, False], nulls_last=True).head(k)
    return np.sort(top["position"].to_numpy().astype(np.int64))


def reason_columns(k: int = REASONS) -> list[str]:
    return [f"reason_{r}" for r in range(1, k + 1)] + [f"contribution_{r}" for r in range(1, k + 1)]


def reasons_frame(spec: ExplainSpec, x: np.ndarray) -> pl.DataFrame:
    """``reason_1..3`` (the analyst's words) and ``contribution_1..3`` (log-odds) for each row."""
    names, values = top_reasons(explain(spec, x).contributions, spec.features)
    return _frame(names, values)


def served_reasons(rows: int, parts: Sequence[tuple[ExplainSpec, Any, Any]], progress: Callable[[int], None] | None = None) -> pl.DataFrame:
    """The reason columns of ``rows`` served scores: each part is (the serving model's spec, the positions it served,
    their feature matrix); positions no explained model served (rollout.reasons off) get nulls. Both engines' batch
    scoring use it, so the champion's and the canary's reasons land on their own customers alike."""
    import numpy as np

    names: list[list[str | None]] = [[None] * rows for _ in range(REASONS)]
    values = np.full((rows, REASONS), np.nan)
    for spec, positions, x in parts:
        if len(positions) == 0:
            continue
        got, contributions = top_reasons(explain(spec, x, progress).contributions, spec.features)
        for r in range(REASONS):
            for i, name in zip(positions, got[r], strict=True):
                names[r][i] = name
        values[positions] = contributions
    return _frame(names, values)


def _frame(names: list[list[str | None]], values: np.ndarray) -> pl.DataFrame:
    import polars as pl

    return pl.DataFrame(
        [pl.Series(f"reason_{r + 1}", names[r], dtype=pl.String) for r in range(REASONS)]
        + [pl.Series(f"contribution_{r + 1}", values[:, r], dtype=pl.Float64, nan_to_null=True) for r in range(REASONS)]
    )
