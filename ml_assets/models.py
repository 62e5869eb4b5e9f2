"""Loading a registered model for scoring: the one way every consumer does it."""

from __future__ import annotations

from typing import Any

import dagster as dg

from resources import ArtifactStore, ModelRegistry
from resources.registry import ModelVersion


def load_onnx(version: ModelVersion, artifacts: ArtifactStore) -> Any:
    """An onnxruntime session over a version's ONNX artifact, verified against the sha256 the registry holds
    before onnxruntime parses a byte (a tampered or partial file raises ArtifactIntegrityError)."""
    from lib.export import onnx_session

    if not version.onnx_uri or not version.onnx_sha256:
        raise ValueError(f"model version {version.version} has no ONNX artifact in the registry; export it first")
    return onnx_session(artifacts.get(version.onnx_uri, version.onnx_sha256))


def champion_session(registry: ModelRegistry, artifacts: ArtifactStore, who: str) -> tuple[ModelVersion, Any]:
    """The current champion and its verified ONNX session; a run that needs one fails clearly when there is none."""
    champion = registry.champion()
    if champion is None:
        raise dg.Failure(f"{who}: the model registry has no champion yet; materialize training_job (it ends with champion_model) first")
    return champion, load_onnx(champion, artifacts)
