"""The champion, loaded for scoring: the one shape batch scoring, drift and the online service use.

`Champion` is the registry's version (the authority: artifact locations,
sha256s, features, label horizon, figures) plus its ONNX session, verified
against the registered sha256 before onnxruntime parses a byte.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

import dagster as dg

from resources import ArtifactStore, ModelRegistry
from resources.registry import ModelVersion


@dataclass(frozen=True)
class Champion:
    model: ModelVersion
    session: Any = field(repr=False)
    loaded_at: float

    @property
    def version(self) -> str:
        return self.model.version

    @property
    def kind(self) -> str:
        return self.model.kind

    @property
    def features(self) -> tuple[str, ...]:
        return tuple(self.model.features)

    @property
    def horizon_days(self) -> int | None:
        """What the scores predict: no purchase in this many days (the model's own, from its registry version)."""
        return self.model.horizon_days


def load_onnx(version: ModelVersion, artifacts: ArtifactStore) -> Any:
    """An onnxruntime session over a version's ONNX artifact, verified against the sha256 the registry holds
    before onnxruntime parses a byte (a tampered or partial file raises ArtifactIntegrityError)."""
    from lib.export import onnx_session

    if not version.onnx_uri or not version.onnx_sha256:
        raise ValueError(f"model version {version.version} has no ONNX artifact in the registry; export it first")
    return onnx_session(artifacts.get(version.onnx_uri, version.onnx_sha256))


def load_champion(version: ModelVersion, artifacts: ArtifactStore) -> Champion:
    return Champion(version, load_onnx(version, artifacts), time.time())


def trusted_champion(registry: ModelRegistry, who: str) -> ModelVersion | None:
    """The registry's champion as far as its hash chain proves it; a run fails (and the failure sensor alerts) when the
    tables disagree with the chain: a champion switched or a digest swapped behind the chain's back is never scored."""
    from resources.registry import ChainMismatch

    try:
        return registry.trusted_champion()
    except ChainMismatch as exc:
        raise dg.Failure(f"{who}: {exc}", metadata={"chain_problems": "\n".join(exc.problems)}) from None


def trusted_challengers(registry: ModelRegistry, who: str) -> list[ModelVersion]:
    from resources.registry import ChainMismatch

    try:
        return registry.trusted_challengers()
    except ChainMismatch as exc:
        raise dg.Failure(f"{who}: a challenger: {exc}", metadata={"chain_problems": "\n".join(exc.problems)}) from None


def current_champion(registry: ModelRegistry, artifacts: ArtifactStore, who: str) -> Champion:
    """The current champion, checked against the chain and loaded; a run that needs one fails clearly when there is none."""
    version = trusted_champion(registry, who)
    if version is None:
        raise dg.Failure(f"{who}: the model registry has no champion yet; materialize training_job (it ends with champion_model) first")
    return load_champion(version, artifacts)
