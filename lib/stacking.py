"""A learned model stacked with BG/NBD: a logistic combination of their two logits (framework-free).

Why: out of time, a logistic stack of LightGBM's logit and BG/NBD's logit
P(no purchase in the horizon), fitted on the validation split, lifted the
margin over BG/NBD where the learned model is weakest (a log where most
customers buy once: +0.0068 to +0.0141; the retail profile at 8,000
customers: +0.0011 to +0.0052; CDNOW: +0.0128 to +0.0134; benchmarks/RESULTS.md,
2026-12-05). Unlike a rank blend it scores one customer at a time from closed
forms, so the stack is one ONNX graph: the learned model's graph and BG/NBD's
(`lib.baselines.bgnbd_to_onnx`) side by side on the same input, and three
weights.

The stacked model is a candidate like the others (`stacked_model`,
`stacked_onnx`): its artifact is one JSON document holding the LightGBM text,
BG/NBD's parameters and the weights (`pack`), so one sha256 covers all three;
its backtest refits all three parts at every cutoff (`stack_scorer`).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import numpy as np
    import polars as pl

    from lib.baselines import BgNbd

# Probabilities are clipped this far from 0 and 1 before their logit: a tree model's 0.9999999 stays finite.
EPS = 1e-7


@dataclass(frozen=True)
class Stack:
    model_weight: float
    bgnbd_weight: float
    intercept: float

    def as_dict(self) -> dict[str, float]:
        return {"model_weight": self.model_weight, "bgnbd_weight": self.bgnbd_weight, "intercept": self.intercept}


def logit(p: np.ndarray) -> np.ndarray:
    import numpy as np

    q = np.clip(np.asarray(p, dtype=np.float64), EPS, 1.0 - EPS)
    return np.log(q / (1.0 - q))


def fit_stack(y: np.ndarray, model_logit: np.ndarray, bgnbd_logit: np.ndarray) -> Stack:
    """The logistic regression of the labels on the two logits (unpenalised maximum likelihood, Newton steps).

    Fitted on rows neither model was fitted on (the validation split), so the
    weights say how much each model adds to the other, not how well either
    remembers its training rows.
    """
    import numpy as np

    x = np.column_stack([np.asarray(model_logit, np.float64), np.asarray(bgnbd_logit, np.float64), np.ones(len(y))])
    t = np.asarray(y, dtype=np.float64)
    if t.min() == t.max():
        raise ValueError("fit_stack needs both classes among the labels")
    w = np.array([1.0, 0.0, 0.0])
    for _ in range(50):
        p = 1.0 / (1.0 + np.exp(-(x @ w)))
        gradient = x.T @ (t - p)
        hessian = (x * (p * (1.0 - p))[:, None]).T @ x + 1e-9 * np.eye(3)
        step = np.linalg.solve(hessian, gradient)
        w = w + step
        if np.max(np.abs(step)) < 1e-10:
            break
    return Stack(float(w[0]), float(w[1]), float(w[2]))


# The learned part of a stack at one cutoff: (fit rows, valid rows) -> a function from a feature matrix to raw logits.
LearnedLogit = Callable[["pl.DataFrame", "pl.DataFrame"], Callable[["np.ndarray"], "np.ndarray"]]

ARTIFACT_FORMAT = "churn-stack/1"


def bgnbd_logit(model: BgNbd, features: tuple[str, ...] | list[str], horizon_days: float, x: np.ndarray) -> np.ndarray:
    """``logit`` of BG/NBD's P(no purchase in the horizon) for a float32 model-input matrix (the stack's second input)."""
    from lib.baselines import bgnbd_matrix_scores

    return logit(bgnbd_matrix_scores(model, features, float(horizon_days), x))


def fit_stack_or_alone(y: np.ndarray, model_logit: np.ndarray, bgnbd_logit_: np.ndarray) -> tuple[Stack, str]:
    """The fitted weights, or the learned model alone (weights 1, 0, 0) when the rows cannot fit them (one class
    only, or weights that do not converge to finite values), with the reason."""
    import numpy as np

    try:
        stack = fit_stack(y, model_logit, bgnbd_logit_)
    except (ValueError, np.linalg.LinAlgError) as exc:
        return Stack(1.0, 0.0, 0.0), f"weights not fitted ({exc}); the learned model alone"
    if not all(np.isfinite(v) for v in stack.as_dict().values()):
        return Stack(1.0, 0.0, 0.0), "weights did not converge; the learned model alone"
    return stack, "weights fitted on the validation split"


def stack_scorer(learned: LearnedLogit, horizon_days: int) -> Callable[[pl.DataFrame, pl.DataFrame, pl.DataFrame], np.ndarray]:
    """A backtest scorer that builds the whole stack from what the cutoff knew: the learned model on the fit rows,
    BG/NBD on the fit rows' newest snapshot (as `baseline_model` fits it on the training set's newest), the weights
    on the valid rows; then scores the cutoff's customers."""
    import polars as pl

    from lib.baselines import bgnbd_inputs, fit_bgnbd
    from lib.features import model_features

    def score(fit: pl.DataFrame, valid: pl.DataFrame, scored: pl.DataFrame) -> np.ndarray:
        bgnbd = fit_bgnbd(*bgnbd_inputs(fit.filter(pl.col("snapshot_date") == fit["snapshot_date"].max())))
        return fit_and_score(learned(fit, valid), bgnbd, model_features(fit), horizon_days, valid, scored)[2]

    return score


