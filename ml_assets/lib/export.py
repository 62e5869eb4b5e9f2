"""ONNX conversion and onnxruntime scoring (framework-free)."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import numpy as np

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

    from ml_assets.lib.training import load_booster

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


def onnx_session(onnx_bytes: bytes, threads: int = 2):  # noqa: ANN201 (onnxruntime is imported lazily)
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    return ort.InferenceSession(onnx_bytes, sess_options=options, providers=["CPUExecutionProvider"])


def onnx_churn_probability(session, features: np.ndarray) -> np.ndarray:  # noqa: ANN001
    """P(churn) for each row of a float32 feature matrix."""
    import numpy as np

    if features.shape[0] == 0:
        return np.empty(0, dtype=np.float64)
    outputs = session.run(None, {ONNX_INPUT_NAME: np.ascontiguousarray(features, dtype=np.float32)})
    probabilities = outputs[1]
    return np.asarray(probabilities[:, 1], dtype=np.float64)


def parity(native: np.ndarray, onnx_scores: np.ndarray) -> ParityReport:
    import numpy as np

    diff = np.abs(np.asarray(native, dtype=np.float64) - np.asarray(onnx_scores, dtype=np.float64))
    if diff.size == 0:
        raise ValueError("parity needs at least one row")
    return ParityReport(int(diff.size), float(diff.max()), float(np.quantile(diff, 0.999)), float(diff.mean()))
