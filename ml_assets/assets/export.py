"""Export: each trained model as a verified ONNX artifact, gated by a parity check against the native model."""

from typing import Any

import dagster as dg
import polars as pl

from lib.records import Artifact, BaselineRecord, ModelRecord
from lib.training import feature_matrix
from ml_assets.assets.candidates import native_artifact
from ml_assets.metadata import markdown_table
from resources import ArtifactStore, ExperimentTracker, ModelRegistry

# Largest |onnxruntime - native| probability a parity check accepts, per model kind.
# LightGBM: thresholds are float32-exact before export (lib/training.py), so
# decisions are identical and only float32 summation of leaf values differs
# (measured 1.5e-7 on the demo, 7.2e-7 over 1 M random rows).
# PyTorch: both run the same float32 network; kernels differ in summation
# order, measured below 1e-7 on the demo.
# BG/NBD: computed in double inside the graph, rounded to float32 at the end (measured 3e-8 on the golden set).
# Stack: LightGBM's raw score (float32 sums of leaves, as above) and BG/NBD in double, combined in double.
PARITY_TOLERANCE = {"lightgbm": 1e-6, "torch": 1e-6, "bgnbd": 1e-6, "stack": 1e-6}


def _onnx_metadata(record: ModelRecord, ref: Any, onnx_bytes: bytes) -> dict[str, Any]:
    import onnx

    model = onnx.load_from_string(onnx_bytes)
    return {
        "model_version": record.model_version,
        "artifact_uri": dg.MetadataValue.path(ref.uri),
        "sha256": ref.sha256,
        "size_bytes": ref.size_bytes,
        "opsets": dg.MetadataValue.json({o.domain or "ai.onnx": o.version for o in model.opset_import}),
        "graph_nodes": len(model.graph.node),
    }


def _store(
    context: dg.AssetExecutionContext,
    record: ModelRecord,
    onnx_bytes: bytes,
    artifacts: ArtifactStore,
    registry: ModelRegistry,
    tracker: ExperimentTracker,
) -> ModelRecord:
    from lib.export import onnx_session

    # A fresh onnxruntime session must accept the graph before anything is stored.
    onnx_session(onnx_bytes)
    ref = artifacts.put("models/onnx", onnx_bytes, ".onnx")
    registry.attach_onnx(record.model_version, ref.uri, ref.sha256, context.run.run_id)
    metadata = _onnx_metadata(record, ref, onnx_bytes)
    # The same bytes and digest the registry holds, copied to the version's MLflow run when tracking is on.
    metadata.update(tracker.log_onnx(context, record.model_version, onnx_bytes, ref.sha256))
    context.add_output_metadata(metadata)
    return ModelRecord(
        model_version=record.model_version,
        kind=record.kind,
        format="onnx",
        artifact=Artifact(**ref.as_dict()),
        source=record.artifact,
        architecture=record.architecture,
        features=record.features,
        horizon_days=record.horizon_days,
    )


@dg.asset(group_name="export", kinds={"onnx"}, owners=["team:ml-platform"])
def lgbm_onnx(
    context: dg.AssetExecutionContext,
    lgbm_model: ModelRecord,
    artifacts: ArtifactStore,
    registry: ModelRegistry,
    tracker: ExperimentTracker,
) -> ModelRecord:
    """The LightGBM churn model converted to ONNX, the format batch scoring and serving load.

    The graph passes `onnx.checker` and loads in a fresh onnxruntime session
    before it is stored (under its sha256) and attached to the model's
    registry version. Its parity check compares it with native LightGBM and
    must pass before the model can become champion.
    """
    from lib.export import lgbm_to_onnx

    model_text = native_artifact(lgbm_model, registry, artifacts).decode()
    return _store(context, lgbm_model, lgbm_to_onnx(model_text, len(lgbm_model.features)), artifacts, registry, tracker)


