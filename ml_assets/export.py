"""Export: the trained model as a verified ONNX artifact for serving."""

from typing import Any

import dagster as dg
import polars as pl
from pydantic import Field

from ml_assets.lib.export import lgbm_to_onnx, onnx_churn_probability, onnx_session, parity
from ml_assets.lib.training import feature_matrix, load_booster
from resources import ArtifactStore


class OnnxExportConfig(dg.Config):
    max_abs_diff: float = Field(
        default=1e-4,
        description="Largest allowed |onnxruntime - native LightGBM| probability on the validation split.",
    )


@dg.asset(group_name="export", kinds={"onnx"}, owners=["team:ml-platform"])
def lgbm_onnx(
    context: dg.AssetExecutionContext,
    config: OnnxExportConfig,
    lgbm_model: dict[str, Any],
    training_set: pl.DataFrame,
    artifacts: ArtifactStore,
) -> dict[str, Any]:
    """The LightGBM churn model converted to ONNX, the format batch scoring and serving load.

    Before it is stored, the ONNX graph passes `onnx.checker`, loads in a fresh
    onnxruntime session and is compared with the native model on every
    validation row; the largest difference is in the metadata and the export
    fails above `max_abs_diff`.
    """
    model_ref = lgbm_model["artifact"]
    model_text = artifacts.get(model_ref["uri"], model_ref["sha256"]).decode()
    features = lgbm_model["features"]
    onnx_bytes = lgbm_to_onnx(model_text, len(features))

    valid = training_set.filter(pl.col("split") == "valid")
    matrix = feature_matrix(valid, tuple(features))
    native = load_booster(model_text).predict(matrix)
    onnx_scores = onnx_churn_probability(onnx_session(onnx_bytes), matrix)
    report = parity(native, onnx_scores)
    if report.max_abs_diff > config.max_abs_diff:
        raise dg.Failure(
            f"lgbm_onnx: ONNX output differs from native LightGBM by up to {report.max_abs_diff:.2e} "
            f"(tolerance {config.max_abs_diff:.0e}) on {report.rows} validation rows; the artifact is not stored."
        )
    ref = artifacts.put("models/onnx", onnx_bytes, ".onnx")
    context.add_output_metadata(
        {
            "model_version": lgbm_model["model_version"],
            "artifact_uri": dg.MetadataValue.path(ref.uri),
            "sha256": ref.sha256,
            "size_bytes": ref.size_bytes,
            **{f"parity_{k}": v for k, v in report.as_dict().items()},
            "parity_tolerance": config.max_abs_diff,
        }
    )
    return {
        "model_version": lgbm_model["model_version"],
        "format": "onnx",
        "artifact": ref.as_dict(),
        "source_artifact": model_ref,
        "features": features,
        "parity": report.as_dict(),
    }