def fit_and_score(
    raw: Callable[[np.ndarray], np.ndarray],
    bgnbd: BgNbd,
    features: tuple[str, ...],
    horizon_days: int,
    valid: pl.DataFrame,
    scored: pl.DataFrame,
) -> tuple[Stack, str, np.ndarray]:
    """The weights fitted on ``valid``'s rows (``fit_stack_or_alone``, with its reason), then P(churn) of ``scored``'s
    rows: the learned part's raw score (``raw`` of a feature matrix) and BG/NBD's logit side by side."""
    from lib.training import feature_matrix

    def parts(rows: pl.DataFrame) -> tuple[np.ndarray, np.ndarray]:
        x = feature_matrix(rows, features)
        return raw(x), bgnbd_logit(bgnbd, features, horizon_days, x)

    stack, why = fit_stack_or_alone(valid["churned"].to_numpy(), *parts(valid))
    return stack, why, stack_probability(stack, *parts(scored))


def pack(
    model_text: str, bgnbd: dict[str, Any], stack: Stack, horizon_days: int, features: tuple[str, ...], parts: dict[str, str]
) -> bytes:
    """The stacked model's artifact: everything its native scores need, in one document under one sha256.
    ``parts`` names the registry versions the LightGBM and BG/NBD parts came from (lineage only)."""
    document = {
        "format": ARTIFACT_FORMAT,
        "features": list(features),
        "horizon_days": int(horizon_days),
        "weights": stack.as_dict(),
        "bgnbd": bgnbd,
        "lightgbm": model_text,
        "parts": parts,
    }
    return json.dumps(document, sort_keys=True).encode()


@dataclass(frozen=True)
class StackArtifact:
    model_text: str
    bgnbd: BgNbd
    stack: Stack
    horizon_days: int
    features: tuple[str, ...]


def unpack(data: bytes) -> StackArtifact:
    from lib.baselines import bgnbd_from_dict

    document = json.loads(data)
    if document.get("format") != ARTIFACT_FORMAT:
        raise ValueError(f"not a stacked model artifact (format {document.get('format')!r}, expected {ARTIFACT_FORMAT!r})")
    return StackArtifact(
        model_text=document["lightgbm"],
        bgnbd=bgnbd_from_dict(document["bgnbd"]),
        stack=Stack(**{k: float(v) for k, v in document["weights"].items()}),
        horizon_days=int(document["horizon_days"]),
        features=tuple(document["features"]),
    )


def native_stack_scores(data: bytes, x: np.ndarray) -> np.ndarray:
    """P(churn) of a packed stack from LightGBM and the BG/NBD formula in their own code: what its ONNX graph must match."""
    import numpy as np

    from lib.training import load_booster

    art = unpack(data)
    raw = np.asarray(load_booster(art.model_text).predict(x, raw_score=True), dtype=np.float64)
    return stack_probability(art.stack, raw, bgnbd_logit(art.bgnbd, art.features, art.horizon_days, x))


def packed_to_onnx(data: bytes) -> bytes:
    """The packed stack as one ONNX graph (``stack_to_onnx`` of its two parts' graphs)."""
    from lib.baselines import bgnbd_to_onnx
    from lib.export import lgbm_to_onnx

    art = unpack(data)
    return stack_to_onnx(
        lgbm_to_onnx(art.model_text, len(art.features)), bgnbd_to_onnx(art.bgnbd, art.features, float(art.horizon_days)), art.stack
    )


def stack_probability(stack: Stack, model_logit: np.ndarray, bgnbd_logit: np.ndarray) -> np.ndarray:
    """P(churn) of the stack from LightGBM's raw score (``predict(raw_score=True)``) and ``logit`` of BG/NBD's
    P(no purchase): the native scores its ONNX graph must reproduce."""
    import numpy as np

    z = (
        stack.model_weight * np.asarray(model_logit, np.float64)
        + stack.bgnbd_weight * np.asarray(bgnbd_logit, np.float64)
        + stack.intercept
    )
    return 1.0 / (1.0 + np.exp(-z))


