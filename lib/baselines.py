"""The classical baselines a churn model must beat: recency alone, and the BG/NBD model.

BG/NBD (Fader, Hardie and Lee, 2005, "Counting your customers the easy way")
describes each customer by three numbers: repeat purchase days ``x``, the time
of the last repeat purchase after the first one ``t_x`` and the time observed
since the first purchase ``T``. While alive a customer buys as a Poisson
process with rate ``lambda ~ Gamma(r, alpha)`` and after each purchase leaves
for good with probability ``p ~ Beta(a, b)``. Fitted by maximum likelihood
(the paper's equation 6) with scipy; ``test_baselines.py`` checks the fit
against the paper's estimates on its CDNOW sample.

A fitted BG/NBD ranks customers for churn in three standard ways
(``RANKINGS``): fewest expected purchases in the horizon (the paper's
equation 10, what BG/NBD is usually judged by), lowest P(alive), or highest
P(no purchase in the horizon). Which ranks best depends on the log, so the
backtest scores all three and the gate compares with the strongest
(``lib.backtest.bgnbd_backtest``). The registered BG/NBD model version scores
P(no purchase in the horizon): gone already (1 - P(alive)), or alive and no
Poisson event in ``h``, whose posterior rate is ``Gamma(r + x, alpha + T)``:
the only one of the three that is a probability.

Both baselines read the feature columns every snapshot carries
(``repeat_days``, ``active_span_days``, ``tenure_days``, ``recency_days``), so
they are fitted and scored on exactly the rows the candidates see.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

import polars as pl

if TYPE_CHECKING:
    import numpy as np

# The feature columns that carry BG/NBD's (x, t_x, T), in days.
BGNBD_INPUTS = ("repeat_days", "active_span_days", "tenure_days")


@dataclass(frozen=True)
class BgNbd:
    r: float
    alpha: float
    a: float
    b: float
    log_likelihood: float
    customers: int

    def as_dict(self) -> dict[str, float]:
        return asdict(self)


def _log_likelihood(params: np.ndarray, x: np.ndarray, t_x: np.ndarray, big_t: np.ndarray, weight: np.ndarray) -> float:
    import numpy as np
    from scipy.special import betaln, gammaln

    r, alpha, a, b = np.exp(params)
    a1 = gammaln(r + x) - gammaln(r) + r * np.log(alpha)
    a2 = betaln(a, b + x) - betaln(a, b)
    a3 = -(r + x) * np.log(alpha + big_t)
    repeat = x > 0
    # log(a / (b + x - 1)) - (r + x) log(alpha + t_x), only for customers with a repeat purchase.
    a4 = np.where(repeat, np.log(a) - np.log(np.where(repeat, b + x - 1, 1.0)) - (r + x) * np.log(alpha + t_x), -np.inf)
    return float(np.sum(weight * (a1 + a2 + np.logaddexp(a3, a4))))


def fit_bgnbd(x: np.ndarray, t_x: np.ndarray, big_t: np.ndarray) -> BgNbd:
    """Maximum-likelihood BG/NBD parameters for customers with repeat purchases ``x``, last repeat at ``t_x``, observed for ``T``.

    Customers with the same (x, t_x, T) are counted once with a weight, so a
    daily log of 100,000 customers fits in well under a second.
    """
    import numpy as np
    from scipy.optimize import minimize

    data = pl.DataFrame({"x": np.asarray(x, float), "t_x": np.asarray(t_x, float), "T": np.asarray(big_t, float)})
    if data.is_empty():
        raise ValueError("fit_bgnbd: no customers to fit")
    if data.filter((pl.col("x") < 0) | (pl.col("t_x") < 0) | (pl.col("t_x") > pl.col("T"))).height:
        raise ValueError("fit_bgnbd: need x >= 0 and 0 <= t_x <= T for every customer")
    # Sorted: polars groups in whatever order its threads finish, and a different order of the weighted sum moves
    # the optimizer's path, so the same customers would fit to parameters differing in the sixth digit.
    grouped = data.group_by("x", "t_x", "T").len().sort("x", "t_x", "T")
    gx, gt_x, g_t = (grouped[c].to_numpy() for c in ("x", "t_x", "T"))
    weight = grouped["len"].to_numpy().astype(float)
    start = np.log([1.0, max(float(np.mean(big_t)), 1e-3), 1.0, 1.0])

    def loss(p: np.ndarray) -> float:
        return -_log_likelihood(p, gx, gt_x, g_t, weight) / weight.sum()

    # A bounded quasi-Newton start, then Nelder-Mead from there: the polish moves the CDNOW fit onto the published figures.
    best = minimize(loss, start, method="L-BFGS-B", bounds=[(-12.0, 12.0)] * 4, options={"maxiter": 4_000})
    polished = minimize(loss, best.x, method="Nelder-Mead", options={"maxiter": 4_000})
    if polished.fun < best.fun:
        best = polished
    r, alpha, a, b = (float(v) for v in np.exp(best.x))
    return BgNbd(r, alpha, a, b, log_likelihood=-float(best.fun) * float(weight.sum()), customers=data.height)


def p_alive(model: BgNbd, x: np.ndarray, t_x: np.ndarray, big_t: np.ndarray) -> np.ndarray:
    """P(the customer has not left yet | x, t_x, T): 1 for customers without a repeat purchase (BG/NBD leaves only after buying)."""
    import numpy as np

    x = np.asarray(x, float)
    log_ratio = (model.r + x) * (np.log(model.alpha + np.asarray(big_t, float)) - np.log(model.alpha + np.asarray(t_x, float)))
    odds = np.where(x > 0, model.a / np.maximum(model.b + x - 1, 1e-12) * np.exp(np.minimum(log_ratio, 700.0)), 0.0)
    return 1.0 / (1.0 + odds)


def churn_probability(model: BgNbd, x: np.ndarray, t_x: np.ndarray, big_t: np.ndarray, horizon: float) -> np.ndarray:
    """P(no purchase in the next ``horizon`` time units | x, t_x, T) under the fitted model."""
    import numpy as np

    x, big_t = np.asarray(x, float), np.asarray(big_t, float)
    alive = p_alive(model, x, t_x, big_t)
    buys_if_alive = 1.0 - ((model.alpha + big_t) / (model.alpha + big_t + horizon)) ** (model.r + x)
    return 1.0 - alive * buys_if_alive


def expected_purchases(model: BgNbd, x: np.ndarray, t_x: np.ndarray, big_t: np.ndarray, horizon: float) -> np.ndarray:
    """E[purchases in the next ``horizon`` | x, t_x, T] (Fader, Hardie and Lee 2005, equation 10).

    The paper's example (CDNOW fit; x = 2, t_x = 30.43, T = 38.86 weeks, next 39 weeks) gives 1.226,
    which ``test_baselines.py`` checks, beside a simulation of the model itself.
    """
    import numpy as np
    from scipy.special import hyp2f1

    x, t_x, big_t = (np.asarray(v, float) for v in (x, t_x, big_t))
    r, alpha, a, b = model.r, model.alpha, model.a, model.b
    z = horizon / (alpha + big_t + horizon)
    shrink = np.exp((r + x) * (np.log(alpha + big_t) - np.log(alpha + big_t + horizon)))
    # a = 1 makes (a + b + x - 1) / (a - 1) blow up; the limit is finite, a hair away from it is exact enough.
    a_safe = a if abs(a - 1.0) > 1e-9 else 1.0 + 1e-9
    numerator = (a_safe + b + x - 1.0) / (a_safe - 1.0) * (1.0 - shrink * hyp2f1(r + x, b + x, a_safe + b + x - 1.0, z))
    log_ratio = (r + x) * (np.log(alpha + big_t) - np.log(alpha + t_x))
    odds = np.where(x > 0, a / np.maximum(b + x - 1.0, 1e-12) * np.exp(np.minimum(log_ratio, 700.0)), 0.0)
    return np.asarray(numerator / (1.0 + odds), dtype=np.float64)


def _rank_expected(model: BgNbd, x: np.ndarray, t_x: np.ndarray, big_t: np.ndarray, horizon: float) -> np.ndarray:
    return -expected_purchases(model, x, t_x, big_t, horizon)


def _rank_alive(model: BgNbd, x: np.ndarray, t_x: np.ndarray, big_t: np.ndarray, horizon: float) -> np.ndarray:
    return 1.0 - p_alive(model, x, t_x, big_t)


# BG/NBD's standard churn rankings (higher = likelier to churn), by the name the backtest reports.
RANKINGS = {
    "expected_purchases": _rank_expected,
    "p_alive": _rank_alive,
    "p_no_purchase": churn_probability,
}


def bgnbd_inputs(frame: pl.DataFrame) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(x, t_x, T) in days from a feature frame: T is the customer's age in whole days since the first purchase day."""
    import numpy as np

    x = frame["repeat_days"].to_numpy().astype(float)
    t_x = frame["active_span_days"].to_numpy().astype(float)
    # tenure_days runs from the first purchase's instant; on the day grid t_x uses, T is at least t_x.
    big_t = np.maximum(np.floor(frame["tenure_days"].to_numpy().astype(float)), t_x)
    return x, t_x, big_t