@dg.asset(group_name="export", kinds={"onnx", "pytorch"}, owners=["team:ml-platform"])
def torch_onnx(
    context: dg.AssetExecutionContext,
    torch_model: ModelRecord,
    artifacts: ArtifactStore,
    registry: ModelRegistry,
    tracker: ExperimentTracker,
) -> ModelRecord:
    """The PyTorch churn network exported to ONNX (torch.export), with its input normalization inside the graph.

    Same outputs as the LightGBM graph (`label`, `probabilities`), so scoring
    treats both alike. Checked by `onnx.checker` and a fresh onnxruntime
    session before it is stored and attached to the registry version; its
    parity check compares it with the native network.
    """
    from lib.torch_net import load_net, net_to_onnx

    net = load_net(native_artifact(torch_model, registry, artifacts), torch_model.architecture or {})
    return _store(context, torch_model, net_to_onnx(net, len(torch_model.features)), artifacts, registry, tracker)


@dg.asset(group_name="export", kinds={"onnx"}, owners=["team:ml-platform"])
def bgnbd_onnx(
    context: dg.AssetExecutionContext,
    baseline_model: BaselineRecord,
    artifacts: ArtifactStore,
    registry: ModelRegistry,
    tracker: ExperimentTracker,
) -> ModelRecord:
    """The fitted BG/NBD baseline as an ONNX graph over the same feature vector as the learned models.

    The champion when no learned model beats the baselines out of time.
    Checked like the others: `onnx.checker`, a fresh onnxruntime session, and
    a parity check against the model's own formula.
    """
    import json

    from lib.baselines import bgnbd_from_dict, bgnbd_to_onnx

    params = json.loads(native_artifact(baseline_model, registry, artifacts))
    # The horizon the BG/NBD score covers is the training set's, as the registry version records it.
    horizon = registry.get(baseline_model.model_version).horizon_days
    if horizon is None:
        raise dg.Failure(f"{baseline_model.model_version}: the registry records no label horizon for it; retrain (training_job)")
    graph = bgnbd_to_onnx(bgnbd_from_dict(params), list(baseline_model.features), float(horizon))
    return _store(context, baseline_model, graph, artifacts, registry, tracker)


@dg.asset(group_name="export", kinds={"onnx"}, owners=["team:ml-platform"])
def stacked_onnx(
    context: dg.AssetExecutionContext,
    stacked_model: ModelRecord,
    artifacts: ArtifactStore,
    registry: ModelRegistry,
    tracker: ExperimentTracker,
) -> ModelRecord:
    """The stacked model as one ONNX graph: LightGBM's graph and BG/NBD's side by side on the same input, their logits
    combined in double by the fitted weights, the same outputs as every model (`lib/stacking.py`).

    Checked like the others: `onnx.checker`, a fresh onnxruntime session, and
    a parity check against the native stack (LightGBM and the BG/NBD formula
    in their own code).
    """
    from lib.stacking import packed_to_onnx

    return _store(context, stacked_model, packed_to_onnx(native_artifact(stacked_model, registry, artifacts)), artifacts, registry, tracker)


def native_scores(
    kind: str, data: bytes, architecture: dict[str, Any] | None, x: Any, features: tuple[str, ...] = (), horizon_days: int | None = None
) -> Any:
    """P(churn) from the model in its own framework (the reference the ONNX graph must match)."""
    if kind == "lightgbm":
        from lib.training import load_booster

        return load_booster(data.decode()).predict(x)
    if kind == "torch":
        from lib.torch_net import load_net, predict_proba

        return predict_proba(load_net(data, architecture or {}), x)
    if kind == "bgnbd":
        import json

        from lib.baselines import bgnbd_from_dict, bgnbd_matrix_scores

        if horizon_days is None:
            raise ValueError("a BG/NBD score needs the label horizon its model version records")
        return bgnbd_matrix_scores(bgnbd_from_dict(json.loads(data)), features, float(horizon_days), x)
    if kind == "stack":
        from lib.stacking import native_stack_scores

        return native_stack_scores(data, x)
    raise ValueError(f"unknown model kind {kind!r}")


