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

from lib.explain import ExplainSpec
from resources import ArtifactStore, ModelRegistry
from resources.registry import ModelVersion


@dataclass(frozen=True)
class Champion:
    model: ModelVersion
    session: Any = field(repr=False)
    loaded_at: float
    # What explains its scores (`lib.explain`): verified bytes and the reference customer; None when not asked for.
    explainer: ExplainSpec | None = field(default=None, repr=False)

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


def load_champion(version: ModelVersion, artifacts: ArtifactStore, explain: bool = False) -> Champion:
    """The version's verified ONNX session and, with ``explain``, what explains its scores."""
    spec = explain_spec(version, artifacts) if explain else None
    if spec is not None:
        from lib.explain import prepare

        prepare(spec)  # the model the explanations need, loaded now rather than on the first request
    return Champion(version, load_onnx(version, artifacts), time.time(), spec)


def explain_spec(version: ModelVersion, artifacts: ArtifactStore) -> ExplainSpec:
    """The version's explanation inputs, read through the registry's sha256s: its native artifact (the network: its ONNX
    graph, which it is explained through) and the median customer of its training reference sample."""
    import io

    import polars as pl

    from lib.explain import reference_row

    if version.kind == "torch":
        uri, sha = version.onnx_uri, version.onnx_sha256
    else:
        uri, sha = version.artifact_uri, version.artifact_sha256
    if not uri or not sha:
        raise ValueError(f"model version {version.version} has no artifact to explain its scores with")
    features = tuple(version.features)
    reference = (
        pl.read_parquet(io.BytesIO(artifacts.get(version.reference_uri, version.reference_sha256)))
        if version.reference_uri and version.reference_sha256
        else pl.DataFrame()
    )
    return ExplainSpec(
        version.kind, version.version, features, artifacts.get(uri, sha), sha, reference_row(reference, features), version.horizon_days
    )


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


def current_champion(registry: ModelRegistry, artifacts: ArtifactStore, who: str, explain: bool = False) -> Champion:
    """The current champion, checked against the chain and loaded; a run that needs one fails clearly when there is none."""
    version = trusted_champion(registry, who)
    if version is None:
        raise dg.Failure(f"{who}: the model registry has no champion yet; materialize training_job (it ends with champion_model) first")
    return load_champion(version, artifacts, explain)