def recency_scores(frame: pl.DataFrame) -> np.ndarray:
    """The recency-only baseline: the longer since the last purchase, the likelier churn."""
    return frame["recency_days"].to_numpy().astype(float)


def fit_and_score_bgnbd(
    train: pl.DataFrame, score: pl.DataFrame, horizon_days: int, ranking: str = "p_no_purchase"
) -> tuple[BgNbd, np.ndarray]:
    """Fit BG/NBD on the newest snapshot of ``train`` (each customer once, as the model assumes) and rank ``score``'s rows."""
    newest = train.filter(pl.col("snapshot_date") == train["snapshot_date"].max())
    model = fit_bgnbd(*bgnbd_inputs(newest))
    return model, RANKINGS[ranking](model, *bgnbd_inputs(score), float(horizon_days))


def bgnbd_from_dict(params: dict[str, float]) -> BgNbd:
    floats = {k: float(params[k]) for k in ("r", "alpha", "a", "b", "log_likelihood")}
    return BgNbd(**floats, customers=int(params["customers"]))


def _input_index(features: list[str] | tuple[str, ...]) -> list[int]:
    missing = [c for c in BGNBD_INPUTS if c not in features]
    if missing:
        raise KeyError(f"BG/NBD needs the feature columns {missing}; the feature list has {list(features)}")
    return [list(features).index(c) for c in BGNBD_INPUTS]


