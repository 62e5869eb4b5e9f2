"""A learned model stacked with BG/NBD: a logistic combination of their two logits (framework-free).

Why: out of time, a logistic stack of LightGBM's logit and BG/NBD's logit
P(no purchase in the horizon), fitted on the validation split, lifted the
margin over BG/NBD where the learned model is weakest (a log where most
customers buy once: +0.0068 to +0.0141; the retail profile at 8,000
customers: +0.0011 to +0.0052; CDNOW: +0.0128 to +0.0134; benchmarks/RESULTS.md,
2026-12-05). Unlike a rank blend it scores one customer at a time from closed
forms, so the stack is one ONNX graph: the learned model's graph and BG/NBD's
(`lib.baselines.bgnbd_to_onnx`) side by side on the same input, and three
weights. Not wired into the training graph yet: these are the parts, with
their parity proven in `ml_assets_tests/lib/test_stacking.py`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import numpy as np

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