def _parity_check(
    context: dg.AssetCheckExecutionContext,
    record: ModelRecord,
    training_set: pl.DataFrame,
    artifacts: ArtifactStore,
    registry: ModelRegistry,
) -> dg.AssetCheckResult:
    from lib.export import golden_features, onnx_churn_probability, onnx_session, parity, threshold_probe_rows

    kind = record.kind
    tolerance = PARITY_TOLERANCE[kind]
    features = record.features
    # Both sides come from the registry version, never from the lake record alone: a swapped file or record is
    # caught (sha256 mismatch) instead of being checked against itself.
    version = registry.get(record.model_version)
    if version.onnx_sha256 != record.artifact.sha256 or record.source is None:
        raise dg.Failure(f"{record.model_version}: the ONNX record does not match the registry's ONNX artifact; re-export the model")
    native_bytes = native_artifact(record.model_copy(update={"artifact": record.source}), registry, artifacts)
    session = onnx_session(artifacts.get(version.onnx_uri, version.onnx_sha256))
    golden = golden_features(features)
    sets = {
        "golden": golden,
        "validation": feature_matrix(training_set.filter(pl.col("split").is_in(["valid", "test"])), features),
    }
    if kind == "lightgbm":
        sets["threshold_edges"] = threshold_probe_rows(native_bytes.decode(), golden[-1])
    reports = {
        name: parity(
            native_scores(kind, native_bytes, record.architecture, x, features, version.horizon_days), onnx_churn_probability(session, x)
        )
        for name, x in sets.items()
    }
    worst = max(r.max_abs_diff for r in reports.values())
    passed = worst <= tolerance
    summary = {name: r.as_dict() for name, r in reports.items()}
    registry.record_parity(record.model_version, version.onnx_sha256, passed, {"tolerance": tolerance, **summary}, context.run.run_id)
    table = pl.DataFrame([{"set": n, **r.as_dict()} for n, r in reports.items()])
    return dg.AssetCheckResult(
        passed=passed,
        description=(
            f"max |onnxruntime - native {kind}| = {worst:.2e} over {sum(r.rows for r in reports.values()):,} rows; tolerance {tolerance:.0e}"
            + ("" if passed else ": the ONNX artifact does not reproduce the model and cannot become champion")
        ),
        metadata={
            "model_version": record.model_version,
            "max_abs_diff": worst,
            "tolerance": tolerance,
            **{f"{n}_max_abs_diff": r.max_abs_diff for n, r in reports.items()},
            **{f"{n}_p999_abs_diff": r.p999_abs_diff for n, r in reports.items()},
            **{f"{n}_rows": r.rows for n, r in reports.items()},
            "by_set": dg.MetadataValue.md(markdown_table(table)),
        },
    )


def parity_check_for(asset: dg.AssetsDefinition, description: str) -> dg.AssetChecksDefinition:
    """The blocking parity check of one exported model: `<asset>_parity`, the same for every kind."""

    # `record` is the checked asset's own value (the one parameter not in additional_ins).
    return dg.asset_check(
        asset=asset,
        name=f"{asset.key.path[-1]}_parity",
        blocking=True,
        additional_ins={"training_set": dg.AssetIn("training_set")},
        description=description,
    )(_parity_check)


lgbm_onnx_parity = parity_check_for(
    lgbm_onnx, "onnxruntime reproduces native LightGBM on the fixed golden set, every held-out row and every split threshold."
)
torch_onnx_parity = parity_check_for(
    torch_onnx, "onnxruntime reproduces the native PyTorch network on the fixed golden set and every held-out row."
)
bgnbd_onnx_parity = parity_check_for(
    bgnbd_onnx, "onnxruntime reproduces the BG/NBD formula on the fixed golden set and every held-out row."
)
stacked_onnx_parity = parity_check_for(
    stacked_onnx,
    "onnxruntime reproduces the native stack (LightGBM and the BG/NBD formula) on the fixed golden set and every held-out row.",
)