def bgnbd_matrix_scores(model: BgNbd, features: list[str] | tuple[str, ...], horizon: float, x: np.ndarray) -> np.ndarray:
    """P(churn) from a float32 model-input matrix in ``features`` order: the native scores the ONNX graph must reproduce."""
    import numpy as np

    i_x, i_tx, i_t = _input_index(features)
    m = np.asarray(x, dtype=np.float64)
    t_x = m[:, i_tx]
    return churn_probability(model, m[:, i_x], t_x, np.maximum(np.floor(m[:, i_t]), t_x), horizon)


# The BG/NBD churn score as ONNX nodes: (op, inputs, outputs, attributes); "input" is the model input, the
# constants are the graph's initializers (bgnbd_to_onnx). P(no purchase in the horizon) = 1 - P(alive) * P(buys | alive).
_BGNBD_NODES: tuple[tuple[str, tuple[str, ...], tuple[str, ...], dict[str, Any]], ...] = (
    ("Cast", ("input",), ("xd",), {"to": "DOUBLE"}),
    ("Gather", ("xd", "i_x"), ("x",), {"axis": 1}),
    ("Gather", ("xd", "i_tx"), ("t_x",), {"axis": 1}),
    ("Gather", ("xd", "i_t"), ("t_raw",), {"axis": 1}),
    ("Floor", ("t_raw",), ("t_floor",), {}),
    ("Max", ("t_floor", "t_x"), ("t",), {}),
    ("Add", ("r", "x"), ("rx",), {}),
    ("Add", ("alpha", "t"), ("alpha_t",), {}),
    ("Add", ("alpha", "t_x"), ("alpha_tx",), {}),
    ("Log", ("alpha_t",), ("log_at",), {}),
    ("Log", ("alpha_tx",), ("log_atx",), {}),
    ("Sub", ("log_at", "log_atx"), ("log_diff",), {}),
    ("Mul", ("rx", "log_diff"), ("log_ratio",), {}),
    ("Min", ("log_ratio", "cap"), ("log_ratio_c",), {}),
    ("Exp", ("log_ratio_c",), ("ratio",), {}),
    ("Add", ("b_minus_1", "x"), ("bx",), {}),
    ("Max", ("bx", "eps"), ("bx_safe",), {}),
    ("Div", ("a", "bx_safe"), ("a_over",), {}),
    ("Mul", ("a_over", "ratio"), ("odds_raw",), {}),
    ("Greater", ("x", "zero"), ("repeat",), {}),
    ("Where", ("repeat", "odds_raw", "zero"), ("odds",), {}),
    ("Add", ("one", "odds"), ("one_plus",), {}),
    ("Div", ("one", "one_plus"), ("alive",), {}),
    ("Add", ("alpha_t", "horizon"), ("alpha_th",), {}),
    ("Div", ("alpha_t", "alpha_th"), ("shrink",), {}),
    ("Pow", ("shrink", "rx"), ("no_buy_if_alive",), {}),
    ("Sub", ("one", "no_buy_if_alive"), ("buys",), {}),
    ("Mul", ("alive", "buys"), ("alive_buys",), {}),
    ("Sub", ("one", "alive_buys"), ("p",), {}),
    ("Sub", ("one", "p"), ("q",), {}),
    ("Unsqueeze", ("q", "axis1"), ("q2",), {}),
    ("Unsqueeze", ("p", "axis1"), ("p2",), {}),
    ("Concat", ("q2", "p2"), ("probs_d",), {"axis": 1}),
    ("Cast", ("probs_d",), ("probabilities",), {"to": "FLOAT"}),
    ("Greater", ("p", "half"), ("churn",), {}),
    ("Cast", ("churn",), ("label",), {"to": "INT64"}),
)