def stack_to_onnx(lgbm_onnx: bytes, bgnbd_onnx: bytes, stack: Stack) -> bytes:
    """One graph: LightGBM's graph (``lib.export.lgbm_to_onnx``) and BG/NBD's (``bgnbd_to_onnx``) on the same input,
    their logits combined in double, outputs like every model's (``label``, ``probabilities`` [N, 2])."""
    import numpy as np
    import onnx
    from onnx import TensorProto, compose, helper, numpy_helper

    from lib.export import ONNX_INPUT_NAME

    lgbm = onnx.load_from_string(lgbm_onnx)
    # The tree ensemble's raw score, not its probability: a float32 probability of 0.99999 has lost the digits
    # its logit needs. Binary ensembles without the logistic transform give [-score, score].
    for node in lgbm.graph.node:
        if node.op_type == "TreeEnsembleClassifier":
            for attribute in node.attribute:
                if attribute.name == "post_transform":
                    attribute.s = b"NONE"
    parts = {"m_": compose.add_prefix(lgbm, "m_"), "b_": compose.add_prefix(onnx.load_from_string(bgnbd_onnx), "b_")}
    consts = {
        "s_idx": np.array(1, dtype=np.int64),
        "s_axis": np.array([1], dtype=np.int64),
        "s_lo": np.array(EPS),
        "s_hi": np.array(1.0 - EPS),
        "s_one": np.array(1.0),
        "s_half": np.array(0.5),
        "s_wm": np.array(stack.model_weight),
        "s_wb": np.array(stack.bgnbd_weight),
        "s_c": np.array(stack.intercept),
    }
    nodes = []
    # The parts' own names carry their prefix (m_, b_); the combiner's all start with s_, so no name is written twice.
    for prefix, part in parts.items():
        # Each part reads the shared input through its own (prefixed) name.
        nodes.append(helper.make_node("Identity", [ONNX_INPUT_NAME], [f"{prefix}{ONNX_INPUT_NAME}"]))
        nodes.extend(part.graph.node)
    nodes += [
        helper.make_node("Cast", ["m_probabilities"], ["s_m_scores"], to=TensorProto.DOUBLE),
        helper.make_node("Gather", ["s_m_scores", "s_idx"], ["s_m_logit"], axis=1),
        # BG/NBD's P(no purchase) in double, before its graph rounds it to float32 (the node named "p").
        helper.make_node("Clip", ["b_p", "s_lo", "s_hi"], ["s_b_pc"]),
        helper.make_node("Sub", ["s_one", "s_b_pc"], ["s_b_qc"]),
        helper.make_node("Div", ["s_b_pc", "s_b_qc"], ["s_b_odds"]),
        helper.make_node("Log", ["s_b_odds"], ["s_b_logit"]),
    ]
    nodes += [
        helper.make_node("Mul", ["s_m_logit", "s_wm"], ["s_zm"]),
        helper.make_node("Mul", ["s_b_logit", "s_wb"], ["s_zb"]),
        helper.make_node("Add", ["s_zm", "s_zb"], ["s_z0"]),
        helper.make_node("Add", ["s_z0", "s_c"], ["s_z"]),
        helper.make_node("Sigmoid", ["s_z"], ["s_p"]),
        helper.make_node("Sub", ["s_one", "s_p"], ["s_q"]),
        helper.make_node("Unsqueeze", ["s_q", "s_axis"], ["s_q2"]),
        helper.make_node("Unsqueeze", ["s_p", "s_axis"], ["s_p2"]),
        helper.make_node("Concat", ["s_q2", "s_p2"], ["s_probs"], axis=1),
        helper.make_node("Cast", ["s_probs"], ["probabilities"], to=TensorProto.FLOAT),
        helper.make_node("Greater", ["s_p", "s_half"], ["s_churn"]),
        helper.make_node("Cast", ["s_churn"], ["label"], to=TensorProto.INT64),
    ]
    n_features = parts["m_"].graph.input[0].type.tensor_type.shape.dim[1].dim_value
    graph = helper.make_graph(
        nodes,
        "stacked_churn",
        [helper.make_tensor_value_info(ONNX_INPUT_NAME, TensorProto.FLOAT, ["N", n_features])],
        [
            helper.make_tensor_value_info("label", TensorProto.INT64, ["N"]),
            helper.make_tensor_value_info("probabilities", TensorProto.FLOAT, ["N", 2]),
        ],
        [*parts["m_"].graph.initializer, *parts["b_"].graph.initializer, *(numpy_helper.from_array(v, k) for k, v in consts.items())],
    )
    opsets: dict[str, int] = {}
    for part in parts.values():
        for o in part.opset_import:
            opsets[o.domain] = max(opsets.get(o.domain, 0), o.version)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid(d, v) for d, v in opsets.items()], producer_name="churn-stack")
    model.ir_version = max(p.ir_version for p in parts.values())
    onnx.checker.check_model(model, full_check=True)
    return model.SerializeToString()