def bgnbd_to_onnx(model: BgNbd, features: list[str] | tuple[str, ...], horizon: float) -> bytes:
    """The fitted BG/NBD churn score as an ONNX graph over the whole feature vector, outputs like the other models'
    (``label``, ``probabilities`` [N, 2]), so a BG/NBD champion is scored and served like any model.

    Computed in double precision inside the graph: P(alive) raises a ratio to the
    power r + x, which float32 cannot carry for long purchase histories.
    """
    import numpy as np
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    from lib.export import ONNX_INPUT_NAME

    i_x, i_tx, i_t = _input_index(features)

    def const(name: str, value: float | int, dtype: type = np.float64) -> onnx.TensorProto:
        return numpy_helper.from_array(np.array(value, dtype=dtype), name)

    inits = [
        const("i_x", i_x, np.int64),
        const("i_tx", i_tx, np.int64),
        const("i_t", i_t, np.int64),
        const("r", model.r),
        const("alpha", model.alpha),
        const("a", model.a),
        const("b_minus_1", model.b - 1.0),
        const("eps", 1e-12),
        const("zero", 0.0),
        const("one", 1.0),
        const("half", 0.5),
        const("cap", 700.0),
        const("horizon", float(horizon)),
        numpy_helper.from_array(np.array([1], dtype=np.int64), "axis1"),
    ]
    types = {"DOUBLE": TensorProto.DOUBLE, "FLOAT": TensorProto.FLOAT, "INT64": TensorProto.INT64}
    nodes = [
        helper.make_node(
            op, [ONNX_INPUT_NAME if i == "input" else i for i in ins], list(outs), **{k: types.get(v, v) for k, v in attrs.items()}
        )
        for op, ins, outs, attrs in _BGNBD_NODES
    ]
    graph = helper.make_graph(
        nodes,
        "bgnbd_churn",
        [helper.make_tensor_value_info(ONNX_INPUT_NAME, TensorProto.FLOAT, ["N", len(features)])],
        [
            helper.make_tensor_value_info("label", TensorProto.INT64, ["N"]),
            helper.make_tensor_value_info("probabilities", TensorProto.FLOAT, ["N", 2]),
        ],
        inits,
    )
    onnx_model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 15)], producer_name="churn-bgnbd")
    onnx_model.ir_version = 8
    onnx.checker.check_model(onnx_model, full_check=True)
    return onnx_model.SerializeToString()
